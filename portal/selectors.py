"""What the portal pages show, assembled from billing's selectors and its pricing service (read-only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Prefetch, QuerySet

from billing.errors import ChangeRefused
from billing.models import (
    Customer,
    Feature,
    Invoice,
    Membership,
    Plan,
    PlanChange,
    PlanFeature,
    Price,
    Quote,
    Subscription,
)
from billing.proration import tiered_amount
from billing.selectors import Renewal, customer_balances, price_item, subscription_next_renewal
from billing.services.quotes import PricingContext, pricing_context, quote_price
from billing.templatetags.billing_format import number
from entitlements.selectors import Entitlement, entitlements_for_customer
from retention.models import RecurringCredit

BILLING_ROLES = Membership.BILLING_ROLES


def membership_for(*, user: AbstractBaseUser, customer_id: int) -> Membership | None:
    return Membership.objects.select_related("customer").filter(user=user, customer_id=customer_id).first()


def memberships_of(*, user: AbstractBaseUser) -> QuerySet[Membership]:
    return Membership.objects.select_related("customer").filter(user=user).order_by("customer__name")


def billing_contacts(*, customer: Customer) -> list[str]:
    """Who can change plans, for the note members see."""
    rows = (Membership.objects.filter(customer=customer, role__in=BILLING_ROLES).select_related("user")
            .order_by("role", "user__username"))
    return [m.user.get_full_name() or m.user.get_username() for m in rows]


@dataclass
class SubscriptionSummary:
    subscription: Subscription
    scheduled: PlanChange | None
    renewal: Renewal | None
    seats_allowed: int | None
    retention_credit: RecurringCredit | None = None  # an amount-off retention discount still to come


@dataclass
class Overview:
    customer: Customer
    subscriptions: list[SubscriptionSummary]
    balances: dict[str, Decimal]
    entitlements: list[Entitlement]


def overview_get(*, customer: Customer) -> Overview:
    customer = Customer.objects.get(pk=customer.pk)  # fresh entitlements version
    subscriptions = list(Subscription.objects.filter(customer=customer).select_related("price__plan__product")
                         .order_by("status", "product__sort_order"))
    scheduled = {c.subscription_id: c for c in PlanChange.objects.filter(
        customer=customer, status=PlanChange.Status.SCHEDULED).select_related("to_price__plan").order_by("effective_at")}
    credits = {c.subscription_id: c for c in RecurringCredit.objects.filter(
        subscription__customer=customer, periods_left__gt=0).order_by("-pk")}
    entitlements = entitlements_for_customer(customer=customer)
    seats = next((e.limit for e in entitlements if e.feature == "seats"), None)
    return Overview(
        customer=customer,
        subscriptions=[SubscriptionSummary(s, scheduled.get(s.pk), subscription_next_renewal(
            subscription=s, scheduled=scheduled.get(s.pk)), seats, credits.get(s.pk)) for s in subscriptions],
        balances={cur: amount for cur, amount in customer_balances(customer=customer).items() if amount},
        entitlements=entitlements,
    )


@dataclass
class PlanOffer:
    """One plan as the plans page shows it, priced for the chosen interval and seats."""

    plan: Plan
    price: Price | None
    seats: int
    is_current: bool
    quote: Quote | None = None
    refusal: str = ""
    saving: tuple[Decimal, Decimal] | None = None  # (amount a year, fraction) of annual against monthly
    seat_error: str = ""  # the customer's seat count could not be read
    negotiated: Decimal | None = None  # the contract's unit amount for this price, if it has one
    gains: list[str] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)

    @property
    def min_seats(self) -> int:
        return self.price.min_quantity if self.price else 1

    @property
    def max_seats(self) -> int | None:
        return self.price.max_quantity if self.price else None

    @property
    def per_seat(self) -> bool:
        return self.price is not None and self.price.pricing == Price.Pricing.PER_SEAT


@dataclass
class PlansPage:
    subscription: Subscription
    interval: str
    intervals: list[str]
    features: list[Feature]
    values: dict[tuple[int, int], PlanFeature]  # (plan id, feature id) → value
    offers: list[PlanOffer]
    crossgrades: list[PlanOffer]


def _clamp_seats(price: Price | None, wanted: int) -> int:
    if price is None or price.pricing == Price.Pricing.FLAT:
        return 1
    seats = max(wanted, price.min_quantity)
    return min(seats, price.max_quantity) if price.max_quantity is not None else seats


def _annual_saving(plan: Plan, seats: int, prices: dict[tuple[int, str], Price]) -> tuple[Decimal, Decimal] | None:
    monthly, yearly = prices.get((plan.pk, "month")), prices.get((plan.pk, "year"))
    if monthly is None or yearly is None:
        return None
    units = seats if monthly.pricing == Price.Pricing.PER_SEAT else 1
    twelve_months = tiered_amount(price_item(price=monthly, quantity=units)) * 12  # a tiered price by its bands
    if twelve_months == 0:
        return None
    saving = twelve_months - tiered_amount(price_item(price=yearly, quantity=units))
    if saving <= 0:
        return None
    fraction = (saving / twelve_months).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)  # 16.7 %
    return saving, fraction


def offer_price(*, subscription: Subscription, plan: Plan, price: Price | None, seats: int, now: datetime,
                context: PricingContext, prices: dict[tuple[int, str], Price] | None = None) -> PlanOffer:
    """Price one plan for the plans page (the htmx partial re-prices exactly this)."""
    offer = PlanOffer(plan=plan, price=price, seats=seats,
                      is_current=price is not None and price.pk == subscription.price_id
                      and seats == subscription.quantity)
    if price is None:
        offer.refusal = "not_sold"
        return offer
    if context.contract is not None:
        offer.negotiated = context.contract.negotiated_unit_amount(price)
    if prices is not None:
        offer.saving = _annual_saving(plan, seats, prices)
    if offer.is_current:
        return offer
    try:
        offer.quote = quote_price(subscription=subscription, to_price=price, quantity=seats, now=now, context=context)
    except ChangeRefused as refusal:
        offer.refusal = refusal.detail
    return offer


def plans_page_get(*, subscription: Subscription, interval: str, seats: dict[int, int], now: datetime,
                   seat_errors: dict[int, str] | None = None) -> PlansPage:
    """Every tier of the subscription's product (and the other products as cross-grades), priced live.

    `seats` are the customer's own counts per plan: priced as given, so a count outside a plan's limits
    is refused with the reason. Plans without a count start at the subscription's seats, within limits.
    """
    seat_errors = seat_errors or {}
    currency = subscription.price.currency
    plans = list(Plan.objects.filter(is_active=True, product__is_active=True).select_related("product")
                 .prefetch_related(Prefetch("plan_features", queryset=PlanFeature.objects.select_related("feature")))
                 .order_by("product__sort_order", "rank"))
    prices = {(p.plan_id, p.interval): p for p in Price.objects.filter(
        is_active=True, currency=currency, plan__in=plans).select_related("plan__product").prefetch_related("tiers")}
    intervals = [i for i in ("month", "quarter", "year")
                 if any(key[1] == i for key in prices)]
    context = pricing_context(subscription=subscription, now=now)
    current_values = {pf.feature_id: pf for pf in subscription.price.plan.plan_features.select_related("feature")}
    offers, crossgrades = [], []
    subscribed = set(Subscription.objects.filter(customer=subscription.customer_id)
                     .exclude(status=Subscription.Status.CANCELLED).values_list("product_id", flat=True))
    for plan in plans:
        if plan.product_id != subscription.product_id and plan.product_id in subscribed:
            continue
        price = prices.get((plan.pk, interval))
        chosen = seats.get(plan.pk)
        count = chosen if chosen is not None and plan.pk not in seat_errors else \
            _clamp_seats(price, subscription.quantity)
        offer = offer_price(subscription=subscription, plan=plan, price=price, seats=count, now=now,
                            context=context, prices=prices)
        if plan.pk in seat_errors:
            offer.seat_error, offer.quote = seat_errors[plan.pk], None
        if plan.product_id == subscription.product_id:
            offers.append(offer)
        else:
            offer.gains, offer.losses = _gains_and_losses(current_values, plan)
            crossgrades.append(offer)
    features = list(Feature.objects.order_by("sort_order", "code"))
    values = {(pf.plan_id, pf.feature_id): pf for plan in plans for pf in plan.plan_features.all()}
    return PlansPage(subscription=subscription, interval=interval, intervals=intervals, features=features,
                     values=values, offers=offers, crossgrades=crossgrades)


def _gains_and_losses(current: dict[int, PlanFeature], plan: Plan) -> tuple[list[str], list[str]]:
    gains, losses = [], []
    target = {pf.feature_id: pf for pf in plan.plan_features.all()}
    for feature_id in sorted(set(current) | set(target)):
        before, after = current.get(feature_id), target.get(feature_id)
        had = before is not None and before.enabled
        has = after is not None and after.enabled
        name = (after or before).feature.name
        if has and not had:
            gains.append(name)
        elif had and not has:
            losses.append(name)
        elif had and has and before.feature.kind == Feature.Kind.LIMIT:
            old, new = before.limit_value, after.limit_value
            if old is not None and (new is None or new > old):
                gains.append(f"{name}: {'∞' if new is None else number(new)} {after.feature.unit}".strip())
            elif new is not None and (old is None or new < old):
                losses.append(f"{name}: {number(new)} {after.feature.unit}".strip())
    return gains, losses


def unlocked_features(*, change: PlanChange, customer: Customer) -> tuple[list[Entitlement], set[str]]:
    """The account's entitlements now, and which ones the change added (recorded when it applied)."""
    customer = Customer.objects.get(pk=customer.pk)
    return entitlements_for_customer(customer=customer), set(change.entitlements_added)


