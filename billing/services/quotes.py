"""Quoting a plan change: eligibility first, then the exact amounts from billing.proration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils.translation import gettext as _

from billing import proration
from billing.errors import ChangeRefused
from billing.models import (
    INTERVAL_DAYS,
    INTERVAL_RANK,
    BalanceEntry,
    ChangeRule,
    Contract,
    Direction,
    LegalEntity,
    PlanChange,
    Price,
    Quote,
    Subscription,
    Timing,
)
from billing.money import minor_unit
from billing.selectors import (
    billing_date,
    contract_in_force,
    customer_balance,
    legal_entity_default,
    price_item,
    tax_decision_for,
    tax_for_price,
)
from billing.selectors_context import ReadContext
from billing.tax import TaxDecision, missing_rate


def change_direction(*, from_price: Price, from_quantity: int, to_price: Price, to_quantity: int) -> str:
    """Upgrade or downgrade by rank within a product; cross-grade across products.

    Within one rank (seat or interval changes) the normalised value per day decides (glossary);
    at equal value a longer interval counts as the upgrade.
    """
    from_plan, to_plan = from_price.plan, to_price.plan
    if from_plan.product_id != to_plan.product_id:
        return Direction.CROSSGRADE
    if to_plan.rank != from_plan.rank:
        return Direction.UPGRADE if to_plan.rank > from_plan.rank else Direction.DOWNGRADE
    def daily(price: Price, quantity: int) -> Decimal:  # a tiered price by its band sum
        return proration.tiered_amount(price_item(price=price, quantity=quantity)) / INTERVAL_DAYS[price.interval]

    daily_from, daily_to = daily(from_price, from_quantity), daily(to_price, to_quantity)
    if daily_to != daily_from:
        return Direction.UPGRADE if daily_to > daily_from else Direction.DOWNGRADE
    from_rank, to_rank = INTERVAL_RANK[from_price.interval], INTERVAL_RANK[to_price.interval]
    if to_rank != from_rank:
        return Direction.UPGRADE if to_rank > from_rank else Direction.DOWNGRADE
    return Direction.CROSSGRADE


def change_rule_find(*, from_price: Price, to_price: Price, direction: str,
                     rules: list[ChangeRule] | None = None) -> ChangeRule | None:
    """The first active rule, in position order, that matches the change."""
    if rules is None:
        rules = list(ChangeRule.objects.filter(is_active=True).order_by("position", "id"))
    facts = {
        "from_product_id": from_price.plan.product_id, "from_plan_id": from_price.plan_id,
        "from_interval": from_price.interval, "to_product_id": to_price.plan.product_id,
        "to_plan_id": to_price.plan_id, "to_interval": to_price.interval, "direction": direction,
    }
    for rule in rules:
        if all(getattr(rule, name) in (None, "", value) for name, value in facts.items()):
            return rule
    return None


@dataclass(frozen=True)
class _Eligible:
    direction: str
    rule: ChangeRule
    supersedes: list[int]


@dataclass(frozen=True)
class PricingContext:
    """What pricing reads besides the subscription and the price: read once, reused for every plan shown."""

    rules: list[ChangeRule]
    entity: LegalEntity | None
    tax: TaxDecision
    balance: Decimal
    open_changes: list[tuple[int, str, int]]  # (plan change id, status, subscription id): in flight or scheduled
    contract: Contract | None = None  # in force now: negotiated prices, commitments (billing.services.contracts)


def pricing_context(*, subscription: Subscription, now: datetime, ctx: ReadContext | None = None) -> PricingContext:
    """The rules, seller and tax rates come from `ctx` (read once per request or chunk); the customer's balance,
    open changes and contract are read for this subscription."""
    customer = subscription.customer
    if ctx is None:
        entity = legal_entity_default()
        rules = list(ChangeRule.objects.filter(is_active=True).order_by("position", "id"))
        tax = tax_decision_for(customer=customer, on=billing_date(customer=customer, moment=now), entity=entity)
    else:
        entity, rules = ctx.legal_entity(), ctx.change_rules()
        tax = ctx.tax_decision_for(customer=customer, on=billing_date(customer=customer, moment=now))
    return PricingContext(
        rules=rules,
        entity=entity,
        tax=tax,
        balance=customer_balance(customer=customer, currency=subscription.price.currency),
        open_changes=list(
            PlanChange.objects.filter(
                customer_id=customer.pk, status__in=(*PlanChange.IN_FLIGHT, PlanChange.Status.SCHEDULED)
            ).values_list("pk", "status", "subscription_id")
        ),
        contract=contract_in_force(subscription_id=subscription.pk, at=now),
    )


def pricing_contexts(*, subscriptions: list[Subscription], now: datetime,
                     ctx: ReadContext) -> dict[int, PricingContext]:
    """`pricing_context` of many subscriptions (a bulk job's preview), by subscription id: the balances, open
    changes and contracts of all of them in three queries per few thousand, the rest from `ctx`."""
    from django.db.models import Sum

    contexts: dict[int, PricingContext] = {}
    batch = 5000
    for index in range(0, len(subscriptions), batch):
        part = subscriptions[index:index + batch]
        customer_ids = {s.customer_id for s in part}
        balances = {(row["customer_id"], row["currency"]): row["total"] for row in
                    BalanceEntry.objects.filter(customer_id__in=customer_ids).order_by()
                    .values("customer_id", "currency").annotate(total=Sum("amount"))}
        open_changes: dict[int, list[tuple[int, str, int]]] = {}
        for customer_id, pk, status, subscription_id in PlanChange.objects.filter(
            customer_id__in=customer_ids, status__in=(*PlanChange.IN_FLIGHT, PlanChange.Status.SCHEDULED)
        ).values_list("customer_id", "pk", "status", "subscription_id"):
            open_changes.setdefault(customer_id, []).append((pk, status, subscription_id))
        contracts = {c.subscription_id: c for c in Contract.objects.filter(  # at most one per subscription
            subscription_id__in=[s.pk for s in part], term_start__lte=now, term_end__gt=now).prefetch_related("prices")}
        for subscription in part:
            customer = subscription.customer
            balance = balances.get((customer.pk, subscription.price.currency))
            contexts[subscription.pk] = PricingContext(
                rules=ctx.change_rules(), entity=ctx.legal_entity(),
                tax=ctx.tax_decision_for(customer=customer, on=billing_date(customer=customer, moment=now)),
                balance=balance if balance is not None else Decimal(0),
                open_changes=open_changes.get(customer.pk, []), contract=contracts.get(subscription.pk),
            )
    return contexts


def _check_eligibility(*, subscription: Subscription, to_price: Price, quantity: int, now: datetime,
                       context: PricingContext, cancel: bool = False) -> _Eligible:
    from_price = subscription.price
    plan = to_price.plan
    if subscription.status == Subscription.Status.PAST_DUE:
        raise ChangeRefused(
            "invoice_unpaid",
            _("A renewal invoice of this subscription is unpaid; pay it on the billing page before changing plans."),
        )
    if subscription.status not in (Subscription.Status.ACTIVE, Subscription.Status.TRIALING):
        raise ChangeRefused(
            "subscription_not_active",
            _("This subscription is %(status)s; only active or trialing subscriptions can change plans.")
            % {"status": subscription.get_status_display().lower()},
        )
    if not (subscription.current_period_start <= now < subscription.current_period_end):
        raise ChangeRefused(
            "period_not_current",
            _("The current billing period has ended and has not been renewed yet; plans can change after renewal."),
        )
    if cancel:  # leaving is always possible, paused or not
        return _eligible_rule(subscription=subscription, to_price=from_price, quantity=subscription.quantity,
                              context=context, direction=Direction.CANCEL)
    if subscription.is_paused_at(now):
        raise ChangeRefused(
            "subscription_paused",
            _("This subscription is paused until %(date)s; resume it first to change plans.")
            % {"date": subscription.paused_until.astimezone(ZoneInfo(subscription.customer.timezone)).date().isoformat()},
        )
    if not (to_price.is_active and plan.is_active and plan.product.is_active):
        raise ChangeRefused("price_unavailable", _("%(plan)s is not available any more.") % {"plan": plan})
    if to_price.currency != from_price.currency:
        raise ChangeRefused(
            "currency_unavailable",
            _("Your subscription is billed in %(current)s; this price is in %(target)s.")
            % {"current": from_price.currency, "target": to_price.currency},
        )
    if to_price.tax_behavior != from_price.tax_behavior:
        # A credit priced tax-exclusive cannot be netted against a tax-inclusive charge on one document.
        raise ChangeRefused(
            "tax_basis_mismatch",
            _("%(plan)s is priced %(basis)s, your current plan is not; contact support to make this change.")
            % {"plan": plan, "basis": to_price.get_tax_behavior_display().lower()},
        )
    if to_price.pricing == Price.Pricing.FLAT and quantity != 1:
        raise ChangeRefused("quantity_out_of_range",
                            _("%(plan)s is a flat price for one unit; you asked for %(quantity)s.")
                            % {"plan": plan, "quantity": quantity},
                            min_quantity=1, max_quantity=1)
    if quantity < to_price.min_quantity or (to_price.max_quantity is not None and quantity > to_price.max_quantity):
        values = {"plan": plan, "low": to_price.min_quantity, "high": to_price.max_quantity, "quantity": quantity}
        if to_price.max_quantity is not None:
            detail = _("%(plan)s allows %(low)s to %(high)s seats; you asked for %(quantity)s.") % values
        else:
            detail = _("%(plan)s allows at least %(low)s seats; you asked for %(quantity)s.") % values
        raise ChangeRefused(
            "quantity_out_of_range",
            detail,
            min_quantity=to_price.min_quantity, max_quantity=to_price.max_quantity,
        )
    if to_price.pricing == Price.Pricing.PER_SEAT and quantity < subscription.seats_in_use:
        raise ChangeRefused(
            "seats_in_use",
            _("%(used)s seats are in use; remove users before going down to %(quantity)s seats.")
            % {"used": subscription.seats_in_use, "quantity": quantity},
        )
    if to_price.pk == from_price.pk and quantity == subscription.quantity:
        raise ChangeRefused("no_change", _("You are already on %(plan)s with %(quantity)s × this price.")
                            % {"plan": plan, "quantity": quantity})
    if plan.product_id != subscription.product_id and (
        Subscription.objects.filter(customer_id=subscription.customer_id, product_id=plan.product_id)
        .exclude(status=Subscription.Status.CANCELLED).exists()
        or PlanChange.objects.filter(customer_id=subscription.customer_id, status=PlanChange.Status.SCHEDULED,
                                     to_price__plan__product_id=plan.product_id)
        .exclude(subscription=subscription).exists()
    ):
        raise ChangeRefused(
            "already_subscribed",
            _("You already subscribe to %(product)s; change that subscription instead.") % {"product": plan.product},
        )
    direction = change_direction(from_price=from_price, from_quantity=subscription.quantity,
                                 to_price=to_price, to_quantity=quantity)
    return _eligible_rule(subscription=subscription, to_price=to_price, quantity=quantity, context=context,
                          direction=direction)


def _eligible_rule(*, subscription: Subscription, to_price: Price, quantity: int, context: PricingContext,
                   direction: str) -> _Eligible:
    """The checks every change shares, cancellations included: nothing in flight, a rule that allows it."""
    open_changes = context.open_changes
    if any(status in PlanChange.IN_FLIGHT for _pk, status, _sub in open_changes):
        raise ChangeRefused(
            "change_in_progress",
            _("Another plan change is waiting for its payment; finish or cancel it first."),
        )
    rule = change_rule_find(from_price=subscription.price, to_price=to_price, direction=direction,
                            rules=context.rules)
    if rule is None or not rule.allowed:
        if rule is not None:
            reason = rule.refusal_reason
        elif direction == Direction.CANCEL:
            reason = _("Cancelling online is not offered.")
        else:
            reason = _("Changing to %(plan)s this way is not offered.") % {"plan": to_price.plan}
        raise ChangeRefused("change_not_allowed", reason, **({"rule": rule.name} if rule is not None else {}))
    supersedes = sorted(pk for pk, status, sub_id in open_changes
                        if status == PlanChange.Status.SCHEDULED and sub_id == subscription.pk)
    return _Eligible(direction=direction, rule=rule, supersedes=supersedes)


def _line_json(line: proration.Line, currency: str) -> dict[str, Any]:
    return {
        "kind": line.kind,
        "description": line.description,
        "amount": str(line.amount),
        "item_name": line.item_name,
        "quantity": line.quantity,
        "start": line.start.isoformat() if line.start else None,
        "end": line.end.isoformat() if line.end else None,
        "remaining": str(line.remaining),
        "total_units": str(line.total_units),
        "unit": line.unit,
        "mode": line.mode,
        **proration.tier_facts_json(line, currency),  # a tiered item's bands: tiers_mode, tiered_amount, bands
    }


def _item(price: Price, quantity: int, discount_percent: Decimal, contract: Contract | None = None) -> proration.Item:
    return price_item(price=price, quantity=quantity, discount_percent=discount_percent, contract=contract)


def quote_price(
    *,
    subscription: Subscription,
    to_price: Price | None,
    quantity: int,
    now: datetime,
    actor: AbstractBaseUser | None = None,
    context: PricingContext | None = None,
    cancel: bool = False,
    target_discount_percent: Decimal | None = None,
) -> Quote:
    """Price a change of `subscription` to `quantity` × `to_price` at `now`, without storing it.

    Eligibility first (ChangeRefused with a reason), then the amounts from billing.proration. The
    instant is `now` to the whole second, so every figure (second granularity included) can be
    re-derived by hand. The live prices of the portal and the stored quote come from this one function.
    `cancel=True` prices ending the subscription (its rule decides when, and whether unused time is credited).
    `target_discount_percent` (an offer's discount on the new terms' first period, e.g. a renewal-window annual
    offer) prices the target at that discount instead of the subscription's, for a change taking effect now; the
    renewal after it is at list price (accepting leaves the discount no periods: billing.services.renewals).
    """
    now = now.replace(microsecond=0)
    if target_discount_percent is not None:
        _check_target_discount(target_discount_percent, cancel=cancel)
    if cancel:
        to_price, quantity = subscription.price, subscription.quantity
    customer = subscription.customer
    if context is None:
        context = pricing_context(subscription=subscription, now=now)
    eligible = _check_eligibility(subscription=subscription, to_price=to_price, quantity=quantity, now=now,
                                  context=context, cancel=cancel)
    rule = eligible.rule
    currency = to_price.currency
    decision, balance, entity = context.tax, context.balance, context.entity
    if entity is not None and missing_rate(seller_country=entity.country, buyer_country=customer.country,
                                           decision=decision):
        raise ChangeRefused("tax_not_configured", _("We cannot price this yet: no VAT rate is set up for your "
                                                    "country. Please contact support."))
    if context.contract is not None:  # commitments of the contract in force: refused with its end date
        from billing.services.contracts import contract_check_change

        contract_check_change(contract=context.contract, subscription=subscription, to_price=to_price,
                              quantity=quantity, cancel=cancel,
                              effective_at=now if rule.timing == Timing.NOW else subscription.current_period_end)
    tax = tax_for_price(decision=decision, price=to_price)
    current = _item(subscription.price, subscription.quantity, subscription.discount_percent, context.contract)
    target_discount = subscription.discount_percent if target_discount_percent is None else target_discount_percent
    target = _item(to_price, quantity, target_discount, context.contract)
    tz = ZoneInfo(customer.timezone)
    credit_mode, charge_mode = rule.credit, rule.charge
    if subscription.status == Subscription.Status.TRIALING:
        # Trial time was never paid for: nothing to credit, nothing to charge; the trial goes on on the new plan.
        credit_mode = charge_mode = "none"
    if cancel:
        charge_mode = "none"  # nothing new is bought; only unused time may be credited

    if rule.timing == Timing.NOW:
        result = proration.prorate(proration.Change(
            currency=currency, timezone=customer.timezone, granularity=customer.granularity,
            period_start=subscription.current_period_start, period_end=subscription.current_period_end,
            change_at=now, current=current, target=target, tax=tax, customer_balance=balance,
            credit=credit_mode, charge=charge_mode,
        ))
        lines, totals = [_line_json(line, currency) for line in result.lines], result.totals
        effective_at, new_start, new_end = now, result.period_start, result.period_end
        if subscription.status == Subscription.Status.TRIALING or cancel:
            new_start, new_end = subscription.current_period_start, subscription.current_period_end  # trial end stays
    else:
        if target_discount_percent is not None:  # it would be billed by a renewal, which knows nothing of it
            raise ChangeRefused("discount_needs_immediate_change",
                                _("This offer applies only to a change that takes effect now."))
        # "At period end" is not prorated at all: nothing is due now.
        zero = Decimal(0).scaleb(-minor_unit(currency))
        lines, totals = [], proration.totals_for(zero, tax, balance, currency)
        effective_at = new_start = subscription.current_period_end
        new_end = proration.add_interval(new_start, to_price.interval, tz)
        if cancel:
            new_start, new_end = subscription.current_period_start, subscription.current_period_end

    if cancel:
        target = proration.Item(unit_amount=Decimal(0), quantity=0, interval=to_price.interval)  # no renewal
    elif context.contract is not None and not context.contract.in_force(new_end if rule.timing == Timing.NOW
                                                                       else new_start):
        target = _item(to_price, quantity, subscription.discount_percent)  # the term ends by then: catalog prices
    if target_discount_percent is not None and not cancel:
        target = _item(to_price, quantity, Decimal(0), context.contract)  # the first period only: then list price
        if context.contract is not None and not context.contract.in_force(new_end):
            target = _item(to_price, quantity, Decimal(0))
    renewal = proration.totals_for(proration.period_amount(target, currency), tax, Decimal(0), currency)
    return Quote(
        customer=customer, subscription=subscription, subscription_version=subscription.version,
        created_by=actor if actor is not None and actor.is_authenticated else None,
        created_at=now, expires_at=now + settings.QUOTE_TTL,
        from_price=subscription.price, from_quantity=subscription.quantity, to_price=to_price,
        to_quantity=quantity, direction=eligible.direction, change_rule=rule, timing=rule.timing,
        credit_mode=credit_mode, charge_mode=charge_mode, requires_approval=rule.requires_approval,
        effective_at=effective_at, currency=currency, lines=lines,
        subtotal=totals.subtotal, tax_rate=decision.rate, reverse_charge=decision.reverse_charge,
        tax_inclusive=bool(tax and tax.inclusive), tax=totals.tax, total=totals.total,
        balance_before=balance, balance_applied=totals.balance_applied, amount_due=totals.amount_due,
        balance_after=totals.balance_after, new_period_start=new_start, new_period_end=new_end,
        next_period_amount=renewal.total, next_period_tax=renewal.tax, supersedes=eligible.supersedes,
        target_discount_percent=target_discount_percent,
    )


def _check_target_discount(value: Decimal, *, cancel: bool) -> None:
    if cancel:
        raise ChangeRefused("discount_not_allowed", _("A cancellation cannot carry a discount."))
    if not isinstance(value, Decimal) or not value.is_finite() or not (0 <= value < 100) \
            or value != value.quantize(Decimal("0.01")):
        raise ChangeRefused("invalid_discount",
                            _("The offer's discount must be a percentage from 0 to 99.99 with at most two decimals."))


def quote_create(
    *,
    subscription: Subscription,
    to_price: Price | None,
    quantity: int,
    now: datetime,
    actor: AbstractBaseUser | None,
    cancel: bool = False,
    target_discount_percent: Decimal | None = None,
    ctx: ReadContext | None = None,
) -> Quote:
    """Price a change (`quote_price`) and store it as a quote that expires after QUOTE_TTL."""
    context = pricing_context(subscription=subscription, now=now.replace(microsecond=0), ctx=ctx) if ctx else None
    quote = quote_price(subscription=subscription, to_price=to_price, quantity=quantity, now=now, actor=actor,
                        cancel=cancel, target_discount_percent=target_discount_percent, context=context)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # A quote is an offer, not money moved: losing the last few to a crash only means asking
            # again, so its commit need not wait for the WAL flush.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
        quote.save(force_insert=True)
    return quote
