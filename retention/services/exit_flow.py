"""The way out: the exit survey, continuing to the downgrade or cancellation review after declining the offers,
linking the survey to the plan change it led to, keeping a subscription that was going to end, and resuming a
paused one early.

The leaving itself is the ordinary quote → accept path (billing.services.quotes / plan_changes): a cancellation is
a quote with `cancel=True`, at period end by the change rules; nothing is deleted.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from billing.errors import ChangeConflict, ChangeRefused
from billing.models import Direction, PlanChange, Price, Quote, Subscription
from billing.services.audit import audit_event_record, subscription_snapshot
from entitlements.services import entitlements_sync
from retention.models import ExitReason, ExitSurvey

DETAILS_MAX = 2000


def exit_survey_start(*, subscription: Subscription, flow: str, reason_code: str, details: str,
                      actor: AbstractBaseUser | None, now: datetime, target_price: Price | None = None,
                      target_quantity: int | None = None) -> ExitSurvey:
    """Record why the customer wants to downgrade or cancel (audited). The reason must be active; its details are
    required when it asks for them. A downgrade names the lower plan's price chosen (same currency) and seats."""
    if flow not in ExitSurvey.Flow.values:
        raise ChangeRefused("invalid_flow", _("Choose whether you want to downgrade or cancel."))
    reason = ExitReason.objects.filter(code=reason_code, is_active=True).first() if reason_code else None
    if reason is None:
        raise ChangeRefused("invalid_reason", _("Choose one of the reasons listed."))
    details = (details or "").strip()
    if reason.asks_details and not details:
        raise ChangeRefused("details_required", _("Tell us a little more about “%(reason)s”.")
                            % {"reason": reason.label})
    if len(details) > DETAILS_MAX:
        raise ChangeRefused("details_too_long", _("Please keep the details under %(max)s characters.")
                            % {"max": DETAILS_MAX})
    if subscription.status == Subscription.Status.CANCELLED:
        raise ChangeRefused("subscription_not_active", _("This subscription has already ended."))
    scheduled = PlanChange.objects.filter(subscription=subscription,
                                          status__in=(PlanChange.Status.SCHEDULED, *PlanChange.IN_FLIGHT)).first()
    if scheduled is not None:
        raise ChangeConflict("change_scheduled",
                             _("A change of this subscription is already scheduled; keep or withdraw it on the "
                               "overview first."), plan_change=scheduled.pk)
    if flow == ExitSurvey.Flow.DOWNGRADE:
        if target_price is None:
            raise ChangeRefused("target_required", _("Choose the plan you want to move to."))
        if target_price.currency != subscription.price.currency or \
                target_price.plan.product_id != subscription.product_id or \
                target_price.plan.rank >= subscription.price.plan.rank:
            raise ChangeRefused("target_not_lower", _("%(plan)s is not a lower plan of your product in your "
                                                      "currency.") % {"plan": target_price.plan})
        if target_quantity is None:
            target_quantity = 1 if target_price.pricing == Price.Pricing.FLAT else subscription.quantity
    else:
        target_price, target_quantity = None, None
    with transaction.atomic():
        survey = ExitSurvey.objects.create(
            customer_id=subscription.customer_id, subscription=subscription, flow=flow, reason=reason,
            details=details, target_price=target_price, target_quantity=target_quantity,
            created_by=actor if actor is not None and actor.is_authenticated else None, created_at=now)
        audit_event_record(actor=actor, action="retention.exit_survey", target=survey, now=now,
                           customer=subscription.customer, reason_code=reason.code,
                           after={"flow": flow, "reason": reason.code, "details": details,
                                  "target_price_id": target_price.pk if target_price else None},
                           message=f"{survey.get_flow_display()}: {reason.label}")
    return survey


