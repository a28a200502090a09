"""Period ends: scheduled changes and renewals, applied by an idempotent sweep.

Reaching a period end is one step under the customer → subscription locks: apply the change scheduled for
that moment (or simply advance the period), then bill the new period. A worker that dies mid-step rolls the
whole step back; a second worker finds the period already advanced and does nothing, so a period is
entered and billed exactly once (and a unique constraint on renewal invoices says so in the schema too).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction

from billing import proration
from billing.models import Customer, Direction, PlanChange, Subscription
from billing.selectors_context import ReadContext
from billing.services.audit import audit_event_record, subscription_snapshot
from billing.services.invoices import invoice_for_renewal
from billing.services.period_ends_bulk import period_ends_apply_set
from billing.services.plan_changes import _apply, _fail_change, _lock
from retention.services.recurring_credits import recurring_credit_grant

logger = logging.getLogger(__name__)

# A subscription the sweep missed for a long time (the service was down) catches up one period per step.
MAX_PERIODS_PER_RUN = 36


def _scheduled_apply_locked(*, change: PlanChange, customer: Customer, subscription: Subscription,
                            now: datetime, ctx: ReadContext) -> bool:
    """Apply a due scheduled change (locks held). Returns whether it applied; a change that can no longer
    apply fails with its reason and the subscription renews on its current terms."""
    if change.direction == Direction.CANCEL:
        _apply(change=change, customer=customer, subscription=subscription, actor=None, now=now, ctx=ctx)
        return True
    to_price = ctx.price(change.to_price_id)
    to_product_id = to_price.plan.product_id
    if subscription.status not in Subscription.RENEWABLE:
        _fail_change(change=change, customer=customer, code="subscription_not_active",
                     message=f"The subscription is {subscription.get_status_display().lower()}.", now=now)
        return False
    if to_product_id != subscription.product_id and Subscription.objects.filter(
        customer=customer, product_id=to_product_id
    ).exclude(status=Subscription.Status.CANCELLED).exists():
        _fail_change(change=change, customer=customer, code="already_subscribed",
                     message="The customer already subscribes to the target product.", now=now)
        return False
    _sweep_succeeded(change)
    start = change.effective_at
    change.new_period_start = start
    change.new_period_end = proration.add_interval(start, to_price.interval, ZoneInfo(customer.timezone))
    _apply(change=change, customer=customer, subscription=subscription, actor=None, now=now, ctx=ctx)
    return True


def _renew_locked(*, customer: Customer, subscription: Subscription, now: datetime, ctx: ReadContext) -> bool:
    """Enter the next period if the current one has ended: its scheduled change first, then its invoice (after
    crediting an amount-off retention discount due for this period, retention.services.recurring_credits)."""
    if subscription.status not in Subscription.RENEWABLE or subscription.current_period_end > now:
        return False
    if PlanChange.objects.filter(customer=customer, status__in=PlanChange.IN_FLIGHT).exists():
        return False  # a payment for the current period is under way: renew once it settles (next sweep)
    period_end = subscription.current_period_end
    # `of=("self",)`: lock the plan changes only, never the joined price and plan rows that every customer moving
    # to that price shares (locking those serialised the sweep's workers on one row).
    due = (PlanChange.objects.select_for_update(of=("self",))
           .filter(subscription=subscription, status=PlanChange.Status.SCHEDULED, effective_at__lte=period_end)
           .order_by("effective_at", "pk"))  # their prices come from the context
    # Reset before a change saves the subscription (an error rolls the whole step back, reset included), so a
    # step that succeeds through a scheduled change clears an earlier failure too.
    _sweep_succeeded(subscription)
    for change in due:
        if _scheduled_apply_locked(change=change, customer=customer, subscription=subscription, now=now, ctx=ctx):
            break
    if subscription.status == Subscription.Status.CANCELLED:
        return True  # a cancellation took effect: nothing more to bill
    if subscription.current_period_end == period_end:  # no change moved the period: renew on the same terms
        subscription.price = ctx.price(subscription.price_id)  # with its product, for the snapshots
        before = subscription_snapshot(subscription)
        subscription.current_period_start = period_end
        subscription.current_period_end = proration.add_interval(period_end, subscription.price.interval,
                                                                 ZoneInfo(customer.timezone))
        if subscription.status == Subscription.Status.TRIALING:
            subscription.status = Subscription.Status.ACTIVE
        subscription.version += 1
        subscription.save()
        audit_event_record(actor=None, action="subscription.renewed", target=subscription, now=now, customer=customer,
                           reason_code="period_end", before=before, after=subscription_snapshot(subscription))
    if _pause_roll(subscription, now=now):
        return True  # a paused period: entered without an invoice, the discount waits for the pause to end
    if _discount_roll(subscription):
        subscription.save(update_fields=["discount_percent", "discount_periods_left", "next_discount_percent",
                                         "next_discount_periods", "updated_at"])
    # An amount-off retention discount: credited to the balance now, so the invoice applies it first.
    recurring_credit_grant(customer=customer, subscription=subscription, now=now, ctx=ctx)
    invoice_for_renewal(customer=customer, subscription=subscription, now=now, ctx=ctx)
    return True


def _pause_roll(subscription: Subscription, *, now: datetime) -> bool:
    """A pause (retention offer) for the period just entered: True when it covers it (no invoice). A period that
    starts at or after the pause's end resumes billing and clears the pause (audited)."""
    if subscription.paused_until is None:
        return False
    start = subscription.current_period_start
    if subscription.pause_covers(start):
        audit_event_record(actor=None, action="subscription.paused_period", target=subscription, now=now,
                           customer=subscription.customer, reason_code="paused",
                           message=f"Period {start.isoformat()} – {subscription.current_period_end.isoformat()} "
                                   f"not billed: paused until {subscription.paused_until.isoformat()}")
        return True
    if start >= subscription.paused_until:
        until = subscription.paused_until
        subscription.pause_starts_at = subscription.paused_until = None
        subscription.save(update_fields=["pause_starts_at", "paused_until", "updated_at"])
        audit_event_record(actor=None, action="subscription.resumed", target=subscription, now=now,
                           customer=subscription.customer, reason_code="pause_ended",
                           message=f"The pause ended on {until.isoformat()}; billing resumes")
    return False


