"""Reads and query shapes for billing. Access rules live here: a user reaches only their customers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F, Prefetch, Q, QuerySet, Sum

from billing.models import (
    BalanceEntry,
    Contract,
    Customer,
    LegalEntity,
    Membership,
    PaymentMethod,
    Plan,
    PlanChange,
    PlanFeature,
    Price,
    Product,
    Quote,
    Subscription,
    TaxRate,
)
from billing.tax import TaxDecision, tax_decision

if TYPE_CHECKING:
    from billing.selectors_context import ReadContext


def customer_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Customer]:
    return Customer.objects.filter(memberships__user=user).order_by("name")


def membership_get(*, user: AbstractBaseUser, customer_id: int) -> Membership | None:
    """The user's membership of that customer, or None: callers answer 404 for None."""
    if not user.is_authenticated:
        return None
    return Membership.objects.select_related("customer").filter(user=user, customer_id=customer_id).first()


def subscription_get_for_user(*, user: AbstractBaseUser, subscription_id: int) -> Subscription | None:
    return (
        Subscription.objects.select_related("customer", "price__plan__product")
        .filter(pk=subscription_id, customer__memberships__user=user)
        .first()
    )


def subscription_get_with_role(*, user: AbstractBaseUser, subscription_id: int) -> tuple[Subscription, str] | None:
    """The subscription, if `user` is a member of its customer, with the user's role: one query."""
    row = (
        Subscription.objects.select_related("customer", "price__plan__product")
        .filter(pk=subscription_id, customer__memberships__user=user)
        .annotate(member_role=F("customer__memberships__role"))
        .first()
    )
    return (row, row.member_role) if row is not None else None


def subscription_list(*, customer: Customer) -> QuerySet[Subscription]:
    return Subscription.objects.filter(customer=customer).select_related("price__plan__product")


def quote_get_for_user(*, user: AbstractBaseUser, quote_id: int) -> Quote | None:
    return (
        Quote.objects.select_related("customer", "subscription", "from_price__plan", "to_price__plan__product")
        .filter(pk=quote_id, customer__memberships__user=user)
        .first()
    )


def plan_change_get_for_user(*, user: AbstractBaseUser, plan_change_id: int) -> PlanChange | None:
    return (
        PlanChange.objects.select_related("customer", "from_price__plan", "to_price__plan__product")
        .filter(pk=plan_change_id, customer__memberships__user=user)
        .first()
    )


def plan_change_list(*, subscription: Subscription) -> QuerySet[PlanChange]:
    return PlanChange.objects.filter(subscription=subscription).select_related("from_price__plan", "to_price__plan")


def plan_changes_due(*, now) -> QuerySet[PlanChange]:
    """Scheduled changes whose date has come, in date order."""
    return (PlanChange.objects.filter(status=PlanChange.Status.SCHEDULED, effective_at__lte=now, needs_attention=False)
            .filter(Q(sweep_retry_at__isnull=True) | Q(sweep_retry_at__lte=now)).order_by("effective_at", "id"))


def subscriptions_renewal_due(*, now) -> QuerySet[Subscription]:
    """Subscriptions whose period has ended and that go on (renew, or take their scheduled change)."""
    return (Subscription.objects.filter(status__in=Subscription.RENEWABLE, current_period_end__lte=now,
                                        needs_attention=False)
            .filter(Q(sweep_retry_at__isnull=True) | Q(sweep_retry_at__lte=now)).order_by("current_period_end", "id"))


def catalog_list(*, currency: str | None = None, product_code: str | None = None) -> QuerySet[Product]:
    prices = Price.objects.filter(is_active=True).order_by("currency", "interval").prefetch_related("tiers")
    if currency:
        prices = prices.filter(currency=currency)
    plans = (
        Plan.objects.filter(is_active=True)
        .order_by("rank")
        .prefetch_related(
            Prefetch("prices", queryset=prices),
            Prefetch("plan_features", queryset=PlanFeature.objects.select_related("feature")),
        )
    )
    products = Product.objects.filter(is_active=True).prefetch_related(Prefetch("plans", queryset=plans))
    if product_code:
        products = products.filter(code=product_code)
    return products


