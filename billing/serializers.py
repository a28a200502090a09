"""Explicit output serializers for the billing API (input serializers sit beside their views)."""

from __future__ import annotations

from decimal import Decimal

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.models import Customer, Plan, PlanChange, Price, Product, Quote, Subscription
from billing.money import format_amount, format_unit_amount
from billing.selectors import customer_balances


@extend_schema_field(OpenApiTypes.STR)
class MoneyField(serializers.Field):
    """An amount as a string with exactly the currency's minor-unit digits."""

    def __init__(self, currency_attr: str = "currency", unit_price: bool = False, **kwargs):
        self.currency_attr = currency_attr
        self.unit_price = unit_price
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def get_attribute(self, instance):
        return instance

    def to_representation(self, instance) -> str | None:
        value = getattr(instance, self.field_name)
        if value is None:
            return None
        currency = instance
        for part in self.currency_attr.split("."):
            currency = getattr(currency, part)
        return (format_unit_amount if self.unit_price else format_amount)(value, currency)


class PriceTierSerializer(serializers.Serializer):
    up_to = serializers.IntegerField(allow_null=True, help_text="Last seat of the band; null for the open-ended last band.")
    unit_amount = MoneyField(currency_attr="price.currency", unit_price=True)
    flat_amount = MoneyField(currency_attr="price.currency", unit_price=True)


class PriceSerializer(serializers.ModelSerializer):
    unit_amount = MoneyField(unit_price=True)
    tiers = PriceTierSerializer(many=True, help_text="The bands of a tiered price (tiers_mode graduated or volume).")

    class Meta:
        model = Price
        fields = ["id", "currency", "interval", "unit_amount", "pricing", "min_quantity", "max_quantity",
                  "tax_behavior", "tiers_mode", "tiers"]


class PlanFeatureValueSerializer(serializers.Serializer):
    feature = serializers.CharField(source="feature.code")
    name = serializers.CharField(source="feature.name")
    kind = serializers.CharField(source="feature.kind")
    enabled = serializers.BooleanField()
    limit = serializers.IntegerField(source="limit_value", allow_null=True)
    unit = serializers.CharField(source="feature.unit")


class PlanSerializer(serializers.ModelSerializer):
    prices = PriceSerializer(many=True)
    features = PlanFeatureValueSerializer(many=True, source="plan_features")

    class Meta:
        model = Plan
        fields = ["id", "code", "name", "rank", "description", "prices", "features"]


class ProductSerializer(serializers.ModelSerializer):
    plans = PlanSerializer(many=True)

    class Meta:
        model = Product
        fields = ["id", "code", "name", "description", "plans"]


class PriceRefSerializer(serializers.Serializer):
    price = serializers.IntegerField(source="id")
    product = serializers.CharField(source="plan.product.code")
    plan = serializers.CharField(source="plan.code")
    plan_name = serializers.CharField(source="plan.__str__")
    interval = serializers.CharField()
    unit_amount = MoneyField(unit_price=True)


class SubscriptionSerializer(serializers.ModelSerializer):
    price = PriceRefSerializer()
    scheduled_changes = serializers.SerializerMethodField()

    class Meta:
        model = Subscription
        fields = ["id", "customer", "price", "quantity", "seats_in_use", "discount_percent", "status",
                  "current_period_start", "current_period_end", "version", "scheduled_changes"]

    def get_scheduled_changes(self, obj: Subscription) -> list[int]:
        return list(obj.plan_changes.filter(status=PlanChange.Status.SCHEDULED)
                    .order_by("effective_at", "pk").values_list("pk", flat=True))


class CustomerSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()
    balances = serializers.SerializerMethodField()

    class Meta:
        model = Customer
        fields = ["id", "name", "email", "currency", "country", "timezone", "granularity", "role", "balances"]

    def get_role(self, obj: Customer) -> str | None:
        membership = self.context.get("memberships", {}).get(obj.pk)
        return membership.role if membership else None

    def get_balances(self, obj: Customer) -> dict[str, str]:
        return {cur: format_amount(amount, cur) for cur, amount in customer_balances(customer=obj).items()}


# "from" is a Python keyword, hence the class built by type().
BandSerializer = type("BandSerializer", (serializers.Serializer,), {
    "__doc__": "The seats of a tiered line billed in one band of its price (exact amounts, never rounded).",
    "from": serializers.IntegerField(help_text="First seat billed in this band."),
    "to": serializers.IntegerField(help_text="Last seat billed in this band."),
    "quantity": serializers.IntegerField(),
    "unit_amount": serializers.CharField(),
    "flat_amount": serializers.CharField(),
    "amount": serializers.CharField(help_text="quantity × unit_amount + flat_amount, for a whole period."),
    "tier_from": serializers.IntegerField(help_text="The band as the price defines it: first seat …"),
    "tier_to": serializers.IntegerField(allow_null=True, help_text="… and last seat (null: open-ended)."),
})


class LineSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["credit", "charge"])
    description = serializers.CharField()
    amount = serializers.CharField()
    quantity = serializers.IntegerField()
    start = serializers.DateTimeField(allow_null=True)
    end = serializers.DateTimeField(allow_null=True)
    remaining = serializers.CharField()
    total_units = serializers.CharField()
    unit = serializers.CharField()
    tiers_mode = serializers.ChoiceField(choices=["none", "graduated", "volume"], default="none")
    bands = BandSerializer(many=True, default=list, help_text="How a tiered price makes up the line's period amount, "
                                                              "which the line prorates; empty for other prices.")


