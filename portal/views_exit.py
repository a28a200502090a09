"""The way out, in the portal: 1. why (exit survey) → 2. offers that fit, each with its exact effect, and always
"No thanks, continue" → 3. the existing review page (confirm). Every step is a plain form; htmx is not needed.

Only owners and billing admins act (403 otherwise); members see who to ask. Other customers' ids answer 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from billing.errors import BillingError
from billing.models import Membership, Price, Subscription
from portal.views import _billing_membership, _membership, _page, _subscription, login_required_post
from retention.models import ExitSurvey, OfferPresentation
from retention.selectors.exit_flow import (
    exit_reason_list,
    exit_survey_get,
    offer_presentation_get,
    offer_presentation_list,
)
from retention.services.exit_flow import (
    exit_survey_continue,
    exit_survey_start,
    subscription_resume,
)
from retention.services.offers import offer_accept, offer_present


def _lower_prices(subscription: Subscription) -> list[Price]:
    """The lower plans of the product, sold in the subscription's currency and interval: the downgrade choices."""
    current = subscription.price
    return list(Price.objects.select_related("plan__product")
                .filter(plan__product_id=subscription.product_id, plan__rank__lt=current.plan.rank,
                        currency=current.currency, interval=current.interval, is_active=True, plan__is_active=True)
                .order_by("-plan__rank", "pk"))


def _survey_page(request: HttpRequest, membership: Membership, subscription: Subscription, *, status: int = 200,
                 error: str = "", values: dict | None = None) -> HttpResponse:
    values = values or {}
    flow = values.get("flow") or request.GET.get("flow") or ExitSurvey.Flow.CANCEL
    return _page(request, membership, "portal/cancel.html", subscription=subscription, reasons=exit_reason_list(),
                 lower_prices=_lower_prices(subscription), flow=flow, chosen_reason=values.get("reason", ""),
                 details=values.get("details", ""), chosen_price=values.get("price", ""), error=error,
                 status=status, nav="overview")


@login_required
@require_GET
def cancel_subscription(request: HttpRequest, customer_id: int, subscription_id: int) -> HttpResponse:
    """Step 1: why. Members see the page and who to ask, without the form."""
    membership = _membership(request, customer_id)
    subscription = _subscription(membership, subscription_id)
    if subscription.status == Subscription.Status.CANCELLED:
        messages.info(request, _("This subscription has ended."))
        return redirect("portal:overview", customer_id=customer_id)
    return _survey_page(request, membership, subscription)


@login_required_post
@require_POST
def exit_survey_create(request: HttpRequest, customer_id: int, subscription_id: int) -> HttpResponse:
    """Record the answer, then the offers that fit (step 2), or straight to the review when none fits."""
    membership = _billing_membership(request, customer_id)
    subscription = _subscription(membership, subscription_id)
    values = {key: request.POST.get(key, "") for key in ("flow", "reason", "details", "price")}
    target = None
    if values["flow"] == ExitSurvey.Flow.DOWNGRADE and values["price"]:
        target = next((p for p in _lower_prices(subscription) if str(p.pk) == values["price"]), None)
        if target is None:
            return _survey_page(request, membership, subscription, status=400, values=values,
                                error=_("Choose one of the lower plans listed."))
    now = timezone.now()
    try:
        survey = exit_survey_start(subscription=subscription, flow=values["flow"], reason_code=values["reason"],
                                   details=values["details"], actor=request.user, now=now, target_price=target)
    except BillingError as error:
        return _survey_page(request, membership, subscription, status=400, values=values, error=error.detail)
    if offer_present(survey=survey, now=now):
        return redirect("portal:exit-offers", customer_id=customer_id, survey_id=survey.pk)
    return _continue(request, customer_id, survey, now)


def _survey_of(membership: Membership, survey_id: int) -> ExitSurvey:
    survey = exit_survey_get(customer=membership.customer, survey_id=survey_id)
    if survey is None:
        raise Http404(_("No such survey."))
    return survey


@login_required
@require_GET
def exit_offers(request: HttpRequest, customer_id: int, survey_id: int) -> HttpResponse:
    """Step 2: the offers shown in this survey, each with its exact effect, and the way on without them."""
    membership = _billing_membership(request, customer_id)
    survey = _survey_of(membership, survey_id)
    presentations = offer_presentation_list(survey=survey)
    return _page(request, membership, "portal/exit_offers.html", survey=survey, subscription=survey.subscription,
                 presentations=presentations, nav="overview",
                 accepted=next((p for p in presentations if p.status == OfferPresentation.Status.ACCEPTED), None))


@login_required_post
@require_POST
def exit_offer_accept(request: HttpRequest, customer_id: int, presentation_id: int) -> HttpResponse:
    membership = _billing_membership(request, customer_id)
    presentation = offer_presentation_get(customer=membership.customer, presentation_id=presentation_id)
    if presentation is None:
        raise Http404(_("No such offer."))
    try:
        offer_accept(presentation=presentation, actor=request.user, now=timezone.now())
    except BillingError as error:
        messages.error(request, error.detail)
        return redirect("portal:exit-offers", customer_id=customer_id, survey_id=presentation.survey_id)
    messages.success(request, _("Done: %(offer)s. Thank you for staying with us.") % {"offer": presentation.offer.headline})
    return redirect("portal:overview", customer_id=customer_id)


@login_required_post
@require_POST
def exit_continue(request: HttpRequest, customer_id: int, survey_id: int) -> HttpResponse:
    """"No thanks, continue": decline the offers and go straight to the review (one click there confirms)."""
    membership = _billing_membership(request, customer_id)
    return _continue(request, customer_id, _survey_of(membership, survey_id), timezone.now())


def _continue(request: HttpRequest, customer_id: int, survey: ExitSurvey, now) -> HttpResponse:
    try:
        quote = exit_survey_continue(survey=survey, actor=request.user, now=now)
    except BillingError as error:
        messages.error(request, error.detail)
        return redirect("portal:overview", customer_id=customer_id)
    return redirect("portal:review", customer_id=customer_id, quote_id=quote.pk)


@login_required_post
@require_POST
def subscription_resume_now(request: HttpRequest, customer_id: int, subscription_id: int) -> HttpResponse:
    membership = _billing_membership(request, customer_id)
    subscription = _subscription(membership, subscription_id)
    try:
        subscription_resume(subscription=subscription, actor=request.user, now=timezone.now())
        messages.success(request, _("Your subscription is active again."))
    except BillingError as error:
        messages.error(request, error.detail)
    return redirect("portal:overview", customer_id=customer_id)