def price_get(*, plan_id: int, currency: str, interval: str) -> Price | None:
    """The plan's active price in that currency and interval, with its plan and product."""
    return (
        Price.objects.select_related("plan__product")
        .filter(plan_id=plan_id, currency=currency, interval=interval, is_active=True, plan__is_active=True,
                plan__product__is_active=True)
        .first()
    )


def tax_rate_for(*, country: str, on: date, region: str = "") -> TaxRate | None:
    """The rate in force on that day: the region's own rate if it has one, else the country's."""
    rates = TaxRate.objects.filter(country=country, valid_from__lte=on).order_by("-valid_from")
    if region:
        regional = rates.filter(region=region).first()
        if regional is not None:
            return regional
    return rates.filter(region="").first()


def legal_entity_default() -> LegalEntity | None:
    return LegalEntity.objects.filter(is_default=True).first()


def billing_date(*, customer: Customer, moment: datetime) -> date:
    """The calendar day of `moment` in the customer's billing timezone: the day tax is decided for."""
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(customer.timezone)).date()


def tax_decision_for(*, customer: Customer, on: date, entity: LegalEntity | None = None) -> TaxDecision:
    """The VAT treatment of a sale to `customer` on that day: recalculated every time, never copied."""
    entity = entity or legal_entity_default()
    rate = tax_rate_for(country=customer.country, on=on, region=customer.region)
    return tax_decision(seller_country=entity.country if entity else "", buyer_country=customer.country,
                        buyer_vat_id=customer.vat_id, country_rate=rate.rate if rate else None)


def tax_for_price(*, decision: TaxDecision, price: Price):
    """The engine's Tax for a price under a decision (None when no tax applies)."""
    from billing import proration

    if decision.rate is None:
        return None
    return proration.Tax(rate=decision.rate, inclusive=price.tax_behavior == Price.TaxBehavior.INCLUSIVE)


def customer_balance(*, customer: Customer, currency: str) -> Decimal:
    total = BalanceEntry.objects.filter(customer=customer, currency=currency).aggregate(s=Sum("amount"))["s"]
    return total if total is not None else Decimal(0)


def customer_balances(*, customer: Customer) -> dict[str, Decimal]:
    rows = BalanceEntry.objects.filter(customer=customer).values("currency").annotate(s=Sum("amount"))
    return {row["currency"]: row["s"] for row in rows.order_by("currency")}


def payment_method_default(*, customer: Customer) -> PaymentMethod | None:
    return PaymentMethod.objects.filter(customer=customer, is_default=True).first()


@dataclass(frozen=True)
class Renewal:
    at: datetime
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    currency: str
    price: Price
    quantity: int
    credit: Decimal = Decimal(0)  # an amount-off retention discount credited just before that invoice (≤ total)

    @property
    def to_pay(self) -> Decimal:
        """The total less the retention credit the invoice applies first (other balance not counted)."""
        return self.total - self.credit


def contract_in_force(*, subscription_id: int, at: datetime) -> Contract | None:
    """The contract governing the subscription at that instant (its negotiated prices prefetched), or None."""
    return (Contract.objects.filter(subscription_id=subscription_id, term_start__lte=at, term_end__gt=at)
            .prefetch_related("prices").first())


def price_item(*, price: Price, quantity: int, discount_percent: Decimal = Decimal(0),
               contract: Contract | None = None, unit_amount: Decimal | None = None):
    """The proration engine's view of a price at a quantity: the one place a Price becomes an Item.
    A tiered price's bands come along (from `prefetch_related("tiers")` when the caller prefetched them).

    A negotiated unit amount replaces the catalog's, bands included (every seat at that amount): `unit_amount`
    when given (an amendment's new price), else the `contract`'s negotiated price for this price, if any."""
    from billing import proration

    if unit_amount is None and contract is not None:
        unit_amount = contract.negotiated_unit_amount(price)
    if unit_amount is not None:
        return proration.Item(unit_amount=unit_amount, quantity=quantity, interval=price.interval,
                              discount_percent=discount_percent, name=str(price.plan))
    tiers = ()
    if price.is_tiered:
        tiers = tuple(proration.Tier(up_to=tier.up_to, unit_amount=tier.unit_amount, flat_amount=tier.flat_amount)
                      for tier in price.tiers.all())
    return proration.Item(unit_amount=price.unit_amount, quantity=quantity, interval=price.interval,
                          discount_percent=discount_percent, name=str(price.plan), tiers_mode=price.tiers_mode,
                          tiers=tiers)


