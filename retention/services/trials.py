"""Trials of a higher tier: start, change the opt-in, end early, remind, and end (convert or fall back).

How a trial runs (docs/retention-trials.md): the subscription keeps its paid price, seats, period and billing; the
trial is a row that grants the tried plan's features (entitlements source `trial:<product>/<plan>`) from its start to
its end exactly. Nothing is charged for the trial. At the end, a customer who opted in is upgraded through the
ordinary flow: a quote priced at the trial's end (PRORATION.md amounts), accepted and charged off-session to the saved
payment method under the plan change's own idempotency key; everyone else falls back, which only means the tried
features go (nothing is deleted: usage above the paid plan's limits becomes read-only).

Lock order: customer → subscription (billing.services.plan_changes._lock) → trial. The gateway is called only outside
any transaction; a worker ending a trial claims it for a lease, so two workers never convert one trial together, and a
worker that dies mid-way leaves the claim to expire: the next one resumes the same plan change and the same payment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from billing.errors import BillingError, ChangeConflict, ChangeRefused
from billing.models import Customer, Plan, PlanChange, Price, Quote, Subscription
from billing.money import format_amount
from billing.selectors import price_get
from billing.services.audit import audit_event_record
from billing.services.notifications import absolute_url, notification_queue
from billing.services.plan_changes import (
    _lock,
    _plan_change_open,
    plan_change_cancel,
    plan_change_collect_payment,
)
from billing.services.quotes import quote_create, quote_price
from entitlements.services import entitlements_sync
from retention.models import OfferPresentation, Trial

logger = logging.getLogger(__name__)

CONVERSION_LEASE = timedelta(minutes=5)
REASON_CODE = "trial_conversion"
MAX_TRIAL_DAYS = 90
# Refusals at conversion time that go away by themselves: try again on the next sweep instead of falling back.
RETRYABLE = {"period_not_current", "change_in_progress", "payment_unavailable"}


# --- eligibility and terms -------------------------------------------------------------------------------


def _trial_price(*, subscription: Subscription, plan: Plan) -> Price | None:
    return price_get(plan_id=plan.pk, currency=subscription.price.currency, interval=subscription.price.interval)


def _trial_quantity(*, subscription: Subscription, price: Price) -> int:
    """The subscription's seats, within what the tried price allows (a flat price is one unit)."""
    if price.pricing == Price.Pricing.FLAT:
        return 1
    quantity = max(subscription.quantity, price.min_quantity)
    return min(quantity, price.max_quantity) if price.max_quantity is not None else quantity


def _refusal(*, subscription: Subscription, plan: Plan, now: datetime) -> ChangeRefused | None:
    """Why this subscription may not try this plan now, or None."""
    if subscription.status == Subscription.Status.PAST_DUE:
        return ChangeRefused("invoice_unpaid", _("A renewal invoice is unpaid; pay it on the billing page before "
                                                 "starting a trial."))
    if subscription.status != Subscription.Status.ACTIVE:
        return ChangeRefused("subscription_not_active", _("Only an active paid subscription can try a higher plan; "
                                                          "this one is %(status)s.")
                             % {"status": subscription.get_status_display().lower()})
    if subscription.is_paused_at(now):
        return ChangeRefused("subscription_paused", _("This subscription is paused until %(date)s; resume it on the "
                                                      "overview before starting a trial.")
                             % {"date": date_format(timezone.localtime(subscription.paused_until), "DATE_FORMAT")})
    current = subscription.price.plan
    if plan.product_id != subscription.product_id:
        return ChangeRefused("trial_other_product", _("A trial is of a higher plan of the same product; %(plan)s is "
                                                      "another product.") % {"plan": plan})
    if plan.rank <= current.rank:
        return ChangeRefused("trial_not_higher", _("Only higher plans than %(current)s can be tried; %(plan)s is not "
                                                   "higher.") % {"current": current.name, "plan": plan.name})
    price = _trial_price(subscription=subscription, plan=plan)
    if price is None or not plan.is_active:
        return ChangeRefused("price_unavailable", _("%(plan)s is not sold with your billing interval in your "
                                                    "currency, so it cannot be tried.") % {"plan": plan.name})
    active = Trial.objects.filter(subscription=subscription, status=Trial.Status.ACTIVE).select_related("plan").first()
    if active is not None:
        return ChangeRefused("trial_active", _("A trial of %(plan)s is already running; end it first.")
                             % {"plan": active.plan.name})
    window = timedelta(days=settings.TRIAL_REPEAT_WINDOW_DAYS)
    previous = (Trial.objects.filter(customer_id=subscription.customer_id, product_id=subscription.product_id,
                                     starts_at__gt=now - window).order_by("-starts_at").first())
    if previous is not None:
        return ChangeRefused(
            "trial_used",
            _("This account already had a trial of %(product)s on %(date)s; one trial per product is offered every "
              "%(days)s days, so the next one is possible from %(next)s.")
            % {"product": subscription.product.name, "date": previous.starts_at.date().isoformat(),
               "days": settings.TRIAL_REPEAT_WINDOW_DAYS, "next": (previous.starts_at + window).date().isoformat()},
            available_from=(previous.starts_at + window).isoformat())
    changes = PlanChange.objects.filter(customer_id=subscription.customer_id)
    if changes.filter(status__in=(*PlanChange.IN_FLIGHT, PlanChange.Status.PENDING_APPROVAL)).exists():
        return ChangeRefused("change_in_progress", _("Another plan change is under way; start the trial once it "
                                                     "is finished."))
    scheduled = changes.filter(subscription=subscription, status=PlanChange.Status.SCHEDULED).first()
    if scheduled is not None:
        return ChangeRefused("change_scheduled", _("A change of this subscription is scheduled for %(date)s; withdraw "
                                                   "it on the overview before starting a trial.")
                             % {"date": scheduled.effective_at.date().isoformat()})
    try:  # the trial must be able to end in a real upgrade: the change rules, tax and contract must allow it
        quote_price(subscription=subscription, to_price=price,
                    quantity=_trial_quantity(subscription=subscription, price=price), now=now)
    except ChangeRefused as refusal:
        return refusal
    return None


