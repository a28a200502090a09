"""Staff changes (scheduled changes, bulk-job rows) for a whole chunk at once, for the common case.

`scheduled_changes_run` hands its chunk here first. A row is taken when its change is the plain one: due, still
scheduled and never quoted, the only open staff change of its subscription and the only row of its customer in
the chunk; an active subscription (no pause, no trial, no contract, nothing in flight or scheduled, no balance in
the price's currency, exactly one default payment method) moving to a price of the same product; priced by the
quote service's own `quote_price` as an upgrade charged now, with something due, no offer discount and no approval
hold. The steps are those of the single path (scheduled_change_apply → quote_create → quote_accept), each for the
whole chunk, with the same helpers, checks and locks in the same order:

1. claim the rows and store their quotes, in one transaction (the row's lease, as the single path takes it);
2. open their pending plan changes, in one transaction, after the checks `_plan_change_open` makes;
3. charge each one at the gateway with its plan change's own key (`plan_change_charge`), outside any transaction;
4. apply every succeeded payment, in one transaction: the terms, the entitlements gained and the customer's
   version, the audit events, the paid invoices numbered from one range, the win-back hook, the rows finished.

Anything else goes through the single path: a row not plain before it is claimed stays untouched for the caller;
a claimed row that a check turns away, or whose step fails, continues in `scheduled_change_apply_claimed` (its
quote stored: it is accepted there, and a plan change already opened is resumed with the same payment key, so
nothing is ever charged twice); a payment that did not succeed is recorded by `plan_change_record_payment` and
settled as the single path settles it. A worker that dies anywhere leaves rows processing with their quote, which
the sweep resumes after the lease, exactly as after a crash of the single path.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from billing.bulk_sql import rows_update
from billing.errors import BillingError
from billing.models import (
    AuditEvent,
    BalanceEntry,
    Customer,
    Direction,
    Invoice,
    InvoiceLine,
    PaymentMethod,
    PlanChange,
    Quote,
    ScheduledChange,
    Subscription,
    Timing,
)
from billing.payments import PaymentResult
from billing.selectors import billing_date
from billing.selectors_context import ReadContext
from billing.services.audit import audit_event_build, subscription_snapshot
from billing.services.invoices import issue_fields_for, plan_change_invoice_build, plan_change_invoice_enqueue
from billing.services.period_ends_bulk import _entitled
from billing.services.plan_changes import (
    _apply_terms,
    _change_snapshot,
    _mark_applied,
    applied_message,
    plan_change_charge,
    plan_change_record_payment,
)
from billing.services.quotes import pricing_contexts, quote_price

logger = logging.getLogger(__name__)

_SUBSCRIPTION_FIELDS = ["price", "product", "quantity", "current_period_start", "current_period_end", "version",
                        "updated_at"]
_CHANGE_FIELDS = ["payment_reference", "status", "applied_at", "next_action_url", "failure_code", "failure_message",
                  "entitlements_added"]
_ROW_FIELDS = ["status", "result_code", "message", "finished_at", "retry_at", "plan_change"]


@dataclass(eq=False)
class _Item:
    row: ScheduledChange
    subscription: Subscription
    quote: Quote
    payment_method: PaymentMethod
    change: PlanChange | None = None
    result: PaymentResult | None = None
    done: ScheduledChange | None = field(default=None)


def scheduled_changes_apply_set(*, ids: list[int], now: datetime, ctx: ReadContext) -> dict[int, ScheduledChange]:
    """Take the plain staff changes among `ids` together. Returns {row id: the row as it ended} for every row taken
    (applied, or handed to the single path after it was claimed); the caller runs the others one by one."""
    from billing.services.scheduled_changes import PROCESSING_LEASE

    items = _plain(ids=ids, now=now, ctx=ctx)
    if not items:
        return {}
    items = _claim(items=items, now=now, lease_until=now + PROCESSING_LEASE)
    if not items:
        return {}
    ended: dict[int, ScheduledChange] = {}
    try:
        opened = _open(items=items, now=now, ctx=ctx)
    except Exception:  # nothing of this transaction stays: each row is accepted by the single path
        logger.exception("opening a chunk's plan changes failed; they go one by one")
        opened = []
    for item in items:
        if item not in opened:
            ended[item.row.pk] = _single(item, now=now, ctx=ctx)
    succeeded = []
    for item in opened:  # one gateway call per change, nothing else per change
        try:
            item.result = plan_change_charge(plan_change=item.change)
        except Exception:  # outcome unknown: the single path resumes the same payment (same key)
            ended[item.row.pk] = _single(item, now=now, ctx=ctx)
            continue
        if item.result.status == "succeeded":
            succeeded.append(item)
        else:  # declined, authentication required: recorded and settled as the single path does
            ended[item.row.pk] = _record(item, now=now, ctx=ctx)
    applied: list[_Item] = []
    if succeeded:
        try:
            applied = _apply(items=succeeded, now=now, ctx=ctx)
        except Exception:
            logger.exception("applying a chunk's paid plan changes failed; they go one by one")
            applied = []
    for item in succeeded:
        ended[item.row.pk] = item.done if item in applied and item.done is not None else _record(item, now=now, ctx=ctx)
    return ended


def _plain(*, ids: list[int], now: datetime, ctx: ReadContext) -> list[_Item]:
    """The rows whose change is the plain case, each priced by quote_price (no lock, nothing written)."""
    from retention.models import Trial

    rows = list(ScheduledChange.objects.filter(pk__in=ids, status=ScheduledChange.Status.SCHEDULED,
                                               quote__isnull=True, effective_at__lte=now,
                                               subscription__isnull=False, to_price__isnull=False)
                .select_related("created_by").order_by("pk"))
    if not rows:
        return []
    open_rows = _open_rows(subscription_ids=[r.subscription_id for r in rows])
    rows = [r for r in rows if open_rows.get(r.subscription_id) == 1]  # its only open staff change: no date order
    per_customer = Counter(r.customer_id for r in rows)
    rows = [r for r in rows if per_customer[r.customer_id] == 1]
    subscriptions = {s.pk: s for s in Subscription.objects.select_related("customer")
                     .filter(pk__in=[r.subscription_id for r in rows])}
    rows = [r for r in rows if r.subscription_id in subscriptions
            and subscriptions[r.subscription_id].customer_id == r.customer_id
            and subscriptions[r.subscription_id].status == Subscription.Status.ACTIVE
            and subscriptions[r.subscription_id].paused_until is None]
    if not rows or ctx.legal_entity() is None:
        return []
    customer_ids = [r.customer_id for r in rows]
    trying = set(Trial.objects.filter(customer_id__in=customer_ids, status=Trial.Status.ACTIVE)
                 .values_list("customer_id", flat=True))
    methods = _default_methods(customer_ids)
    for subscription in subscriptions.values():
        subscription.price = ctx.price(subscription.price_id)
    contexts = pricing_contexts(subscriptions=[subscriptions[r.subscription_id] for r in rows],
                                now=now.replace(microsecond=0), ctx=ctx)
    items = []
    for row in rows:
        subscription, context = subscriptions[row.subscription_id], contexts[row.subscription_id]
        to_price = ctx.price(row.to_price_id)
        if (row.customer_id in trying or len(methods.get(row.customer_id, [])) != 1 or context.contract is not None
                or context.open_changes or context.balance != 0
                or to_price.plan.product_id != subscription.product_id):
            continue
        try:
            quote = quote_price(subscription=subscription, to_price=to_price, quantity=row.to_quantity, now=now,
                                actor=row.created_by, context=context)
            if not _plain_quote(quote=quote, subscription=subscription, ctx=ctx):
                continue
        except BillingError:  # refused (or not configured): the single path records it
            continue
        items.append(_Item(row=row, subscription=subscription, quote=quote,
                           payment_method=methods[row.customer_id][0]))
    return items


def _plain_quote(*, quote: Quote, subscription: Subscription, ctx: ReadContext) -> bool:
    from billing.services.approvals import approval_hold_for, change_facts_for_quote

    if not (quote.timing == Timing.NOW and quote.direction == Direction.UPGRADE and quote.amount_due > 0
            and quote.lines and quote.target_discount_percent is None and not quote.supersedes
            and quote.balance_before == 0 and quote.balance_applied == 0 and quote.total > 0):
        return False
    # No contract (checked by the caller): the hold approval_hold_for_quote would find.
    facts = change_facts_for_quote(quote=quote, subscription=subscription, contract=None)
    return approval_hold_for(facts=facts, policies=ctx.approval_policies()) is None


def _open_rows(*, subscription_ids: list[int]) -> dict[int, int]:
    return dict(ScheduledChange.objects.filter(subscription_id__in=subscription_ids,
                                               status__in=ScheduledChange.OPEN)
                .order_by().values("subscription_id").annotate(n=Count("id")).values_list("subscription_id", "n"))


def _default_methods(customer_ids: list[int]) -> dict[int, list[PaymentMethod]]:
    methods: dict[int, list[PaymentMethod]] = {}
    for method in PaymentMethod.objects.filter(customer_id__in=customer_ids, is_default=True).order_by("pk"):
        methods.setdefault(method.customer_id, []).append(method)
    return methods


def _claim(*, items: list[_Item], now: datetime, lease_until: datetime) -> list[_Item]:
    """As scheduled_change_apply claims a row and quote_create stores its quote, for the chunk in one transaction."""
    with transaction.atomic():
        locked = {r.pk: r for r in ScheduledChange.objects.select_for_update(of=("self",))
                  .filter(pk__in=[i.row.pk for i in items]).order_by("pk")}
        open_rows = _open_rows(subscription_ids=[i.row.subscription_id for i in items])
        taken = []
        for item in items:
            row = locked.get(item.row.pk)
            if (row is None or row.status != ScheduledChange.Status.SCHEDULED or row.quote_id is not None
                    or row.effective_at > now or open_rows.get(row.subscription_id) != 1):
                continue  # another worker got there first: the single path sees it as it is
            row.created_by = item.row.created_by
            row.status = ScheduledChange.Status.PROCESSING
            row.attempts += 1
            row.retry_at = lease_until
            item.row = row
            taken.append(item)
        if not taken:
            return []
        Quote.objects.bulk_create([i.quote for i in taken])
        for item in taken:
            item.row.quote = item.quote
        rows_update(ScheduledChange, [i.row for i in taken], ["status", "attempts", "retry_at", "quote"])
    return taken


def _open(*, items: list[_Item], now: datetime, ctx: ReadContext) -> list[_Item]:
    """As _plan_change_open records a pending change, for the chunk in one transaction: locks customers →
    subscriptions → quotes (each in pk order), the same checks; a row a check turns away is left to the single
    path (which raises the same conflict or refusal and records it)."""
    with transaction.atomic():
        customers = {c.pk: c for c in Customer.objects.select_for_update(no_key=True)
                     .filter(pk__in=[i.subscription.customer_id for i in items]).order_by("pk")}
        subscriptions = {s.pk: s for s in Subscription.objects.select_for_update(of=("self",), no_key=True)
                         .filter(pk__in=[i.subscription.pk for i in items]).order_by("pk")}
        quotes = {q.pk: q for q in Quote.objects.select_for_update(of=("self",))
                  .filter(pk__in=[i.quote.pk for i in items]).order_by("pk")}
        live = set(PlanChange.objects.filter(quote_id__in=list(quotes), status__in=PlanChange.LIVE)
                   .values_list("quote_id", flat=True))
        in_flight = set(PlanChange.objects.filter(customer_id__in=list(customers), status__in=PlanChange.IN_FLIGHT)
                        .values_list("customer_id", flat=True))
        balances = _balances(list(customers))
        methods = _default_methods(list(customers))
        opened = []
        for item in items:
            customer, subscription = customers[item.subscription.customer_id], subscriptions[item.subscription.pk]
            quote = quotes[item.quote.pk]
            quote.to_price = ctx.price(quote.to_price_id)
            decision = ctx.tax_decision_for(customer=customer,
                                            on=billing_date(customer=customer, moment=quote.created_at))
            if (quote.pk in live or now >= quote.expires_at or subscription.version != quote.subscription_version
                    or subscription.status != Subscription.Status.ACTIVE or subscription.paused_until is not None
                    or customer.pk in in_flight
                    or balances.get((customer.pk, quote.currency), Decimal(0)) != quote.balance_before
                    or (decision.rate, decision.reverse_charge) != (quote.tax_rate, quote.reverse_charge)
                    or [m.pk for m in methods.get(customer.pk, [])] != [item.payment_method.pk]
                    or not _plain_quote(quote=quote, subscription=subscription, ctx=ctx)):
                continue
            actor = item.row.created_by
            method = item.payment_method
            item.change = PlanChange(
                customer=customer, subscription=subscription, quote=quote, status=PlanChange.Status.PENDING,
                direction=quote.direction, timing=quote.timing,
                from_price_id=quote.from_price_id, from_quantity=quote.from_quantity,
                to_price_id=quote.to_price_id, to_quantity=quote.to_quantity,
                effective_at=quote.effective_at, new_period_start=quote.new_period_start,
                new_period_end=quote.new_period_end, currency=quote.currency, lines=quote.lines,
                subtotal=quote.subtotal, tax_rate=quote.tax_rate, reverse_charge=quote.reverse_charge,
                tax=quote.tax, total=quote.total, return_url="",
                balance_applied=quote.balance_applied, amount_due=quote.amount_due,
                balance_after=quote.balance_after, target_discount_percent=quote.target_discount_percent,
                payment_method=method, payment_gateway=method.gateway, payment_method_reference=method.reference,
                off_session=False, reason_code=f"customer_{quote.direction}",
                created_by=actor if actor is not None and actor.is_authenticated else None, created_at=now,
            )
            item.subscription, item.quote = subscription, quote
            opened.append(item)
        if not opened:
            return []
        PlanChange.objects.bulk_create([i.change for i in opened])
        Quote.objects.filter(pk__in=[i.quote.pk for i in opened]).update(status=Quote.Status.ACCEPTED)
        AuditEvent.objects.bulk_create([
            audit_event_build(actor=i.row.created_by, action="plan_change.requested", target=i.change, now=now,
                              customer=i.change.customer, reason_code=i.change.reason_code,
                              after=_change_snapshot(i.change)) for i in opened])
    return opened


def _balances(customer_ids: list[int]) -> dict[tuple[int, str], Decimal]:
    return {(row["customer_id"], row["currency"]): row["total"] for row in
            BalanceEntry.objects.filter(customer_id__in=customer_ids).order_by()
            .values("customer_id", "currency").annotate(total=Sum("amount"))}


def _apply(*, items: list[_Item], now: datetime, ctx: ReadContext) -> list[_Item]:
    """As plan_change_record_payment applies a succeeded payment (plan_changes._apply) and _settle finishes the row,
    for the chunk in one transaction: locks customers → subscriptions → plan changes → rows, each in pk order.
    A change no longer pending, or that is not plain any more, is left to plan_change_record_payment."""
    from billing.services.scheduled_changes import applied_row_message
    from retention.models import Trial, WinBackEnrolment
    from retention.services.winback import winback_plan_change_applied

    with transaction.atomic():
        customers = {c.pk: c for c in Customer.objects.select_for_update(no_key=True)
                     .filter(pk__in=[i.change.customer_id for i in items]).order_by("pk")}
        subscriptions = {s.pk: s for s in Subscription.objects.select_for_update(of=("self",), no_key=True)
                         .filter(pk__in=[i.change.subscription_id for i in items]).order_by("pk")}
        changes = {c.pk: c for c in PlanChange.objects.select_for_update()
                   .filter(pk__in=[i.change.pk for i in items]).order_by("pk")}
        scheduled = set(PlanChange.objects.filter(subscription_id__in=list(subscriptions),
                                                  status=PlanChange.Status.SCHEDULED)
                        .values_list("subscription_id", flat=True))
        trying = set(Trial.objects.filter(customer_id__in=list(customers), status=Trial.Status.ACTIVE)
                     .values_list("customer_id", flat=True))
        taken = []
        for item in items:
            change = changes[item.change.pk]
            subscription = subscriptions[change.subscription_id]
            if (change.status != PlanChange.Status.PENDING or subscription.pk in scheduled
                    or change.customer_id in trying or subscription.status != Subscription.Status.ACTIVE):
                continue
            change.payment_method = item.payment_method
            item.change, item.subscription = change, subscription
            taken.append(item)
        if not taken:
            return []
        others: dict[int, list[tuple[int, int]]] = {}
        for customer_id, price_id, quantity in (
                Subscription.objects.filter(customer_id__in=[i.change.customer_id for i in taken],
                                            status__in=_usable())
                .exclude(pk__in=[i.subscription.pk for i in taken]).values_list("customer_id", "price_id", "quantity")):
            others.setdefault(customer_id, []).append((price_id, quantity))
        returning = set(WinBackEnrolment.objects.filter(
            customer_id__in=[i.change.customer_id for i in taken], status=WinBackEnrolment.Status.ACTIVE,
            campaign__stop_on_return=True).values_list("customer_id", flat=True))

        events, documents = [], []
        updated_at = timezone.now()
        for item in taken:  # as plan_changes._apply, without the statements
            change, subscription = item.change, item.subscription
            customer = customers[change.customer_id]
            actor = item.row.created_by
            mine = others.get(customer.pk, [])
            change.payment_reference = item.result.reference
            subscription.price = ctx.price(subscription.price_id)
            before = subscription_snapshot(subscription)
            entitled_before = _entitled(ctx=ctx, subscription=subscription, others=mine)
            _apply_terms(change=change, subscription=subscription, ctx=ctx)
            subscription.updated_at = updated_at
            _mark_applied(change=change, now=now, entitled_before=entitled_before,
                          entitled_after=_entitled(ctx=ctx, subscription=subscription, others=mine))
            documents.append(plan_change_invoice_build(change=change, customer=customer, now=now, actor=actor,
                                                       ctx=ctx, contract=None, corrected=None))
            events.append(audit_event_build(actor=actor, action="plan_change.applied", target=change, now=now,
                                            customer=customer, reason_code=change.reason_code, before=before,
                                            after=subscription_snapshot(subscription),
                                            message=applied_message(change)))
        rows_update(Subscription, [i.subscription for i in taken], _SUBSCRIPTION_FIELDS)
        rows_update(PlanChange, [i.change for i in taken], _CHANGE_FIELDS)
        entity = documents[0][0].legal_entity
        for (invoice, _lines), fields in zip(documents, issue_fields_for(entity=entity, kind=Invoice.Kind.INVOICE,
                                                                        now=now, count=len(documents)), strict=True):
            for name, value in fields.items():
                setattr(invoice, name, value)
        Invoice.objects.bulk_create([invoice for invoice, _lines in documents])
        for invoice, lines in documents:
            for line in lines:
                line.invoice = invoice
        InvoiceLine.objects.bulk_create([line for _invoice, lines in documents for line in lines])
        for invoice, _lines in documents:
            plan_change_invoice_enqueue(invoice)
        Customer.objects.filter(pk__in=[i.change.customer_id for i in taken]).update(
            entitlements_version=F("entitlements_version") + 1)  # entitlements_sync, for the chunk
        AuditEvent.objects.bulk_create(events)
        for item in taken:  # an upgrade converts active enrolments; for a customer with none it changes nothing
            if item.change.customer_id in returning:
                item.change.subscription = item.subscription
                item.change.from_price = ctx.price(item.change.from_price_id)
                winback_plan_change_applied(change=item.change, now=now)

        # As _settle → _finish (applied) for each row, in this transaction.
        rows = {r.pk: r for r in ScheduledChange.objects.select_for_update(of=("self",))
                .filter(pk__in=[i.row.pk for i in taken]).order_by("pk")}
        finished, row_events = [], []
        for item in taken:
            row = rows[item.row.pk]
            row.created_by = item.row.created_by
            item.done = row
            if row.status != ScheduledChange.Status.PROCESSING:
                continue  # another worker took over after the lease and finishes it: as _finish
            row.status = ScheduledChange.Status.APPLIED
            row.result_code = ""
            row.message = applied_row_message(item.change)[:500]
            row.finished_at = now
            row.retry_at = None
            row.plan_change = item.change
            finished.append(row)
            row_events.append(audit_event_build(actor=row.created_by, action="scheduled_change.applied", target=row,
                                                now=now, customer=customers[row.customer_id],
                                                reason_code="staff_scheduled", message=row.message))
        rows_update(ScheduledChange, finished, _ROW_FIELDS)
        AuditEvent.objects.bulk_create(row_events)
    return taken


def _usable() -> tuple[str, ...]:
    from entitlements.selectors import USABLE_STATUSES

    return tuple(USABLE_STATUSES)


def _single(item: _Item, *, now: datetime, ctx: ReadContext) -> ScheduledChange:
    """The single path from the claim on (its quote is stored: accepted there; an opened change is resumed)."""
    from billing.services.scheduled_changes import scheduled_change_apply_claimed

    return _guarded(item, lambda: scheduled_change_apply_claimed(row=_fresh(item.row.pk), now=now, ctx=ctx), now=now)


def _record(item: _Item, *, now: datetime, ctx: ReadContext) -> ScheduledChange:
    """As the single path after its gateway call: record the outcome, then settle the row."""
    from billing.services.scheduled_changes import _settle

    def record() -> ScheduledChange:
        change = plan_change_record_payment(plan_change_id=item.change.pk, result=item.result, now=now,
                                            actor=item.row.created_by, ctx=ctx,
                                            ids=(item.change.customer_id, item.change.subscription_id))
        return _settle(row_id=item.row.pk, change=change, now=now)

    return _guarded(item, record, now=now)


def _guarded(item: _Item, step: Callable[[], ScheduledChange], *, now: datetime) -> ScheduledChange:
    """As scheduled_changes_run: an unexpected error is remembered on the row, retried with backoff, then parked."""
    from billing.services.scheduled_changes import _later

    try:
        return step()
    except Exception as error:
        logger.exception("applying scheduled change %s failed", item.row.pk)
        return _later(item.row.pk, now=now, code="error", message=f"{type(error).__name__}: {error}",
                      drop_quote=False)


def _fresh(row_id: int) -> ScheduledChange:
    return ScheduledChange.objects.select_related("created_by", "quote").get(pk=row_id)