@dataclass(frozen=True)
class PeriodPrice:
    """One whole billing period as a renewal invoices it: the item, its amount before tax, the tax decision and
    the totals (no balance applied)."""

    item: object  # proration.Item
    amount: Decimal
    decision: TaxDecision
    tax: object  # proration.Tax | None
    totals: object  # proration.Totals
    contract: Contract | None


_LOOK_UP = object()


def period_price(*, customer: Customer, subscription: Subscription, price: Price, quantity: int,
                 discount_percent: Decimal, start: datetime, entity: LegalEntity | None = None,
                 contract: Contract | None | object = _LOOK_UP, ctx: ReadContext | None = None) -> PeriodPrice:
    """The price of the period starting at `start`, exactly as `invoice_for_renewal` bills it (the one place a
    renewal is priced: the renewal invoice, the overview's next renewal and retention offers' effects).
    `contract`: the contract in force at `start` when the caller has read it (else looked up here); `ctx`: the unit
    of work's reads (legal entity and tax rates read once per chunk)."""
    from billing import proration

    if contract is _LOOK_UP:
        contract = contract_in_force(subscription_id=subscription.pk, at=start)  # negotiated prices
    item = price_item(price=price, quantity=quantity, discount_percent=discount_percent, contract=contract)
    amount = proration.period_amount(item, price.currency)
    on = billing_date(customer=customer, moment=start)
    decision = (ctx.tax_decision_for(customer=customer, on=on) if ctx is not None
                else tax_decision_for(customer=customer, on=on, entity=entity))
    tax = tax_for_price(decision=decision, price=price)
    totals = proration.totals_for(amount, tax, Decimal(0), price.currency)
    return PeriodPrice(item=item, amount=amount, decision=decision, tax=tax, totals=totals, contract=contract)


def discount_for_next_period(subscription: Subscription) -> Decimal:
    """The discount percent the next renewal bills at, as the renewal step rolls it (`_discount_roll`)."""
    if subscription.next_discount_percent is not None:
        return subscription.next_discount_percent
    if subscription.discount_periods_left == 0:
        return Decimal(0)
    return subscription.discount_percent


def subscription_next_renewal(*, subscription: Subscription, scheduled: PlanChange | None = None) -> Renewal | None:
    """What the next charged period will cost and when it starts: at the scheduled change's terms if one is due by
    then, else at the current terms, with the discount the renewal will apply and the amount-off retention credit it
    receives; after a pause when one covers the next period. None when the subscription ends instead."""
    if subscription.status == Subscription.Status.CANCELLED:
        return None
    if scheduled is not None and scheduled.direction == "cancel":
        return None
    price = scheduled.to_price if scheduled is not None else subscription.price
    quantity = scheduled.to_quantity if scheduled is not None else subscription.quantity
    at = subscription.current_period_end
    if subscription.pause_covers(at):
        at = subscription.paused_until
    priced = period_price(customer=subscription.customer, subscription=subscription, price=price, quantity=quantity,
                          discount_percent=discount_for_next_period(subscription), start=at)
    totals = priced.totals
    return Renewal(at=at, subtotal=totals.subtotal, tax=totals.tax, total=totals.total,
                   currency=price.currency, price=price, quantity=quantity,
                   credit=_retention_credit(subscription=subscription, currency=price.currency, total=totals.total))


def _retention_credit(*, subscription: Subscription, currency: str, total: Decimal) -> Decimal:
    """The amount-off retention discount the next renewal invoice receives, as the renewal step grants it."""
    from retention.services.recurring_credits import recurring_credit_capped, recurring_credit_pending

    credit = recurring_credit_pending(subscription_id=subscription.pk)
    if credit is None or credit.currency != currency:
        return Decimal(0)
    return recurring_credit_capped(amount=credit.amount, total=total)
