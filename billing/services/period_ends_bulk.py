"""The sweep's period-end step for a whole chunk at once, for the common case.

`period_ends_run` hands its chunk here first. In one transaction, under the same locks the single step takes
(customers → subscriptions → plan changes, each in primary-key order), this applies every subscription whose step is
the plain one: exactly one scheduled change due at its period end, to a price of the same product, then the new
period's invoice, with no balance to apply, no contract, no payment under way, no trial, no pause, no offer discount
on the change, no amount-off retention credit pending (the single step credits it to the balance before the invoice:
retention.services.recurring_credits) and nothing free. It writes what the single step writes
(billing.services.renewals: the subscription's new terms and its renewal discount rolled, the applied plan change
with its entitlements gained, the customer's entitlements version, one `plan_change.applied` audit event, the win-
back hook, the renewal invoice and its line numbered from the same gapless series, the PDF and the collection queued
after commit), through the same helpers, with a few statements per chunk instead of ~20 per subscription. Everything
else (and the whole chunk if anything here fails) goes through the single step, unchanged. Exactly once holds as
before: the chunk's steps commit together or not at all, and a second worker that gets the same chunk waits for the
locks, then finds those periods already entered.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from billing import proration
from billing.models import (
    AuditEvent,
    BalanceEntry,
    Contract,
    Customer,
    Direction,
    Invoice,
    InvoiceLine,
    PlanChange,
    Price,
    Subscription,
    Timing,
)
from billing.selectors_context import ReadContext
from billing.services.audit import audit_event_build, subscription_snapshot
from billing.services.invoices import issue_fields_for, renewal_invoice_build, renewal_invoice_enqueue
from billing.services.plan_changes import _apply_terms, _mark_applied, applied_message
from entitlements.selectors import USABLE_STATUSES, Entitlement, entitlements_from

_SUBSCRIPTION_FIELDS = ["price", "product", "quantity", "current_period_start", "current_period_end", "version",
                        "discount_percent", "discount_periods_left", "next_discount_percent", "next_discount_periods",
                        "sweep_failures", "sweep_error", "sweep_retry_at", "updated_at"]
_CHANGE_FIELDS = ["status", "applied_at", "next_action_url", "failure_code", "failure_message",
                  "entitlements_added", "new_period_start", "new_period_end", "sweep_failures", "sweep_error",
                  "sweep_retry_at"]


def period_ends_apply_set(*, subscription_ids: list[int], now: datetime, ctx: ReadContext) -> dict[int, bool]:
    """Take the plain period-end steps of the chunk together. Returns {subscription id: whether another period is
    already due after it} for the steps taken; the caller runs every other subscription through the single step."""
    from billing.services.renewals import _discount_roll, _sweep_succeeded
    from retention.models import RecurringCredit, Trial
    from retention.services.winback import winback_plan_change_applied

    customer_of = dict(Subscription.objects.filter(pk__in=subscription_ids).values_list("pk", "customer_id"))
    per_customer = Counter(customer_of.values())
    with transaction.atomic():
        customers = {c.pk: c for c in Customer.objects.select_for_update(no_key=True)
                     .filter(pk__in=set(customer_of.values())).order_by("pk")}
        subscriptions = {s.pk: s for s in Subscription.objects.select_for_update(of=("self",), no_key=True)
                         .filter(pk__in=list(customer_of)).order_by("pk")}
        # One subscription per customer (entitlements are computed per customer), due now.
        candidates = [subscriptions[pk] for pk in subscription_ids if pk in subscriptions
                      and per_customer[customer_of[pk]] == 1
                      and subscriptions[pk].status in Subscription.RENEWABLE
                      and subscriptions[pk].current_period_end <= now]
        if not candidates:
            return {}
        in_flight = set(PlanChange.objects.filter(customer_id__in=[s.customer_id for s in candidates],
                                                  status__in=PlanChange.IN_FLIGHT).values_list("customer_id", flat=True))
        candidates = [s for s in candidates if s.customer_id not in in_flight]
        scheduled: dict[int, list[PlanChange]] = {}
        for change in (PlanChange.objects.select_for_update(of=("self",))
                       .filter(subscription_id__in=[s.pk for s in candidates], status=PlanChange.Status.SCHEDULED)
                       .order_by("pk")):
            scheduled.setdefault(change.subscription_id, []).append(change)
        with_contract = set(Contract.objects.filter(subscription_id__in=[s.pk for s in candidates])
                            .values_list("subscription_id", flat=True))
        # A trial grants features the in-memory entitlements below leave out: such customers go step by step.
        trying = set(Trial.objects.filter(customer_id__in=[s.customer_id for s in candidates],
                                          status=Trial.Status.ACTIVE).values_list("customer_id", flat=True))
        credit = {row["customer_id"] for row in BalanceEntry.objects
                  .filter(customer_id__in=[s.customer_id for s in candidates]).order_by()
                  .values("customer_id", "currency").annotate(total=Sum("amount"))
                  if row["total"] > 0}  # a credit in any currency: the single step applies it
        # An amount-off retention discount still to grant: a balance entry before the invoice, step by step.
        crediting = set(RecurringCredit.objects.filter(subscription_id__in=[s.pk for s in candidates],
                                                       periods_left__gt=0).values_list("subscription_id", flat=True))
        plain: list[tuple[Subscription, PlanChange]] = []
        for subscription in candidates:
            due = [c for c in scheduled.get(subscription.pk, []) if c.effective_at <= subscription.current_period_end]
            if (len(due) != 1 or subscription.pk in with_contract or subscription.customer_id in credit
                    or subscription.customer_id in trying or subscription.paused_until is not None
                    or subscription.pk in crediting):
                continue
            change = due[0]
            if (change.direction == Direction.CANCEL or change.timing == Timing.NOW
                    or change.effective_at != subscription.current_period_end
                    or change.balance_applied != 0 or change.total < 0 or change.target_discount_percent is not None
                    or ctx.price(change.to_price_id).plan.product_id != subscription.product_id):
                continue
            plain.append((subscription, change))
        if not plain:
            return {}
        others: dict[int, list[tuple[int, int]]] = {}
        for customer_id, price_id, quantity in (
                Subscription.objects.filter(customer_id__in=[s.customer_id for s, _c in plain],
                                            status__in=USABLE_STATUSES)
                .exclude(pk__in=[s.pk for s, _c in plain]).values_list("customer_id", "price_id", "quantity")):
            others.setdefault(customer_id, []).append((price_id, quantity))

        events, documents, taken = [], [], {}
        updated_at = timezone.now()
        for subscription, change in plain:
            customer = customers[subscription.customer_id]
            mine = others.get(customer.pk, [])
            # As renewals._renew_locked → _scheduled_apply_locked → plan_changes._apply, without the statements.
            subscription.price = ctx.price(subscription.price_id)
            before = subscription_snapshot(subscription)
            entitled_before = _entitled(ctx=ctx, subscription=subscription, others=mine)
            _sweep_succeeded(subscription)
            _sweep_succeeded(change)
            change.new_period_start = change.effective_at
            change.new_period_end = proration.add_interval(change.effective_at, ctx.price(change.to_price_id).interval,
                                                           ZoneInfo(customer.timezone))
            _apply_terms(change=change, subscription=subscription, ctx=ctx)
            subscription.updated_at = updated_at
            _mark_applied(change=change, now=now, entitled_before=entitled_before,
                          entitled_after=_entitled(ctx=ctx, subscription=subscription, others=mine))
            events.append(audit_event_build(actor=None, action="plan_change.applied", target=change, now=now,
                                            customer=customer, reason_code=change.reason_code, before=before,
                                            after=subscription_snapshot(subscription),
                                            message=applied_message(change)))
            _discount_roll(subscription)  # as the single step does before invoicing the period entered
            built = renewal_invoice_build(customer=customer, subscription=subscription, now=now, ctx=ctx,
                                          contract=None, balance_of=lambda _currency: Decimal(0))
            if built is None:  # a free period: nothing to number (none in the plain case; kept for safety)
                raise _NotPlain(subscription.pk)
            documents.append(built)
            taken[subscription.pk] = subscription.status in Subscription.RENEWABLE and \
                subscription.current_period_end <= now

        Subscription.objects.bulk_update([s for s, _c in plain], _SUBSCRIPTION_FIELDS)
        PlanChange.objects.bulk_update([c for _s, c in plain], _CHANGE_FIELDS)
        Customer.objects.filter(pk__in=[s.customer_id for s, _c in plain]).update(
            entitlements_version=F("entitlements_version") + 1)
        AuditEvent.objects.bulk_create(events)
        for _subscription, change in plain:  # as plan_changes._apply ends: win-back enrolment (its own savepoint)
            if change.from_price_id is not None:
                change.from_price = ctx.price(change.from_price_id)
            winback_plan_change_applied(change=change, now=now)
        entity = documents[0][0].legal_entity
        for (invoice, _line), fields in zip(documents, issue_fields_for(entity=entity, kind=Invoice.Kind.INVOICE,
                                                                       now=now, count=len(documents)), strict=True):
            for name, value in fields.items():
                setattr(invoice, name, value)
        Invoice.objects.bulk_create([invoice for invoice, _line in documents])
        for invoice, line in documents:
            line.invoice = invoice
        InvoiceLine.objects.bulk_create([line for _invoice, line in documents])
        for invoice, _line in documents:
            renewal_invoice_enqueue(invoice)
    return taken


def _entitled(*, ctx: ReadContext, subscription: Subscription, others: list[tuple[int, int]]) -> list[Entitlement]:
    """What entitlements_compute says now of the customer's features and limits (what entitlements_gained compares),
    with `subscription` as it is in memory and its other usable subscriptions `others` ((price id, quantity), read in
    this transaction), for a customer with no trial (the plain case): the same function over the same grants. Usage
    is left out: it changes neither whether a feature is granted nor its limit."""
    holdings = [(ctx.price(price_id), quantity) for price_id, quantity in others]
    if subscription.status in USABLE_STATUSES:
        holdings.append((ctx.price(subscription.price_id), subscription.quantity))
    grants_of = [(price.plan_id, f"plan:{price.plan.product.code}/{price.plan.code}",
                  quantity if price.pricing == Price.Pricing.PER_SEAT else None) for price, quantity in holdings]
    plan_features: dict[int, list] = {}
    for grant in ctx.plan_features({plan_id for plan_id, _source, _seats in grants_of}):
        plan_features.setdefault(grant.plan_id, []).append(grant)
    return entitlements_from(grants_of=grants_of, plan_features=plan_features, features=ctx.features(), usage={},
                             seats_used=None)


class _NotPlain(Exception):
    """A subscription turned out not to be the plain case: the caller runs the chunk step by step."""