def _discount_roll(subscription: Subscription) -> bool:
    """The discount for the period just entered: a discount waiting for this renewal starts (this period is the first
    of its periods); a limited one uses up a period, or ends when none is left. Returns whether anything changed."""
    if subscription.next_discount_percent is not None:
        subscription.discount_percent = subscription.next_discount_percent
        periods = subscription.next_discount_periods
        subscription.discount_periods_left = None if periods is None else max(periods - 1, 0)
        subscription.next_discount_percent = subscription.next_discount_periods = None
        return True
    if subscription.discount_periods_left is None:
        return False
    if subscription.discount_periods_left == 0:
        subscription.discount_percent = Decimal(0)
        subscription.discount_periods_left = None
    else:
        subscription.discount_periods_left -= 1
    return True


def _renew_step(*, subscription_id: int, now: datetime, ctx: ReadContext) -> tuple[bool, bool]:
    """(whether this call took the step, whether another period is due after it)."""
    customer_id = Subscription.objects.values_list("customer_id", flat=True).get(pk=subscription_id)
    with transaction.atomic():
        customer, subscription, _none = _lock(customer_id, subscription_id)
        renewed = _renew_locked(customer=customer, subscription=subscription, now=now, ctx=ctx)
        return renewed, renewed and subscription.status in Subscription.RENEWABLE and \
            subscription.current_period_end <= now


def subscription_renew(*, subscription_id: int, now: datetime, ctx: ReadContext | None = None) -> bool:
    """One period-end step for one subscription, exactly once. Returns whether this call took it."""
    return _renew_step(subscription_id=subscription_id, now=now, ctx=ctx or ReadContext())[0]