def trial_eligible(*, subscription: Subscription, plan: Plan, now: datetime) -> tuple[bool, str]:
    """Whether `subscription` may try `plan` now, and if not, the reason in the customer's words."""
    refusal = _refusal(subscription=subscription, plan=plan, now=now)
    return (True, "") if refusal is None else (False, refusal.detail)


@dataclass(frozen=True)
class TrialTerms:
    """What the confirmation page states before a trial starts."""

    plan: Plan
    price: Price
    quantity: int
    ends_at: datetime
    conversion: Quote | None  # the upgrade priced at the trial's end, when it can be priced ahead
    conversion_note: str  # why it could not be priced ahead (then: the price per period, prorated at conversion)


def trial_terms(*, subscription: Subscription, plan: Plan, days: int, now: datetime) -> TrialTerms:
    """The terms of a trial starting now: its end, and what converting at the end would cost (a quote priced at the
    end instant through the quote service, so exactly the PRORATION.md amounts as things stand today)."""
    _check_days(days)
    refusal = _refusal(subscription=subscription, plan=plan, now=now)
    if refusal is not None:
        raise refusal
    price = _trial_price(subscription=subscription, plan=plan)
    quantity = _trial_quantity(subscription=subscription, price=price)
    ends_at = now.replace(microsecond=0) + timedelta(days=days)
    conversion, note = None, ""
    try:
        conversion = quote_price(subscription=subscription, to_price=price, quantity=quantity, now=ends_at)
    except ChangeRefused as refusal:
        note = refusal.code  # typically period_not_current: the trial ends after this period; priced then
    return TrialTerms(plan=plan, price=price, quantity=quantity, ends_at=ends_at, conversion=conversion,
                      conversion_note=note)


def _check_days(days: int) -> None:
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_TRIAL_DAYS:
        raise ChangeRefused("trial_days_invalid", _("A trial lasts 1 to %(max)s days; %(days)s was asked for.")
                            % {"max": MAX_TRIAL_DAYS, "days": days})


def _snapshot(trial: Trial) -> dict:
    return {"status": trial.status, "plan": str(trial.plan), "price_id": trial.price_id, "quantity": trial.quantity,
            "starts_at": trial.starts_at.isoformat(), "ends_at": trial.ends_at.isoformat(),
            "convert_opt_in": trial.convert_opt_in, "source": trial.source,
            "plan_change_id": trial.plan_change_id, "outcome_code": trial.outcome_code}


# --- start, opt-in, end early -----------------------------------------------------------------------------