def exit_survey_continue(*, survey: ExitSurvey, actor: AbstractBaseUser | None, now: datetime) -> Quote:
    """"No thanks, continue": decline the offers still shown and quote the downgrade or cancellation the survey
    asked for, for the existing review page (one more click there confirms it). ChangeRefused when the change
    rules, seats or a contract do not allow it."""
    from billing.services.quotes import quote_create
    from retention.services.offers import offers_decline

    if survey.plan_change_id is not None:
        raise ChangeConflict("already_left", _("Your downgrade or cancellation is already under way."),
                             plan_change=survey.plan_change_id)
    subscription = Subscription.objects.select_related("customer", "price__plan__product").get(
        pk=survey.subscription_id)
    previous = Quote.objects.filter(pk=survey.quote_id).first() if survey.quote_id else None
    if previous is not None and previous.status == Quote.Status.OPEN and now < previous.expires_at \
            and previous.subscription_version == subscription.version:
        return previous  # a double click or a second visit: the same review, so the confirmed quote is linked
    # The quote first: when the rules refuse the change, the offers stay open (nothing half-done).
    if survey.flow == ExitSurvey.Flow.CANCEL:
        quote = quote_create(subscription=subscription, to_price=None, quantity=0, now=now, actor=actor, cancel=True)
    else:
        quote = quote_create(subscription=subscription, to_price=survey.target_price,
                             quantity=survey.target_quantity, now=now, actor=actor)
    with transaction.atomic():
        ExitSurvey.objects.filter(pk=survey.pk).update(quote=quote)
        offers_decline(survey=survey, actor=actor, now=now)
    survey.quote = quote
    return quote


def exit_survey_for_quote(*, quote: Quote) -> ExitSurvey | None:
    """The exit survey a downgrade or cancellation quote (or an accepted cross-grade offer's quote) came from."""
    if quote.direction not in (Direction.CANCEL, Direction.DOWNGRADE, Direction.CROSSGRADE):
        return None
    return (ExitSurvey.objects.select_related("reason")
            .filter(Q(quote_id=quote.pk) | Q(presentations__quote_id=quote.pk), plan_change__isnull=True)
            .order_by("-pk").first())


def exit_survey_link(*, survey: ExitSurvey, plan_change: PlanChange) -> None:
    """Store the survey on the change it led to (in the transaction that records the change)."""
    ExitSurvey.objects.filter(pk=survey.pk, plan_change__isnull=True).update(plan_change=plan_change)


def subscription_reactivate(*, subscription: Subscription, actor: AbstractBaseUser | None,
                            now: datetime) -> PlanChange:
    """"Keep my subscription": withdraw the scheduled cancellation (or downgrade). Nothing was removed, so
    withdrawing it restores everything; audited as `plan_change.cancelled` with reason `reactivated`."""
    from billing.services.plan_changes import plan_change_cancel

    change = (PlanChange.objects.filter(subscription=subscription, status=PlanChange.Status.SCHEDULED)
              .order_by("effective_at", "pk").first())
    if change is None:
        raise ChangeConflict("nothing_scheduled", _("Nothing is scheduled for this subscription; it simply goes on."))
    return plan_change_cancel(plan_change=change, actor=actor, now=now, reason_code="reactivated")


def subscription_resume(*, subscription: Subscription, actor: AbstractBaseUser | None, now: datetime) -> Subscription:
    """End a pause early. Before it starts: it simply never happens. During it: billing starts again now, a new
    period begins today (the billing anchor moves to now) and is invoiced as a renewal would be."""
    from billing.selectors_context import ReadContext
    from billing.services.plan_changes import _lock
    from billing.services.renewals import _renew_locked

    with transaction.atomic():
        customer, subscription, _none = _lock(subscription.customer_id, subscription.pk)
        if subscription.paused_until is None or now >= subscription.paused_until:
            raise ChangeConflict("not_paused", _("This subscription is not paused."))
        if PlanChange.objects.filter(subscription=subscription, status=PlanChange.Status.SCHEDULED).exists():
            raise ChangeConflict("change_scheduled", _("A change of this subscription is scheduled; keep or withdraw "
                                                       "it first."))
        before = subscription_snapshot(subscription)
        if subscription.pause_starts_at is None or now < subscription.pause_starts_at:
            subscription.pause_starts_at = subscription.paused_until = None
            subscription.version += 1
            subscription.save()
            message = "Pause withdrawn before it started"
        else:
            # The paused period ends now; the renewal step enters the next one and bills it.
            subscription.paused_until = now
            subscription.current_period_end = max(now, subscription.current_period_start)
            if subscription.current_period_end == subscription.current_period_start:
                raise ChangeConflict("resume_later", _("The pause has only just begun; try again in a moment."))
            subscription.save()
            _renew_locked(customer=customer, subscription=subscription, now=now, ctx=ReadContext())
            message = "Resumed early: billing starts again now"
        entitlements_sync(customer=customer)  # no longer frozen (entitlements.selectors)
        audit_event_record(actor=actor, action="subscription.resumed", target=subscription, now=now,
                           customer=customer, reason_code="resumed_early", before=before,
                           after=subscription_snapshot(subscription), message=message)
    return subscription
