"""The customer portal: server-rendered pages, htmx for the live parts, every form a plain POST too.

Views parse input, call one selector or service, and render. A user reaches only customers they are
a member of (404 otherwise); only owners and billing admins change plans (403 otherwise).
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from billing.errors import BillingError
from billing.models import IdempotencyKey, Invoice, Membership, Plan, PlanChange, Price, Quote, Subscription
from billing.payments import GatewayUnavailable
from billing.selectors import payment_method_default, price_get
from billing.selectors_approvals import approval_request_for_change, quote_needs_approval
from billing.services.collection import invoice_collect, payment_attempt_refresh
from billing.services.idempotency import (
    idempotency_begin,
    idempotency_finish,
    idempotency_release,
    request_fingerprint,
)
from billing.services.invoice_pdfs import invoice_pdf_render
from billing.services.notifications import absolute_url
from billing.services.plan_changes import plan_change_cancel, plan_change_refresh_payment, quote_accept
from billing.services.quotes import pricing_context, quote_create
from portal.forms import ConfirmForm, PlanChoiceForm, RateLimitedLoginForm, SeatsForm
from portal.selectors import (
    BILLING_ROLES,
    billing_contacts,
    billing_history,
    invoice_list,
    invoices_unpaid,
    membership_for,
    memberships_of,
    offer_price,
    overview_get,
    plans_page_get,
    unlocked_features,
)
from retention.selectors.trials import trial_offers, trials_running

DOUBLE_SUBMIT_WAIT_SECONDS = 3
SEATS_KEY = re.compile(r"seats_[0-9]{1,18}", re.ASCII)


# --- access ------------------------------------------------------------------------


def login_required_post(view):
    """For POST-only views: a signed-out browser (expired session) signs in and comes back to the
    account's overview, not to a URL it would fetch with GET (405)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, customer_id: int, *args, **kwargs):
        if not request.user.is_authenticated:
            back = reverse("portal:overview", args=[customer_id])
            return redirect(f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': back})}")
        return view(request, customer_id, *args, **kwargs)

    return wrapper


def _membership(request: HttpRequest, customer_id: int) -> Membership:
    membership = membership_for(user=request.user, customer_id=customer_id)
    if membership is None:
        raise Http404(_("No such account."))
    timezone.activate(ZoneInfo(membership.customer.timezone))  # dates as the customer's billing calendar has them
    return membership


def _billing_membership(request: HttpRequest, customer_id: int) -> Membership:
    membership = _membership(request, customer_id)
    if membership.role not in BILLING_ROLES:
        raise PermissionDenied(_("Only the account's owners and billing admins can change plans."))
    return membership


def _subscription(membership: Membership, subscription_id: int) -> Subscription:
    subscription = (Subscription.objects.select_related("customer", "price__plan__product")
                    .filter(pk=subscription_id, customer=membership.customer).first())
    if subscription is None:
        raise Http404(_("No such subscription."))
    return subscription


def _page(request: HttpRequest, membership: Membership, template: str, **context) -> HttpResponse:
    context.setdefault("status", 200)
    status = context.pop("status")
    return render(request, template, {
        "membership": membership, "customer": membership.customer,
        "can_change": membership.role in BILLING_ROLES,
        "billing_contacts": billing_contacts(customer=membership.customer),
        "memberships": memberships_of(user=request.user), **context,
    }, status=status)


# --- sign in, home ------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    authentication_form = RateLimitedLoginForm
    redirect_authenticated_user = True


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return render(request, "portal/home.html")
    memberships = list(memberships_of(user=request.user))
    if len(memberships) == 1:
        return redirect("portal:overview", customer_id=memberships[0].customer_id)
    return render(request, "portal/choose_account.html", {"memberships": memberships})


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


# --- overview -----------------------------------------------------------------------


@login_required
@require_GET
def overview(request: HttpRequest, customer_id: int) -> HttpResponse:
    from retention.selectors.renewal_offers import renewal_offers_for_customer

    membership = _membership(request, customer_id)
    return _page(request, membership, "portal/overview.html", overview=overview_get(customer=membership.customer),
                 payment_method=payment_method_default(customer=membership.customer),
                 open_invoices=invoices_unpaid(customer=membership.customer), nav="overview",
                 renewal_offers=renewal_offers_for_customer(customer_id=customer_id, now=timezone.now()),
                 trials=trials_running(customer=membership.customer, now=timezone.now()))


# --- plans and live prices --------------------------------------------------------------


def _interval(request: HttpRequest, subscription: Subscription) -> str:
    interval = request.GET.get("interval") or subscription.price.interval
    return interval if interval in ("month", "quarter", "year") else subscription.price.interval


def _seats_from_query(request: HttpRequest) -> tuple[dict[int, int], dict[int, str]]:
    """seats_<plan id>=N from the plans page's no-JavaScript forms: the counts, and what could not be read."""
    seats, errors = {}, {}
    for key, value in request.GET.items():
        if not SEATS_KEY.fullmatch(key):
            continue
        form = SeatsForm({"seats": value})
        if form.is_valid() and form.cleaned_data["seats"]:
            seats[int(key[6:])] = form.cleaned_data["seats"]
        else:
            errors[int(key[6:])] = " ".join(str(e) for e in form.errors.get("seats", [])) or \
                _("Enter the number of seats as a whole number.")
    return seats, errors


@login_required
@require_GET
@vary_on_headers("HX-Request", "HX-Target")
def plans(request: HttpRequest, customer_id: int, subscription_id: int) -> HttpResponse:
    membership = _membership(request, customer_id)
    subscription = _subscription(membership, subscription_id)
    if subscription.status == Subscription.Status.CANCELLED:
        messages.info(request, _("This subscription has ended."))
        return redirect("portal:overview", customer_id=customer_id)
    seats, seat_errors = _seats_from_query(request)
    page = plans_page_get(subscription=subscription, interval=_interval(request, subscription), seats=seats,
                          seat_errors=seat_errors, now=timezone.now())
    template = "portal/plans.html#plans-grid" if request.htmx and request.htmx.target == "plans-grid" else \
        "portal/plans.html"
    trials = trial_offers(subscription=subscription, now=timezone.now()) if membership.role in BILLING_ROLES else {}
    return _page(request, membership, template, page=page, nav="plans", trials=trials,
                 trial_days=settings.TRIAL_DEFAULT_DAYS)


@login_required
@require_GET
def plan_price(request: HttpRequest, customer_id: int, subscription_id: int, plan_id: int) -> HttpResponse:
    """The live price of one plan for a seat count and interval: the htmx partial (a full page without htmx)."""
    membership = _membership(request, customer_id)
    subscription = _subscription(membership, subscription_id)
    form = SeatsForm(request.GET)
    if not request.htmx:
        query = request.GET.copy()
        query[f"seats_{plan_id}"] = request.GET.get("seats", "")
        query.pop("seats", None)
        return redirect(reverse("portal:plans", args=[customer_id, subscription_id]) + "?" + query.urlencode())
    interval = form.data.get("interval") if form.data.get("interval") in ("month", "quarter", "year") \
        else subscription.price.interval
    error = ""
    seats = subscription.quantity
    if form.is_valid() and form.cleaned_data["seats"]:
        seats = form.cleaned_data["seats"]
    elif not form.is_valid():
        error = " ".join(str(e) for errors in form.errors.values() for e in errors)
    price = price_get(plan_id=plan_id, currency=subscription.price.currency, interval=interval)
    if price is not None:
        plan = price.plan
    else:  # not sold like this: the plan itself, to say so
        plan = Plan.objects.filter(pk=plan_id, is_active=True).select_related("product").first()
        if plan is None:
            raise Http404(_("No such plan."))
    if price is not None and price.pricing == Price.Pricing.FLAT:
        seats = 1
    now = timezone.now()
    offer = offer_price(subscription=subscription, plan=plan, price=price, seats=seats, now=now,
                        context=pricing_context(subscription=subscription, now=now))
    return render(request, "portal/plans.html#plan-price", {
        "offer": offer, "customer": membership.customer, "subscription": subscription, "interval": interval,
        "can_change": membership.role in BILLING_ROLES, "seat_error": error,
    })


# --- review and confirm ------------------------------------------------------------------


@login_required_post
@require_POST
def review_create(request: HttpRequest, customer_id: int, subscription_id: int) -> HttpResponse:
    """Quote the chosen plan (or the cancellation) and show the review page."""
    membership = _billing_membership(request, customer_id)
    subscription = _subscription(membership, subscription_id)
    now = timezone.now()
    if request.POST.get("cancel") == "1":
        quote = _quote_or_message(request, subscription=subscription, to_price=None, quantity=0, now=now, cancel=True)
    else:
        form = PlanChoiceForm(request.POST)
        if not form.is_valid():
            for errors in form.errors.values():
                for error in errors:
                    messages.error(request, error)
            return redirect("portal:plans", customer_id=customer_id, subscription_id=subscription_id)
        data = form.cleaned_data
        price = price_get(plan_id=data["plan"], currency=subscription.price.currency, interval=data["interval"])
        if price is None:
            messages.error(request, _("That plan is not sold with this billing interval in your currency."))
            return redirect("portal:plans", customer_id=customer_id, subscription_id=subscription_id)
        quote = _quote_or_message(request, subscription=subscription, to_price=price, quantity=data["seats"], now=now)
    if quote is None:
        return redirect("portal:plans", customer_id=customer_id, subscription_id=subscription_id)
    return redirect("portal:review", customer_id=customer_id, quote_id=quote.pk)


def _quote_or_message(request: HttpRequest, **kwargs) -> Quote | None:
    try:
        return quote_create(actor=request.user, **kwargs)
    except BillingError as error:
        messages.error(request, error.detail)
        return None


def _quote_of(membership: Membership, quote_id: int) -> Quote:
    quote = (Quote.objects.select_related("subscription__price__plan__product", "from_price__plan__product",
                                          "to_price__plan__product")
             .filter(pk=quote_id, customer=membership.customer).first())
    if quote is None:
        raise Http404(_("No such quote."))
    return quote


@login_required
@require_GET
def review(request: HttpRequest, customer_id: int, quote_id: int) -> HttpResponse:
    membership = _membership(request, customer_id)
    quote = _quote_of(membership, quote_id)
    now = timezone.now()
    replaces = list(PlanChange.objects.filter(pk__in=quote.supersedes, status=PlanChange.Status.SCHEDULED)
                    .select_related("to_price__plan"))
    return _page(request, membership, "portal/review.html", quote=quote, expired=now >= quote.expires_at,
                 needs_approval=quote.status == Quote.Status.OPEN and quote_needs_approval(quote=quote),
                 replaces=replaces, quote_minutes=int(settings.QUOTE_TTL.total_seconds() // 60),
                 token=secrets.token_urlsafe(24), payment_method=payment_method_default(customer=membership.customer),
                 nav="plans")


@login_required_post
@require_POST
def confirm(request: HttpRequest, customer_id: int, quote_id: int) -> HttpResponse:
    """Accept the quote once: the form's one-time token is the idempotency key (double clicks, reloads)."""
    membership = _billing_membership(request, customer_id)
    quote = _quote_of(membership, quote_id)
    form = ConfirmForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("This form has expired; review the change again and confirm."))
        return redirect("portal:review", customer_id=customer_id, quote_id=quote_id)
    key = f"portal:{form.cleaned_data['token']}"
    now = timezone.now()
    try:
        stored = idempotency_begin(user=request.user, key=key, fingerprint=request_fingerprint("quote_accept", quote_id),
                                   now=now)
    except BillingError as error:
        if error.code != "idempotency_in_progress":
            messages.error(request, _("This form has expired; review the change again and confirm."))
            return redirect("portal:review", customer_id=customer_id, quote_id=quote_id)
        stored = _wait_for_first_submit(request, key)
    if stored is not None:
        return _after_confirm(request, customer_id, quote_id, stored.body)
    return_url = absolute_url(reverse("portal:complete-pending", args=[customer_id, quote_id]))
    try:
        change = quote_accept(quote=quote, actor=request.user, now=now, return_url=return_url)
        body = {"plan_change": change.pk}
    except BillingError as error:
        if error.status >= 500:
            idempotency_release(user=request.user, key=key)
        body = {"code": error.code, "detail": error.detail, "plan_change": error.extra.get("plan_change")}
    except Exception:
        idempotency_release(user=request.user, key=key)
        raise
    idempotency_finish(user=request.user, key=key, status=200, body=body, now=now)
    return _after_confirm(request, customer_id, quote_id, body)


def _wait_for_first_submit(request: HttpRequest, key: str):
    """A second click while the first is being charged: wait for the first one's outcome and show that."""
    from billing.services.idempotency import StoredResponse

    deadline = time.monotonic() + DOUBLE_SUBMIT_WAIT_SECONDS
    while time.monotonic() < deadline:
        record = IdempotencyKey.objects.filter(user=request.user, key=key).first()
        if record is None:  # the first submit gave up (provider unreachable): nothing is under way
            return StoredResponse(200, {"code": "retry", "detail": _("The payment provider did not answer; "
                                                                     "nothing was charged. Please confirm again.")})
        if record.completed_at is not None:
            return StoredResponse(record.response_status, record.response_body)
        time.sleep(0.2)
    return StoredResponse(200, {"code": "in_progress", "detail": _("Your payment is still being processed.")})


def _after_confirm(request: HttpRequest, customer_id: int, quote_id: int, body: dict) -> HttpResponse:
    if body.get("code") == "in_progress":
        change = PlanChange.objects.filter(quote_id=quote_id).order_by("-pk").first()
        if change is not None:
            return redirect("portal:change", customer_id=customer_id, change_id=change.pk)
    if body.get("plan_change"):
        if body.get("code") and body["code"] != "quote_already_accepted":
            messages.error(request, body["detail"])
        return redirect("portal:change", customer_id=customer_id, change_id=body["plan_change"])
    messages.error(request, body.get("detail") or _("The change could not be made."))
    if body.get("code") in ("quote_expired", "subscription_changed", "balance_changed"):
        quote = Quote.objects.get(pk=quote_id)
        return redirect("portal:plans", customer_id=customer_id, subscription_id=quote.subscription_id)
    return redirect("portal:review", customer_id=customer_id, quote_id=quote_id)


# --- the change: payment step, success, receipt ---------------------------------------------


def _change_of(membership: Membership, change_id: int) -> PlanChange:
    change = (PlanChange.objects.select_related("from_price__plan__product", "to_price__plan__product", "quote",
                                                "subscription")
              .filter(pk=change_id, customer=membership.customer).first())
    if change is None:
        raise Http404(_("No such change."))
    return change


@login_required
@require_GET
def change(request: HttpRequest, customer_id: int, change_id: int) -> HttpResponse:
    membership = _membership(request, customer_id)
    plan_change = _change_of(membership, change_id)
    entitlements, unlocked = ([], set())
    if plan_change.status == PlanChange.Status.APPLIED:
        entitlements, unlocked = unlocked_features(change=plan_change, customer=membership.customer)
    quote_usable = (plan_change.quote is not None and plan_change.quote.status == Quote.Status.OPEN
                    and timezone.now() < plan_change.quote.expires_at)
    return _page(request, membership, "portal/change.html", change=plan_change, entitlements=entitlements,
                 unlocked=unlocked, quote_usable=quote_usable, approval=approval_request_for_change(plan_change=plan_change),
                 nav="billing")


@login_required_post
@require_POST
def complete(request: HttpRequest, customer_id: int, change_id: int) -> HttpResponse:
    """"I have confirmed it": ask the gateway and finish the change."""
    membership = _billing_membership(request, customer_id)
    return _complete(request, customer_id, _change_of(membership, change_id))


def _complete(request: HttpRequest, customer_id: int, plan_change: PlanChange) -> HttpResponse:
    change_id = plan_change.pk
    try:
        plan_change_refresh_payment(plan_change=plan_change, now=timezone.now(), actor=request.user)
    except BillingError as error:
        messages.error(request, error.detail)
    return redirect("portal:change", customer_id=customer_id, change_id=change_id)


@login_required
@require_GET
def complete_pending(request: HttpRequest, customer_id: int, quote_id: int) -> HttpResponse:
    """The gateway's return address: the change waiting for this quote's payment."""
    membership = _billing_membership(request, customer_id)
    quote = _quote_of(membership, quote_id)
    plan_change = quote.plan_changes.order_by("-pk").first()
    if plan_change is None:
        raise Http404(_("No such change."))
    return _complete(request, customer_id, plan_change)


@login_required_post
@require_POST
def change_cancel(request: HttpRequest, customer_id: int, change_id: int) -> HttpResponse:
    membership = _billing_membership(request, customer_id)
    plan_change = _change_of(membership, change_id)
    try:
        # Withdrawing a scheduled cancellation is the customer keeping the subscription ("Keep my subscription").
        reason = "reactivated" if plan_change.direction == "cancel" else "customer_cancelled"
        plan_change_cancel(plan_change=plan_change, actor=request.user, now=timezone.now(), reason_code=reason)
        messages.success(request, _("The scheduled change is cancelled; nothing changes."))
    except BillingError as error:
        messages.error(request, error.detail)
    return redirect("portal:overview", customer_id=customer_id)


# --- billing history ------------------------------------------------


@login_required
@require_GET
def history(request: HttpRequest, customer_id: int) -> HttpResponse:
    membership = _membership(request, customer_id)
    customer = membership.customer
    return _page(request, membership, "portal/billing.html", changes=billing_history(customer=customer),
                 invoices=invoice_list(customer=customer), open_invoices=invoices_unpaid(customer=customer),
                 payment_method=payment_method_default(customer=customer), nav="billing")


def _open_invoice(membership: Membership, invoice_id: int) -> Invoice:
    invoice = Invoice.objects.filter(pk=invoice_id, customer=membership.customer, kind=Invoice.Kind.INVOICE) \
        .exclude(status=Invoice.Status.DRAFT).first()
    if invoice is None:
        raise Http404(_("No such document."))
    return invoice


def _after_payment(request: HttpRequest, customer_id: int, attempt) -> HttpResponse:
    from billing.templatetags.billing_format import failure_text

    if attempt is None:
        messages.info(request, _("This invoice has nothing left to pay."))
    elif attempt.status == "succeeded" and attempt.invoice.status == "paid" and attempt.invoice.payment_reference \
            and attempt.invoice.payment_reference != attempt.payment_reference:
        messages.info(request, _("This invoice was already paid; your payment is kept as credit on your account."))
    elif attempt.status == "succeeded":
        messages.success(request, _("Thank you: the invoice is paid."))
    elif attempt.status == "requires_action" and attempt.next_action_url:
        return redirect(attempt.next_action_url)
    elif attempt.status == "pending":
        messages.info(request, _("The payment is being processed; this page shows the result in a moment."))
    else:
        messages.error(request, failure_text(attempt))
    return redirect("portal:billing", customer_id=customer_id)


@login_required_post
@require_POST
def invoice_pay(request: HttpRequest, customer_id: int, invoice_id: int) -> HttpResponse:
    """The customer pays an open invoice now, with the saved method (3-D Secure on the gateway's page if asked)."""
    membership = _billing_membership(request, customer_id)
    invoice = _open_invoice(membership, invoice_id)
    return_url = absolute_url(reverse("portal:invoice-pay-return", args=[customer_id, invoice.pk]))
    try:
        attempt = invoice_collect(invoice_id=invoice.pk, now=timezone.now(), on_session=True, return_url=return_url,
                                  actor=request.user)
    except BillingError as error:
        messages.error(request, error.detail)
        return redirect("portal:billing", customer_id=customer_id)
    return _after_payment(request, customer_id, attempt)


@login_required
@require_GET
def invoice_pay_return(request: HttpRequest, customer_id: int, invoice_id: int) -> HttpResponse:
    """The gateway's return address after the customer authenticated an invoice payment."""
    membership = _billing_membership(request, customer_id)
    invoice = _open_invoice(membership, invoice_id)
    attempt = invoice.payment_attempts.filter(off_session=False).order_by("-number").first()
    if attempt is None:
        return redirect("portal:billing", customer_id=customer_id)
    try:  # a GET: it only asks where the payment the customer just authenticated stands, never charges
        attempt = payment_attempt_refresh(attempt=attempt, now=timezone.now(), actor=request.user)
    except GatewayUnavailable:
        messages.info(request, _("The payment is being processed; this page shows the result in a moment."))
        return redirect("portal:billing", customer_id=customer_id)
    if attempt.status == "requires_action":
        messages.info(request, _("The payment still waits for your confirmation; pay again to continue."))
        return redirect("portal:billing", customer_id=customer_id)
    return _after_payment(request, customer_id, attempt)


@login_required
@require_GET
def invoice_pdf(request: HttpRequest, customer_id: int, invoice_id: int) -> HttpResponse:
    """The customer's own invoice or credit note as PDF (rendered now if the worker has not yet)."""
    membership = _membership(request, customer_id)
    invoice = Invoice.objects.filter(pk=invoice_id, customer=membership.customer).exclude(status="draft").first()
    if invoice is None:
        raise Http404(_("No such document."))
    invoice = invoice_pdf_render(invoice_id=invoice.pk)
    return FileResponse(invoice.pdf.open("rb"), as_attachment=True, filename=f"{invoice.number}.pdf",
                        content_type="application/pdf")


# --- errors ------------------------------------------------------------------------------


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"code": "not_found", "detail": "There is nothing at this address."}, status=404)
    return render(request, "404.html", status=404)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"code": "permission_denied", "detail": str(exception or "")}, status=403)
    return render(request, "403.html", {"reason": str(exception or "")}, status=403)


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"code": "server_error", "detail": "Something went wrong on our side; nothing was "
                             "charged twice. Try again, or contact support."}, status=500)
    return render(request, "500.html", status=500)