def trial_start(*, subscription: Subscription, plan: Plan, days: int, source: str, actor: AbstractBaseUser | None,
                now: datetime, offer_presentation: OfferPresentation | None = None,
                convert_opt_in: bool = False) -> Trial:
    """Start a trial of `plan` (a higher tier of the subscription's product) for `days` days: its features at once,
    nothing charged. `source` is 'plans_page' or 'offer' (with the offer presentation). Refuses with ChangeRefused
    (a stable code and a sentence for the customer) and then records nothing."""
    _check_days(days)
    if source not in Trial.Source.values:
        raise ChangeRefused("trial_source_invalid", f"Unknown trial source {source!r}; use one of "
                                                    f"{', '.join(Trial.Source.values)}.")
    if source == Trial.Source.OFFER and offer_presentation is None:
        raise ChangeRefused("trial_source_invalid", "A trial from a retention offer needs its offer presentation.")
    with transaction.atomic():
        customer, subscription, _none = _lock(subscription.customer_id, subscription.pk)
        if offer_presentation is not None and offer_presentation.customer_id != customer.pk:
            raise ChangeRefused("trial_source_invalid", "The offer presentation belongs to another customer.")
        refusal = _refusal(subscription=subscription, plan=plan, now=now)
        if refusal is not None:
            raise refusal
        price = _trial_price(subscription=subscription, plan=plan)
        starts_at = now.replace(microsecond=0)
        try:
            with transaction.atomic():
                trial = Trial.objects.create(
                    customer=customer, subscription=subscription, product_id=subscription.product_id,
                    from_price=subscription.price, from_quantity=subscription.quantity, plan=plan, price=price,
                    quantity=_trial_quantity(subscription=subscription, price=price), starts_at=starts_at,
                    ends_at=starts_at + timedelta(days=days), convert_opt_in=convert_opt_in, source=source,
                    offer_presentation=offer_presentation, created_at=now,
                    created_by=actor if actor is not None and actor.is_authenticated else None)
        except IntegrityError:  # a double submit: the other one started it
            raise ChangeConflict("trial_active", _("A trial of this subscription is already running.")) from None
        entitlements_sync(customer=customer)
        audit_event_record(actor=actor, action="trial.started", target=trial, now=now, customer=customer,
                           reason_code=f"trial_{source}", after=_snapshot(trial),
                           message=f"Trial of {plan} until {trial.ends_at.isoformat()}; "
                                   f"{'converts' if convert_opt_in else 'falls back'} at the end")
    return trial


def _locked_trial(trial_id: int) -> tuple[Customer, Subscription, Trial]:
    trial = Trial.objects.get(pk=trial_id)
    customer, subscription, _none = _lock(trial.customer_id, trial.subscription_id)
    return customer, subscription, Trial.objects.select_for_update(of=("self",)).select_related("plan").get(pk=trial_id)


def trial_set_opt_in(*, trial: Trial, convert_opt_in: bool, actor: AbstractBaseUser | None, now: datetime) -> Trial:
    """The customer changes whether the trial converts to paid at the end (possible until the end)."""
    with transaction.atomic():
        customer, _subscription, trial = _locked_trial(trial.pk)
        if trial.status != Trial.Status.ACTIVE or now >= trial.ends_at:
            raise ChangeConflict("trial_ended", _("This trial has ended; its choice can no longer change."))
        if trial.ending_claimed_until is not None:
            raise ChangeConflict("trial_ending", _("This trial is being converted right now."))
        if trial.convert_opt_in == convert_opt_in:
            return trial
        before = _snapshot(trial)
        trial.convert_opt_in = convert_opt_in
        trial.save(update_fields=["convert_opt_in"])
        audit_event_record(actor=actor, action="trial.opt_in_changed", target=trial, now=now, customer=customer,
                           reason_code="customer_opt_in" if convert_opt_in else "customer_opt_out",
                           before=before, after=_snapshot(trial))
    return trial


def trial_end_early(*, trial: Trial, actor: AbstractBaseUser | None, now: datetime) -> Trial:
    """The customer ends the trial now: the tried features go at once, nothing is charged, nothing deleted."""
    with transaction.atomic():
        customer, _subscription, trial = _locked_trial(trial.pk)
        if trial.status != Trial.Status.ACTIVE or now >= trial.ends_at:
            raise ChangeConflict("trial_ended", _("This trial has already ended."))
        if trial.ending_claimed_until is not None:
            raise ChangeConflict("trial_ending", _("This trial is being converted right now."))
        before = _snapshot(trial)
        trial.status = Trial.Status.CANCELLED
        trial.ended_at = now
        trial.outcome_code = "ended_early"
        trial.outcome_message = "Ended by the customer before its end date"
        trial.save()
        entitlements_sync(customer=customer)
        audit_event_record(actor=actor, action="trial.ended_early", target=trial, now=now, customer=customer,
                           reason_code="customer_ended", before=before, after=_snapshot(trial))
    return trial


# --- reminders ------------------------------------------------------------------------------------------


