"""factory_boy factories for billing. `subscription_setup()` builds a realistic small catalog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import factory
from django.contrib.auth import get_user_model

from billing.models import (
    ChangeRule,
    Customer,
    Feature,
    LegalEntity,
    Membership,
    PaymentMethod,
    Plan,
    PlanFeature,
    Price,
    PriceTier,
    Product,
    Subscription,
    TaxRate,
)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw-for-tests")


def staff_user(*codenames: str, username: str = "staff"):
    """A staff user with these billing permissions, freshly read (no stale permission cache)."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username=username, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="billing", codename__in=codenames))
    return type(user).objects.get(pk=user.pk)


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    code = factory.Sequence(lambda n: f"product-{n}")
    name = factory.Sequence(lambda n: f"Product {n}")


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan

    product = factory.SubFactory(ProductFactory)
    code = factory.Sequence(lambda n: f"plan-{n}")
    name = factory.Sequence(lambda n: f"Plan {n}")
    rank = factory.Sequence(lambda n: n + 1)


class PriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Price

    plan = factory.SubFactory(PlanFactory)
    currency = "EUR"
    interval = "month"
    unit_amount = Decimal("10.00")
    pricing = Price.Pricing.PER_SEAT
    min_quantity = 1
    max_quantity = 50


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.Sequence(lambda n: f"billing{n}@example.com")
    currency = "EUR"
    country = "DE"
    timezone = "Europe/Berlin"
    granularity = "day"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    customer = factory.SubFactory(CustomerFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.OWNER


class PaymentMethodFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PaymentMethod

    customer = factory.SubFactory(CustomerFactory)
    gateway = "local"
    reference = "pm_card_visa"
    label = "Visa ending 4242"
    is_default = True


BERLIN = ZoneInfo("Europe/Berlin")
PERIOD_START = datetime(2026, 1, 1, tzinfo=BERLIN)
PERIOD_END = datetime(2026, 2, 1, tzinfo=BERLIN)
MID_JANUARY = datetime(2026, 1, 16, 12, 0, tzinfo=BERLIN)


def default_rules() -> None:
    """The seeded defaults: interval lengthening now, shortening at period end, upgrades and
    cross-grades now and prorated, downgrades at period end."""
    rows = [
        (20, "Monthly to annual", {"from_interval": "month", "to_interval": "year"}, {}),
        (30, "Annual to monthly", {"from_interval": "year", "to_interval": "month"},
         {"timing": "period_end", "charge": "none", "credit": "none"}),
        (100, "Upgrades", {"direction": "upgrade"}, {}),
        (110, "Cross-grades", {"direction": "crossgrade"}, {}),
        (120, "Downgrades", {"direction": "downgrade"}, {"timing": "period_end", "charge": "none", "credit": "none"}),
        (130, "Cancellations", {"direction": "cancel"}, {"timing": "period_end", "charge": "none", "credit": "none"}),
    ]
    for position, name, match, decision in rows:
        ChangeRule.objects.create(position=position, name=name, **match, **decision)


@dataclass
class Setup:
    """A customer (owner, billing admin, member) on Basic × 5 monthly, with Pro/Business/yearly prices."""

    customer: Customer
    owner: object
    billing_admin: object
    member: object
    product: Product
    basic: Plan
    pro: Plan
    business: Plan
    basic_month: Price
    pro_month: Price
    business_month: Price
    pro_year: Price
    subscription: Subscription
    feature_sso: Feature
    feature_storage: Feature


def subscription_setup(*, payment_method: str = "pm_card_visa", tax_rate: str | None = "0.19",
                       granularity: str = "day", rules: bool = True) -> Setup:
    customer = CustomerFactory(granularity=granularity)
    owner = MembershipFactory(customer=customer, role=Membership.Role.OWNER).user
    billing_admin = MembershipFactory(customer=customer, role=Membership.Role.BILLING_ADMIN).user
    member = MembershipFactory(customer=customer, role=Membership.Role.MEMBER).user
    PaymentMethodFactory(customer=customer, reference=payment_method)
    product = ProductFactory(code="analytics", name="Analytics")
    basic = PlanFactory(product=product, code="basic", name="Basic", rank=1)
    pro = PlanFactory(product=product, code="pro", name="Pro", rank=2)
    business = PlanFactory(product=product, code="business", name="Business", rank=3)
    basic_month = PriceFactory(plan=basic, unit_amount=Decimal("30.00"))
    pro_month = PriceFactory(plan=pro, unit_amount=Decimal("50.00"))
    business_month = PriceFactory(plan=business, unit_amount=Decimal("90.00"), min_quantity=3)
    pro_year = PriceFactory(plan=pro, interval="year", unit_amount=Decimal("500.00"))
    PriceFactory(plan=basic, interval="year", unit_amount=Decimal("300.00"))
    sso = Feature.objects.create(code="sso", name="SSO", kind="boolean")
    storage = Feature.objects.create(code="storage", name="Storage", kind="limit", unit="GB")
    PlanFeature.objects.create(plan=basic, feature=storage, limit_value=10)
    PlanFeature.objects.create(plan=pro, feature=storage, limit_value=100)
    PlanFeature.objects.create(plan=pro, feature=sso)
    PlanFeature.objects.create(plan=business, feature=storage, limit_value=None)
    PlanFeature.objects.create(plan=business, feature=sso)
    if tax_rate is not None:
        TaxRate.objects.create(country="DE", rate=Decimal(tax_rate), valid_from="2020-01-01")
    LegalEntity.objects.get_or_create(is_default=True, defaults={
        "name": "Crossgrade GmbH", "address": "Musterstraße 1\n10115 Berlin", "country": "DE",
        "vat_id": "DE136695976"})
    if rules:
        default_rules()
    subscription = Subscription.objects.create(
        customer=customer, product=product, price=basic_month, quantity=5,
        current_period_start=PERIOD_START, current_period_end=PERIOD_END,
    )
    return Setup(customer, owner, billing_admin, member, product, basic, pro, business, basic_month, pro_month,
                 business_month, pro_year, subscription, sso, storage)


def live_subscription_setup(**kwargs) -> Setup:
    """subscription_setup() with the billing period around the real clock (10 days used, 20 to go), for code
    that prices "now": the API, the portal, workers and browsers."""
    from datetime import timedelta

    from django.utils import timezone

    s = subscription_setup(**kwargs)
    now = timezone.now()
    Subscription.objects.filter(pk=s.subscription.pk).update(
        current_period_start=now - timedelta(days=10), current_period_end=now + timedelta(days=20))
    s.subscription.refresh_from_db()
    return s


def credit_note_setup():
    """Basic → Pro paid by card on 16 Jan (61.42), then Pro → Basic at once: a credit note of 61.42 held as
    balance. Returns (setup, credit note)."""
    from billing.models import ChangeRule, Invoice
    from billing.services.plan_changes import quote_accept
    from billing.services.quotes import quote_create

    s = subscription_setup()
    ChangeRule.objects.filter(name="Downgrades").update(timing="now", charge="prorated", credit="prorated")
    for price in (s.pro_month, s.basic_month):
        q = quote_create(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=price, quantity=5,
                         now=MID_JANUARY, actor=s.owner)
        quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    return s, Invoice.objects.get(kind="credit_note")


class PriceTierFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PriceTier

    price = factory.SubFactory(PriceFactory)
    up_to = None
    unit_amount = Decimal("10.00")


def tiered_price(*, plan: Plan, mode: str = "graduated", bands=((10, "10.00"), (None, "8.00")), **fields) -> Price:
    """A per-seat price with volume tiers: `bands` as (up_to, unit_amount[, flat_amount]); the unit amount is the
    first band's, as Price.clean_tiers requires. Default: 1–10 seats at 10.00, 11 or more at 8.00."""
    price = PriceFactory(plan=plan, tiers_mode=mode, unit_amount=Decimal(bands[0][1]), max_quantity=None, **fields)
    for up_to, unit_amount, *flat in bands:
        PriceTierFactory(price=price, up_to=up_to, unit_amount=Decimal(unit_amount),
                         flat_amount=Decimal(flat[0] if flat else 0))
    return price


# --- contracts and approvals -----------------------------------------------------------------------------------


def contract_for(s: Setup, *, periods: int = 12, committed_seats: int = 5, minimum_spend: str = "100.00",
                 budget_cap: str | None = None, purchase_order: str = "PO-4711",
                 negotiated: dict | None = None, number: str = "ENT-2026-001"):
    """A contract over the setup's subscription from its current period's start, for `periods` monthly periods,
    with negotiated prices (default: Basic at 27.00 and Pro at 45.00 instead of 30.00 and 50.00)."""
    from billing.models import Contract, ContractPrice

    subscription = Subscription.objects.select_related("customer", "price").get(pk=s.subscription.pk)
    tz = ZoneInfo(subscription.customer.timezone)
    from billing.services.contracts import contract_term_for

    start, end = contract_term_for(subscription=subscription,
                                   start_on=subscription.current_period_start.astimezone(tz).date(), periods=periods)
    contract = Contract.objects.create(
        customer=s.customer, subscription=subscription, number=number, term_start=start, term_end=end,
        billing_interval=subscription.price.interval, currency=subscription.price.currency,
        committed_seats=committed_seats, minimum_spend=Decimal(minimum_spend), purchase_order=purchase_order,
        budget_cap=Decimal(budget_cap) if budget_cap is not None else None, created_at=start)
    prices = negotiated if negotiated is not None else {s.basic_month: "27.00", s.pro_month: "45.00"}
    for price, amount in prices.items():
        ContractPrice.objects.create(contract=contract, price=price, unit_amount=Decimal(amount))
    return contract


def approver(username: str, *groups: str):
    """A staff user in those groups (created if need be) with the permission to decide approval requests."""
    from django.contrib.auth.models import Group, Permission

    user = UserFactory(username=username, is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_approvalrequest"))
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    return get_user_model().objects.get(pk=user.pk)  # fresh: no permission cache


def approval_policy(name: str, trigger: str, *roles: str, in_order: bool = True, applies_to: str = "both",
                    threshold: str | None = None, currency: str = "", hours: int = 72, position: int = 100):
    """An approval policy whose steps are the given roles (groups, created if need be), in that order."""
    from django.contrib.auth.models import Group

    from billing.models import ApprovalPolicy, ApprovalPolicyStep

    policy = ApprovalPolicy.objects.create(
        name=name, trigger=trigger, in_order=in_order, applies_to=applies_to, position=position,
        threshold=Decimal(threshold) if threshold is not None else None, currency=currency, decide_within_hours=hours)
    for index, role in enumerate(roles, start=1):
        ApprovalPolicyStep.objects.create(policy=policy, position=index, group=Group.objects.get_or_create(name=role)[0])
    return policy
