"""Staff changes at a date: created in admin or by a bulk job, applied by the sweep in date order.

Applying one is a quote and its acceptance, through the same services as the customer's own change (eligibility,
proration, payment, invoice). The row moves scheduled → processing → applied | handed over | refused | failed.
The quote is stored on the row before it is accepted, and a quote executes at most once, so a worker killed
anywhere in between is resumed by the next sweep and the change is applied exactly once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q, QuerySet

from billing.errors import BillingError, ChangeConflict, ChangeRefused
from billing.models import PlanChange, Price, ScheduledChange, Subscription
from billing.money import format_amount
from billing.selectors_context import ReadContext
from billing.services.audit import audit_event_record
from billing.services.plan_changes import plan_change_cancel, quote_accept
from billing.services.quotes import quote_create

logger = logging.getLogger(__name__)

# How long a worker owns a row it is applying; a row still processing after that is taken over (its worker died).
PROCESSING_LEASE = timedelta(seconds=settings.SCHEDULED_CHANGE_LEASE_SECONDS)

# Conflicts that pass (another change of the account is under way, the quote went stale): try again soon.
_TRY_AGAIN = {"change_in_progress", "quote_expired", "subscription_changed", "balance_changed", "tax_changed",
              "payment_unavailable", "period_not_current"}


def scheduled_change_create(*, subscription: Subscription, to_price: Price, quantity: int, effective_at: datetime,
                            actor: AbstractBaseUser, reason: str, now: datetime) -> ScheduledChange:
    """Schedule a staff change of one subscription. Checked again, in full, when it applies."""
    if not reason.strip():
        raise ChangeRefused("reason_required", "Say why this change is made (it is audited).")
    if effective_at < now - timedelta(minutes=1):
        raise ChangeRefused("effective_in_past", f"The effective date {effective_at:%Y-%m-%d %H:%M} has passed.")
    if subscription.status == Subscription.Status.CANCELLED:
        raise ChangeRefused("subscription_not_active", "The subscription has ended.")
    if to_price.currency != subscription.customer.currency:
        raise ChangeRefused("currency_mismatch", f"The customer is billed in {subscription.customer.currency}; "
                                                 f"this price is in {to_price.currency}.")
    with transaction.atomic():
        row = ScheduledChange.objects.create(
            customer=subscription.customer, subscription=subscription, to_price=to_price, to_quantity=quantity,
            effective_at=effective_at, reason=reason.strip()[:300], created_by=actor, created_at=now,
        )
        audit_event_record(actor=actor, action="scheduled_change.created", target=row, now=now,
                           customer=subscription.customer, reason_code="staff_scheduled",
                           after={"to_price_id": to_price.pk, "to_quantity": quantity,
                                  "effective_at": effective_at.isoformat()}, message=row.reason)
    return row


def scheduled_changes_due(*, now: datetime) -> QuerySet[ScheduledChange]:
    return (ScheduledChange.objects.filter(status__in=ScheduledChange.OPEN, effective_at__lte=now,
                                           needs_attention=False)
            .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now)).order_by("effective_at", "id"))


def _finish(row_id: int, *, status: str, now: datetime, code: str = "", message: str = "",
            plan_change: PlanChange | None = None) -> ScheduledChange:
    with transaction.atomic():
        # of=("self",): the row only, never the staff user and the customer read along with it.
        row = (ScheduledChange.objects.select_for_update(of=("self",)).select_related("created_by", "customer")
               .get(pk=row_id))
        if row.status != ScheduledChange.Status.PROCESSING:
            return row
        row.status = status
        row.result_code = code
        row.message = message[:500]
        row.finished_at = now
        row.retry_at = None
        if plan_change is not None:
            row.plan_change = plan_change
        row.save()
        audit_event_record(actor=row.created_by, action=f"scheduled_change.{status}", target=row, now=now,
                           customer=row.customer, reason_code=code or "staff_scheduled", message=row.message)
    return row


def _later(row_id: int, *, now: datetime, code: str, message: str, drop_quote: bool) -> ScheduledChange:
    """A passing conflict: back to scheduled, tried again with backoff; parked after repeated tries."""
    with transaction.atomic():
        row = ScheduledChange.objects.select_for_update().get(pk=row_id)
        if row.status != ScheduledChange.Status.PROCESSING:
            return row
        row.status = ScheduledChange.Status.SCHEDULED
        row.result_code = code
        row.message = message[:500]
        if drop_quote:
            row.quote = None
        if row.attempts >= settings.SWEEP_MAX_FAILURES:
            row.needs_attention = True
            row.retry_at = None
        else:
            row.retry_at = now + timedelta(minutes=min(2 ** (row.attempts - 1), 60))
        row.save()
    return row


def scheduled_change_apply(*, scheduled_change_id: int, now: datetime,
                           ctx: ReadContext | None = None) -> ScheduledChange:
    """Apply one due staff change exactly once (safe to call again, from any worker, after any crash)."""
    ctx = ctx or ReadContext()
    with transaction.atomic():
        row = (ScheduledChange.objects.select_for_update(of=("self",)).select_related("created_by")
               .get(pk=scheduled_change_id))
        if row.status not in ScheduledChange.OPEN or row.effective_at > now:
            return row
        if row.status == ScheduledChange.Status.PROCESSING and row.retry_at is not None and row.retry_at > now:
            return row  # another worker holds it (its lease runs until retry_at); resumed after that if it died
        earlier = ScheduledChange.objects.filter(subscription_id=row.subscription_id, status__in=ScheduledChange.OPEN,
                                                 effective_at__lt=row.effective_at)
        if earlier.exists():
            return row  # date order: the earlier change of this subscription goes first
        row.status = ScheduledChange.Status.PROCESSING
        row.attempts += 1
        row.retry_at = now + PROCESSING_LEASE
        row.save(update_fields=["status", "attempts", "retry_at"])
    return scheduled_change_apply_claimed(row=row, now=now, ctx=ctx)


def scheduled_change_apply_claimed(*, row: ScheduledChange, now: datetime, ctx: ReadContext) -> ScheduledChange:
    """The rest of scheduled_change_apply, for a row this worker has just claimed (processing, its lease running;
    `row` with its staff user): quote it unless it has its quote, accept that quote, record the result. Also how the
    set-based staff step (scheduled_changes_bulk) hands over a row it claimed but does not take to the end."""
    if row.quote_id is None:
        subscription = Subscription.objects.select_related("customer").get(pk=row.subscription_id)
        subscription.price = ctx.price(subscription.price_id)
        try:
            quote = quote_create(subscription=subscription, to_price=ctx.price(row.to_price_id),
                                 quantity=row.to_quantity, now=now, actor=row.created_by, ctx=ctx)
        except BillingError as error:
            if error.code in _TRY_AGAIN:
                return _later(row.pk, now=now, code=error.code, message=error.detail, drop_quote=False)
            return _finish(row.pk, status=ScheduledChange.Status.REFUSED, now=now, code=error.code,
                           message=error.detail)
        if ScheduledChange.objects.filter(pk=row.pk, quote__isnull=True).update(quote=quote):
            row.quote = quote
        else:
            row.refresh_from_db()
    try:
        change = quote_accept(quote=row.quote, actor=row.created_by, now=now, ctx=ctx)
    except ChangeConflict as error:
        existing = error.extra.get("plan_change")
        if error.code == "quote_already_accepted" and existing:
            change = PlanChange.objects.get(pk=existing)
        elif error.code in _TRY_AGAIN:
            return _later(row.pk, now=now, code=error.code, message=error.detail, drop_quote=error.code != "change_in_progress"
                          and error.code != "payment_unavailable")
        else:
            return _finish(row.pk, status=ScheduledChange.Status.FAILED, now=now, code=error.code, message=error.detail)
    except BillingError as error:
        return _finish(row.pk, status=ScheduledChange.Status.REFUSED, now=now, code=error.code, message=error.detail)
    return _settle(row_id=row.pk, change=change, now=now)


def applied_row_message(change: PlanChange) -> str:
    return f"Applied as plan change {change.pk}; {format_amount(change.amount_due, change.currency)} {change.currency} charged"


def _settle(*, row_id: int, change: PlanChange, now: datetime) -> ScheduledChange:
    if change.status == PlanChange.Status.APPLIED:
        return _finish(row_id, status=ScheduledChange.Status.APPLIED, now=now, plan_change=change,
                       message=applied_row_message(change))
    if change.status == PlanChange.Status.SCHEDULED:
        return _finish(row_id, status=ScheduledChange.Status.HANDED_OVER, now=now, plan_change=change,
                       message=f"The change rule applies it at the period end ({change.effective_at:%Y-%m-%d}): "
                               f"plan change {change.pk}")
    if change.status == PlanChange.Status.PENDING_APPROVAL:  # an approval policy holds it: approvers decide
        return _finish(row_id, status=ScheduledChange.Status.HANDED_OVER, now=now, plan_change=change,
                       code="pending_approval",
                       message=f"Held for approval as plan change {change.pk}; it completes when approved")
    if change.status == PlanChange.Status.REQUIRES_ACTION:
        # Nobody is there to authenticate a staff change: cancel it, nothing is charged.
        try:
            change = plan_change_cancel(plan_change=change, actor=None, now=now, reason_code="needs_authentication")
        except ChangeConflict:
            change.refresh_from_db()
            if change.status == PlanChange.Status.APPLIED:
                return _settle(row_id=row_id, change=change, now=now)
        return _finish(row_id, status=ScheduledChange.Status.FAILED, now=now, code="needs_authentication",
                       plan_change=change, message="The card asks the customer to authenticate; nothing was charged.")
    if change.status == PlanChange.Status.FAILED:
        return _finish(row_id, status=ScheduledChange.Status.FAILED, now=now, plan_change=change,
                       code=change.failure_code, message=change.failure_message)
    return ScheduledChange.objects.get(pk=row_id)  # payment outcome unknown: the reconciler settles it; resumed later


def scheduled_change_cancel(*, row: ScheduledChange, actor: AbstractBaseUser, now: datetime) -> ScheduledChange:
    with transaction.atomic():
        row = ScheduledChange.objects.select_for_update().get(pk=row.pk)
        if row.status not in (ScheduledChange.Status.SCHEDULED, ScheduledChange.Status.PREVIEW):
            raise ChangeConflict("not_cancellable", f"This change is {row.get_status_display().lower()}.")
        row.status = ScheduledChange.Status.CANCELLED
        row.finished_at = now
        row.save()
        audit_event_record(actor=actor, action="scheduled_change.cancelled", target=row, now=now,
                           customer=row.customer, reason_code="staff_cancelled")
    return row


def scheduled_changes_run(*, ids: list[int], now: datetime) -> int:
    """A chunk (of the sweep or a bulk job): each in date order; one bad row never stops the others."""
    ctx = ReadContext()  # the catalog, rules, tax rates, seller and approval policies: read once per chunk
    done = 0
    taken: dict[int, ScheduledChange] = {}
    if settings.SCHEDULED_CHANGES_SET_BASED and len(ids) > 1:
        from billing.services.scheduled_changes_bulk import scheduled_changes_apply_set

        try:  # the plain rows together; it hands every row it claimed but could not finish to the single path
            taken = scheduled_changes_apply_set(ids=ids, now=now, ctx=ctx)
        except Exception:  # before any row was claimed: the chunk goes one by one
            logger.exception("the set-based step of a chunk of scheduled changes failed")
        done += sum(row.status in ScheduledChange.DONE for row in taken.values())
    for row_id in ids:
        if row_id in taken:
            continue
        try:
            row = scheduled_change_apply(scheduled_change_id=row_id, now=now, ctx=ctx)
        except Exception as error:  # unexpected: remembered on the row, retried with backoff, then parked
            logger.exception("applying scheduled change %s failed", row_id)
            row = _later(row_id, now=now, code="error", message=f"{type(error).__name__}: {error}", drop_quote=False)
        done += row.status in ScheduledChange.DONE
    return done