def _email_context(trial: Trial) -> dict:
    customer = trial.customer
    return {
        "plan": trial.plan.name, "product": trial.product.name, "ends_at": trial.ends_at.isoformat(),
        "timezone": customer.timezone, "convert_opt_in": trial.convert_opt_in,
        "paid_plan": trial.subscription.price.plan.name,
        "overview_url": absolute_url(reverse("portal:overview", args=[customer.pk])),
        "plans_url": absolute_url(reverse("portal:plans", args=[customer.pk, trial.subscription_id])),
    }


def trial_reminders_queue(*, now: datetime) -> int:
    """Queue the reminder that is due for each running trial (TRIAL_REMINDER_DAYS before the end: the nearest one
    reached, so a sweep that was down does not send a stale one too), once per trial and reminder: the
    notification's unique key makes a repeated or concurrent sweep queue nothing twice."""
    reminder_days = sorted(set(settings.TRIAL_REMINDER_DAYS))
    if not reminder_days:
        return 0
    queued = 0
    due = (Trial.objects.filter(status=Trial.Status.ACTIVE, ends_at__gt=now,
                                ends_at__lte=now + timedelta(days=reminder_days[-1]))
           .select_related("customer", "plan", "product", "subscription__price__plan"))
    for trial in due:
        days = next(d for d in reminder_days if trial.ends_at - now <= timedelta(days=d))
        if trial.ends_at - timedelta(days=days) < trial.starts_at:
            continue  # a trial shorter than this reminder: the start page said when it ends
        with transaction.atomic():
            context = {**_email_context(trial), "days_left": days}
            if notification_queue(customer=trial.customer, kind="trial_reminder",
                                  key=f"trial-{trial.pk}-reminder-{days}d", context=context, now=now):
                queued += 1
    return queued


# --- the end: convert or fall back ---------------------------------------------------------------------------


def trials_due(*, now: datetime) -> list[int]:
    return list(Trial.objects.filter(status=Trial.Status.ACTIVE, ends_at__lte=now).order_by("ends_at", "pk")
                .values_list("pk", flat=True))


def _finish(*, trial: Trial, customer: Customer, status: str, code: str, message: str, now: datetime,
            email: str | None, extra: dict | None = None) -> None:
    """Close the trial with its outcome, audited and emailed (locks held)."""
    before = _snapshot(trial)
    trial.status = status
    trial.outcome_code = code
    trial.outcome_message = message[:300]
    trial.ended_at = now
    trial.ending_claimed_until = None
    trial.save()
    entitlements_sync(customer=customer)
    action = "trial.converted" if status == Trial.Status.CONVERTED else "trial.fell_back"
    audit_event_record(actor=None, action=action, target=trial, now=now, customer=customer, reason_code=code,
                       before=before, after=_snapshot(trial), message=message)
    if email:
        notification_queue(customer=customer, kind=email, key=f"trial-{trial.pk}-{status}",
                           context={**_email_context(trial), "reason": message, **(extra or {})}, now=now)


def trial_end(*, trial_id: int, now: datetime) -> Trial:
    """End one trial whose end has come, exactly once: convert it (opted in) or fall back. Idempotent and safe with
    two workers. A conversion whose payment outcome is unknown stays claimed and is resumed after the lease."""
    with transaction.atomic():
        customer, subscription, trial = _locked_trial(trial_id)
        if trial.status != Trial.Status.ACTIVE or trial.ends_at > now:
            return trial
        if trial.ending_claimed_until is not None and trial.ending_claimed_until > now:
            return trial  # another worker is converting it
        if subscription.status not in Subscription.RENEWABLE:
            _finish(trial=trial, customer=customer, status=Trial.Status.FELL_BACK, code="subscription_ended",
                    message="The subscription ended during the trial; nothing was charged.", now=now, email=None)
            return trial
        if subscription.price.plan.product_id == trial.plan.product_id and \
                subscription.price.plan.rank >= trial.plan.rank:
            _finish(trial=trial, customer=customer, status=Trial.Status.CONVERTED, code="already_upgraded",
                    message=f"The subscription was already moved to {subscription.price.plan} during the trial.",
                    now=now, email=None)
            return trial
        if not trial.convert_opt_in:
            _finish(trial=trial, customer=customer, status=Trial.Status.FELL_BACK, code="not_opted_in",
                    message=f"Back to {subscription.price.plan}; nothing was charged and nothing deleted.", now=now,
                    email="trial_fell_back")
            return trial
        trial.ending_claimed_until = now + CONVERSION_LEASE
        trial.save(update_fields=["ending_claimed_until"])
    return _convert(trial=trial, now=now)