def subscription_renew_all_due(*, subscription_id: int, now: datetime, ctx: ReadContext | None = None) -> int:
    """Every period of one subscription that ended by `now` (normally one), one transaction each."""
    ctx = ctx or ReadContext()
    periods, again = 0, True
    while again and periods < MAX_PERIODS_PER_RUN:
        renewed, again = _renew_step(subscription_id=subscription_id, now=now, ctx=ctx)
        periods += renewed
    return periods


def plan_change_apply_scheduled(*, plan_change_id: int, now: datetime, ctx: ReadContext | None = None) -> bool:
    """Apply one due scheduled change exactly once. A change at the period end is the renewal step itself."""
    ctx = ctx or ReadContext()
    change = PlanChange.objects.get(pk=plan_change_id)
    with transaction.atomic():
        customer, subscription, change = _lock(change.customer_id, change.subscription_id, change.pk)
        if change.status != PlanChange.Status.SCHEDULED or change.effective_at > now:
            return False
        if subscription.status not in Subscription.RENEWABLE:
            _fail_change(change=change, customer=customer, code="subscription_not_active",
                         message=f"The subscription is {subscription.get_status_display().lower()}.", now=now)
            return False
        if change.effective_at >= subscription.current_period_end:
            return _renew_locked(customer=customer, subscription=subscription, now=now, ctx=ctx)
        if PlanChange.objects.filter(customer=customer, status__in=PlanChange.IN_FLIGHT).exists():
            return False  # wait until the customer's in-flight payment settles; the next sweep retries
        return _scheduled_apply_locked(change=change, customer=customer, subscription=subscription, now=now,
                                       ctx=ctx)


def _sweep_backoff(failures: int) -> timedelta:
    """1, 2, 4, 8 … minutes after the 1st, 2nd, 3rd … consecutive error, at most an hour."""
    return timedelta(minutes=min(2 ** (failures - 1), 60))


def _sweep_failed(*, model: type[Subscription] | type[PlanChange], pk: int, error: Exception, now: datetime) -> None:
    """Remember an error of the period-end step: retried with backoff, parked as needs attention after
    settings.SWEEP_MAX_FAILURES in a row (its own short transaction: the failed step rolled back)."""
    with transaction.atomic():
        row = model.objects.select_for_update(of=("self",)).get(pk=pk)
        row.sweep_failures += 1
        row.sweep_error = f"{type(error).__name__}: {error}"[:500]
        if row.sweep_failures >= settings.SWEEP_MAX_FAILURES:
            row.needs_attention = True
            row.sweep_retry_at = None
        else:
            row.sweep_retry_at = now + _sweep_backoff(row.sweep_failures)
        row.save(update_fields=["sweep_failures", "sweep_error", "sweep_retry_at", "needs_attention"])
        if row.needs_attention:
            customer_id = row.customer_id
            audit_event_record(actor=None, action="sweep.needs_attention", target=row, now=now,
                               customer=Customer.objects.get(pk=customer_id), reason_code="sweep_failed",
                               message=f"Failed {row.sweep_failures} times: {row.sweep_error}")


def _sweep_succeeded(row: Subscription | PlanChange) -> None:
    row.sweep_failures = 0
    row.sweep_error = ""
    row.sweep_retry_at = None


def sweep_retry(*, row: Subscription | PlanChange, actor, now: datetime) -> None:
    """Staff: take a parked period-end step back into the sweep (admin action)."""
    with transaction.atomic():
        row = type(row).objects.select_for_update(of=("self",)).get(pk=row.pk)
        if not row.needs_attention and not row.sweep_failures:
            return
        error = row.sweep_error
        row.needs_attention = False
        row.sweep_failures = 0
        row.sweep_retry_at = None
        row.save(update_fields=["sweep_failures", "sweep_retry_at", "needs_attention"])
        audit_event_record(actor=actor, action="sweep.retry", target=row, now=now, customer=row.customer,
                           reason_code="staff_retry", message=f"Retried after: {error}")