class QuoteSerializer(serializers.ModelSerializer):
    from_price = PriceRefSerializer()
    to_price = PriceRefSerializer()
    lines = LineSerializer(many=True)
    expired = serializers.SerializerMethodField()
    subtotal = MoneyField()
    tax = MoneyField()
    total = MoneyField()
    balance_before = MoneyField()
    balance_applied = MoneyField()
    amount_due = MoneyField()
    balance_after = MoneyField()
    next_period_amount = MoneyField()
    next_period_tax = MoneyField()

    class Meta:
        model = Quote
        fields = ["id", "customer", "subscription", "subscription_version", "status", "created_at", "expires_at",
                  "expired", "direction", "timing", "requires_approval", "effective_at", "from_price",
                  "from_quantity", "to_price", "to_quantity", "currency", "lines", "subtotal", "tax_rate",
                  "tax_inclusive", "tax", "total", "balance_before", "balance_applied", "amount_due",
                  "balance_after", "new_period_start", "new_period_end", "next_period_amount", "next_period_tax",
                  "supersedes", "target_discount_percent"]

    def get_expired(self, obj: Quote) -> bool:
        return self.context["now"] >= obj.expires_at


def _price_ref(price: Price) -> dict:
    plan = price.plan
    return {"price": price.pk, "product": plan.product.code, "plan": plan.code, "plan_name": str(plan),
            "interval": price.interval, "unit_amount": format_unit_amount(price.unit_amount, price.currency)}


def quote_json(quote: Quote, *, now) -> dict:
    """QuoteSerializer's output, built directly: the quote endpoint is hot (bench/quote_latency.py).

    billing/tests/test_serializers.py keeps the two identical, so the OpenAPI schema stays true.
    """
    cur = quote.currency

    def money(value):
        return format_amount(value, cur)

    return {
        "id": quote.pk, "customer": quote.customer_id, "subscription": quote.subscription_id,
        "subscription_version": quote.subscription_version, "status": quote.status,
        "created_at": _iso(quote.created_at), "expires_at": _iso(quote.expires_at),
        "expired": now >= quote.expires_at, "direction": quote.direction, "timing": quote.timing,
        "requires_approval": quote.requires_approval, "effective_at": _iso(quote.effective_at),
        "from_price": _price_ref(quote.from_price), "from_quantity": quote.from_quantity,
        "to_price": _price_ref(quote.to_price), "to_quantity": quote.to_quantity, "currency": cur,
        "lines": [{"kind": line["kind"], "description": line["description"], "amount": line["amount"],
                   "quantity": line["quantity"], "start": line["start"], "end": line["end"],
                   "remaining": line["remaining"], "total_units": line["total_units"], "unit": line["unit"],
                   "tiers_mode": line.get("tiers_mode", "none"), "bands": line.get("bands", [])}
                  for line in quote.lines],
        "subtotal": money(quote.subtotal),
        "tax_rate": None if quote.tax_rate is None else str(quote.tax_rate),
        "tax_inclusive": quote.tax_inclusive, "tax": money(quote.tax), "total": money(quote.total),
        "balance_before": money(quote.balance_before), "balance_applied": money(quote.balance_applied),
        "amount_due": money(quote.amount_due), "balance_after": money(quote.balance_after),
        "new_period_start": _iso(quote.new_period_start), "new_period_end": _iso(quote.new_period_end),
        "next_period_amount": money(quote.next_period_amount), "next_period_tax": money(quote.next_period_tax),
        "supersedes": quote.supersedes,
        "target_discount_percent": None if quote.target_discount_percent is None
        else str(quote.target_discount_percent.quantize(Decimal("0.01"))),
    }


_DATETIME = serializers.DateTimeField()


def _iso(value) -> str:
    return _DATETIME.to_representation(value)


class PlanChangeSerializer(serializers.ModelSerializer):
    from_price = PriceRefSerializer()
    to_price = PriceRefSerializer()
    lines = LineSerializer(many=True)
    subtotal = MoneyField()
    tax = MoneyField()
    total = MoneyField()
    balance_applied = MoneyField()
    amount_due = MoneyField()
    balance_after = MoneyField()
    receipt = serializers.SerializerMethodField()

    class Meta:
        model = PlanChange
        fields = ["id", "customer", "subscription", "quote", "status", "direction", "timing", "effective_at",
                  "from_price", "from_quantity", "to_price", "to_quantity", "currency", "lines", "subtotal",
                  "tax_rate", "tax", "total", "balance_applied", "amount_due", "balance_after",
                  "new_period_start", "new_period_end", "payment_reference", "next_action_url", "failure_code",
                  "failure_message", "created_at", "applied_at", "closed_at", "receipt"]

    def get_receipt(self, obj: PlanChange) -> dict | None:
        if obj.status != PlanChange.Status.APPLIED or obj.timing != "now":
            return None
        return {
            "number": f"R-{obj.applied_at:%Y}-{obj.pk:06d}",
            "issued_at": obj.applied_at.isoformat(),
            "amount_paid": format_amount(obj.amount_due, obj.currency),
            "payment_reference": obj.payment_reference,
            "currency": obj.currency,
        }