def _conversion_change(*, trial: Trial, now: datetime) -> PlanChange:
    """The conversion's plan change: resumed through the trial's quote if a previous worker opened it, else a quote
    priced at the trial's end (what the customer was shown; at `now` if the end is longer ago than a quote lives)."""
    quote = trial.conversion_quote
    if quote is not None:
        live = quote.plan_changes.filter(status__in=PlanChange.LIVE).order_by("-pk").first()
        if live is not None:
            return live
        if now >= quote.expires_at:
            quote = None
    if quote is None:
        subscription = Subscription.objects.select_related("customer", "price__plan").get(pk=trial.subscription_id)
        at = trial.ends_at if now < trial.ends_at + settings.QUOTE_TTL else now
        quote = quote_create(subscription=subscription, to_price=trial.price, quantity=trial.quantity, now=at,
                             actor=None)
        Trial.objects.filter(pk=trial.pk).update(conversion_quote=quote)
    change = _plan_change_open(quote_id=quote.pk, actor=None, now=now, off_session=True, reason_code=REASON_CODE)
    Trial.objects.filter(pk=trial.pk).update(plan_change=change)
    return change


def _convert(*, trial: Trial, now: datetime) -> Trial:
    """Outside any transaction: open (or resume) the upgrade, charge off-session, then record the trial's outcome."""
    refusal: BillingError | None = None
    change = None
    try:
        change = _conversion_change(trial=trial, now=now)
        if change.status == PlanChange.Status.PENDING:
            change = plan_change_collect_payment(plan_change=change, now=now)
        if change.status == PlanChange.Status.REQUIRES_ACTION:  # nobody is there to authenticate
            try:
                change = plan_change_cancel(plan_change=change, actor=None, now=now,
                                            reason_code="authentication_required")
            except ChangeConflict:
                change.refresh_from_db()
    except BillingError as error:
        refusal = error
    with transaction.atomic():
        customer, _subscription, trial = _locked_trial(trial.pk)
        if trial.status != Trial.Status.ACTIVE:
            return trial
        if refusal is not None and refusal.code in RETRYABLE:
            logger.info("trial %s: conversion waits (%s)", trial.pk, refusal.code)
            trial.ending_claimed_until = None if refusal.code != "payment_unavailable" else trial.ending_claimed_until
            trial.save(update_fields=["ending_claimed_until"])
            return trial
        if refusal is not None:
            _finish(trial=trial, customer=customer, status=Trial.Status.FELL_BACK, code=refusal.code,
                    message=refusal.detail, now=now, email="trial_conversion_failed")
            return trial
        if change.status in (PlanChange.Status.APPLIED, PlanChange.Status.SCHEDULED,
                             PlanChange.Status.PENDING_APPROVAL):
            trial.plan_change = change
            _finish(trial=trial, customer=customer, status=Trial.Status.CONVERTED, code="converted",
                    message=f"Upgraded to {trial.plan}: {format_amount(change.amount_due, change.currency)} "
                            f"{change.currency} charged", now=now, email="trial_converted",
                    extra={"amount": str(change.amount_due), "currency": change.currency,
                           "pending_approval": change.status == PlanChange.Status.PENDING_APPROVAL})
            return trial
        if change.status in (PlanChange.Status.FAILED, PlanChange.Status.CANCELLED):
            trial.plan_change = change
            _finish(trial=trial, customer=customer, status=Trial.Status.FELL_BACK,
                    code=change.failure_code or "payment_declined",
                    message=change.failure_message or "The payment was declined.", now=now,
                    email="trial_conversion_failed")
            return trial
        return trial  # pending: the payment's outcome is unknown; the claim expires and the next sweep resumes it


def trials_run(*, trial_ids: list[int], now: datetime) -> int:
    """One chunk of the sweep; an error in one trial never stops the others (it is retried on the next sweep)."""
    ended = 0
    for trial_id in trial_ids:
        try:
            ended += trial_end(trial_id=trial_id, now=now).status != Trial.Status.ACTIVE
        except Exception:
            logger.exception("ending trial %s failed", trial_id)
    return ended


def trials_dispatch(*, now: datetime, chunk_size: int = 100) -> int:
    """The beat sweep: reminders, then the trials whose end has come, to the workers in chunks (each chunk is
    idempotent, so a chunk delivered twice or overlapping sweeps end each trial once)."""
    from retention.tasks import end_trials

    trial_reminders_queue(now=now)
    ids = trials_due(now=now)
    for index in range(0, len(ids), chunk_size):
        end_trials.delay(ids[index:index + chunk_size])
    return len(ids)
