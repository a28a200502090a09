"""Portal pages for trials of a higher tier: the confirmation page (GET) and its start (POST), the opt-in toggle and
"End trial now" on the overview. Plain forms work without JavaScript; with htmx the overview's trial box swaps itself (hx-select).
Only owners and billing admins start or change a trial (403); another customer's trial is not found (404)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from billing.errors import BillingError
from billing.models import Plan, Subscription
from billing.selectors import payment_method_default
from portal.selectors import _gains_and_losses
from portal.views import _billing_membership, _page, _subscription, login_required_post
from retention.models import Trial
from retention.selectors.trials import trial_get
from retention.services.trials import trial_end_early, trial_set_opt_in, trial_start, trial_terms


def _plan(subscription: Subscription, plan_id: int) -> Plan:
    plan = Plan.objects.select_related("product").filter(pk=plan_id, product_id=subscription.product_id).first()
    if plan is None:
        raise Http404(_("No such plan."))
    return plan


@login_required
@require_http_methods(["GET", "POST"])
def trial_confirm(request: HttpRequest, customer_id: int, subscription_id: int, plan_id: int) -> HttpResponse:
    """GET: the terms (end date, what happens at the end, the opt-in with the exact conversion price). POST: start."""
    membership = _billing_membership(request, customer_id)
    subscription = _subscription(membership, subscription_id)
    plan = _plan(subscription, plan_id)
    now = timezone.now()
    days = settings.TRIAL_DEFAULT_DAYS
    if request.method == "POST":
        opt_in = request.POST.get("convert_opt_in") == "1"
        try:
            trial = trial_start(subscription=subscription, plan=plan, days=days, source=Trial.Source.PLANS_PAGE,
                                actor=request.user, now=now, convert_opt_in=opt_in)
        except BillingError as error:
            running = Trial.objects.filter(subscription=subscription, status=Trial.Status.ACTIVE, plan=plan).first()
            if error.code == "trial_active" and running is not None:  # a double submit: the first one started it
                return redirect("portal:overview", customer_id=customer_id)
            messages.error(request, error.detail)
            return redirect("portal:plans", customer_id=customer_id, subscription_id=subscription_id)
        messages.success(request, _("Your trial of %(plan)s has started: everything in %(plan)s is yours to use until "
                                    "%(date)s") % {"plan": plan.name,
                                                    "date": date_format(timezone.localtime(trial.ends_at),
                                                                        "DATETIME_FORMAT")})
        return redirect("portal:overview", customer_id=customer_id)
    try:
        terms = trial_terms(subscription=subscription, plan=plan, days=days, now=now)
    except BillingError as error:
        messages.error(request, error.detail)
        return redirect("portal:plans", customer_id=customer_id, subscription_id=subscription_id)
    current = {pf.feature_id: pf for pf in subscription.price.plan.plan_features.select_related("feature")}
    gains, _losses = _gains_and_losses(current, plan)
    return _page(request, membership, "portal/trial_confirm.html", subscription=subscription, terms=terms,
                 days=days, gains=gains, payment_method=payment_method_default(customer=membership.customer),
                 nav="plans")


@login_required_post
@require_POST
def trial_opt_in(request: HttpRequest, customer_id: int, trial_id: int) -> HttpResponse:
    membership = _billing_membership(request, customer_id)
    trial = trial_get(customer=membership.customer, trial_id=trial_id)
    if trial is None:
        raise Http404(_("No such trial."))
    opt_in = request.POST.get("convert_opt_in") == "1"
    try:
        trial_set_opt_in(trial=trial, convert_opt_in=opt_in, actor=request.user, now=timezone.now())
        messages.success(request, _("Saved: at the end of the trial you move to %(plan)s.") % {"plan": trial.plan.name}
                         if opt_in else _("Saved: at the end of the trial you go back to %(plan)s, nothing charged.")
                         % {"plan": trial.subscription.price.plan.name})
    except BillingError as error:
        messages.error(request, error.detail)
    return redirect("portal:overview", customer_id=customer_id)


@login_required_post
@require_POST
def trial_end_now(request: HttpRequest, customer_id: int, trial_id: int) -> HttpResponse:
    membership = _billing_membership(request, customer_id)
    trial = trial_get(customer=membership.customer, trial_id=trial_id)
    if trial is None:
        raise Http404(_("No such trial."))
    try:
        trial_end_early(trial=trial, actor=request.user, now=timezone.now())
        messages.success(request, _("Your trial has ended. You are on %(plan)s; nothing was charged and nothing "
                                    "deleted.") % {"plan": trial.subscription.price.plan.name})
    except BillingError as error:
        messages.error(request, error.detail)
    return redirect("portal:overview", customer_id=customer_id)