def period_ends_run(*, subscription_ids: list[int], plan_change_ids: list[int], now: datetime) -> int:
    """One chunk of the sweep. An error in one subscription or change never stops the others: it is
    remembered, retried with backoff and parked after repeated errors. The chunk reads the catalog, the rules,
    the tax rates and the legal entity once (billing.selectors_context)."""
    ctx = ReadContext()
    applied = 0
    taken: dict[int, bool] = {}
    if len(subscription_ids) > 1:
        try:  # the plain steps of the chunk together; an error here only means step by step for all of them
            taken = period_ends_apply_set(subscription_ids=subscription_ids, now=now, ctx=ctx)
        except Exception:
            logger.exception("the set-based period-end step failed; applying the chunk step by step")
    for subscription_id in subscription_ids:
        if subscription_id in taken:
            applied += 1
            if not taken[subscription_id]:
                continue  # otherwise another period is due already: the single step catches up
        try:
            applied += subscription_renew_all_due(subscription_id=subscription_id, now=now, ctx=ctx)
        except Exception as error:
            logger.exception("renewing subscription %s failed", subscription_id)
            _sweep_failed(model=Subscription, pk=subscription_id, error=error, now=now)
    for change_id in plan_change_ids:
        try:
            applied += plan_change_apply_scheduled(plan_change_id=change_id, now=now, ctx=ctx)
        except Exception as error:
            logger.exception("applying scheduled plan change %s failed", change_id)
            _sweep_failed(model=PlanChange, pk=change_id, error=error, now=now)
    return applied


def _due_ids(*, now: datetime) -> tuple[list[int], list[int]]:
    from billing.selectors import plan_changes_due, subscriptions_renewal_due

    subscription_ids = list(subscriptions_renewal_due(now=now).values_list("pk", flat=True))
    # Scheduled changes at their subscription's period end are part of its renewal step.
    change_ids = list(plan_changes_due(now=now).exclude(subscription_id__in=subscription_ids)
                      .values_list("pk", flat=True))
    return subscription_ids, change_ids


def period_ends_dispatch(*, now: datetime, chunk_size: int = 100) -> int:
    """The beat sweep: hand everything due to the workers in chunks (each chunk task is idempotent, so a
    chunk delivered twice or a sweep that overlaps the previous one applies nothing twice). Renewals and the
    customers' period-end changes, then staff changes whose date has come (each subscription's in one chunk,
    in date order)."""
    from billing.services.bulk_jobs import chunks_by_subscription
    from billing.services.scheduled_changes import scheduled_changes_due
    from billing.tasks import apply_period_ends, apply_scheduled_changes

    subscription_ids, change_ids = _due_ids(now=now)
    for index in range(0, len(subscription_ids), chunk_size):
        apply_period_ends.delay(subscription_ids[index:index + chunk_size], [])
    for index in range(0, len(change_ids), chunk_size):
        apply_period_ends.delay([], change_ids[index:index + chunk_size])
    staff = list(scheduled_changes_due(now=now).values_list("pk", "subscription_id"))
    for chunk in chunks_by_subscription(staff, size=chunk_size):
        apply_scheduled_changes.delay(chunk, None)
    return len(subscription_ids) + len(change_ids) + len(staff)


def plan_changes_apply_due(*, now: datetime) -> int:
    """The sweep, in one process (the `apply_due_changes` command): every period end and scheduled change due
    at `now`, in date order. Idempotent and safe in parallel. Returns how many steps this call took."""
    from billing.services.scheduled_changes import scheduled_changes_due, scheduled_changes_run

    subscription_ids, change_ids = _due_ids(now=now)
    applied = period_ends_run(subscription_ids=subscription_ids, plan_change_ids=change_ids, now=now)
    staff = list(scheduled_changes_due(now=now).values_list("pk", flat=True))
    return applied + scheduled_changes_run(ids=staff, now=now)