def billing_history(*, customer: Customer) -> QuerySet[PlanChange]:
    documents = Invoice.objects.exclude(status=Invoice.Status.DRAFT).order_by("pk")
    return (PlanChange.objects.filter(customer=customer)
            .select_related("from_price__plan__product", "to_price__plan__product")
            .prefetch_related(Prefetch("invoices", queryset=documents)).order_by("-created_at", "-pk"))


def invoices_unpaid(*, customer: Customer) -> list[Invoice]:
    """Issued invoices still waiting for payment (renewals being collected), oldest first, with their last try."""
    invoices = list(Invoice.objects.filter(customer=customer, kind=Invoice.Kind.INVOICE, status=Invoice.Status.ISSUED,
                                           amount_due__gt=0).select_related("subscription__price__plan__product")
                    .prefetch_related("payment_attempts").order_by("issued_at", "pk"))
    for invoice in invoices:
        attempts = list(invoice.payment_attempts.all())
        invoice.last_attempt = attempts[-1] if attempts else None
    return invoices


def invoice_list(*, customer: Customer) -> QuerySet[Invoice]:
    """Every issued document of the account, newest first (renewals and plan changes alike)."""
    return (Invoice.objects.filter(customer=customer).exclude(status=Invoice.Status.DRAFT)
            .order_by("-issued_at", "-pk"))
