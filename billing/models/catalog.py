"""The catalog: products, plans (ranked tiers), prices, features, and change rules as data."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from billing.money import is_currency


def validate_currency(value: str) -> None:
    if not is_currency(value):
        raise ValidationError(f"{value!r} is not an ISO 4217 currency code.")


class Interval(models.TextChoices):
    MONTH = "month", _("Monthly")
    QUARTER = "quarter", _("Quarterly")
    YEAR = "year", _("Yearly")


INTERVAL_DAYS = {"month": Decimal("30.436875"), "quarter": Decimal("91.310625"), "year": Decimal("365.2425")}
INTERVAL_RANK = {"month": 1, "quarter": 2, "year": 3}


class Product(models.Model):
    code = models.SlugField(unique=True, help_text="Stable identifier used by the API and entitlements.")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True, help_text="Inactive products cannot be changed to.")
    sort_order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["sort_order", "name"]

    def __str__(self) -> str:
        return self.name


class Plan(models.Model):
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="plans")
    code = models.SlugField(help_text="Unique within the product, e.g. 'pro'.")
    name = models.CharField(max_length=100)
    rank = models.PositiveIntegerField(
        help_text="Tier order within the product: a higher rank is an upgrade (Free < Starter < Pro …)."
    )
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True, help_text="Inactive plans cannot be changed to.")

    class Meta:
        ordering = ["product__sort_order", "product_id", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["product", "code"], name="plan_code_unique_in_product"),
            models.UniqueConstraint(fields=["product", "rank"], name="plan_rank_unique_in_product"),
        ]

    def __str__(self) -> str:
        return f"{self.product.name} {self.name}"


class Price(models.Model):
    class Pricing(models.TextChoices):
        FLAT = "flat", _("Flat (one unit)")
        PER_SEAT = "per_seat", _("Per seat")

    class TaxBehavior(models.TextChoices):
        EXCLUSIVE = "exclusive", _("Tax exclusive (tax added on top)")
        INCLUSIVE = "inclusive", _("Tax inclusive (tax included in the price)")

    class TiersMode(models.TextChoices):
        NONE = "none", _("No tiers (every seat at the unit amount)")
        GRADUATED = "graduated", _("Graduated (each band at its own price)")
        VOLUME = "volume", _("Volume (all seats at the price of the band reached)")

    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="prices")
    currency = models.CharField(max_length=3, validators=[validate_currency], help_text="ISO 4217 code, e.g. EUR.")
    interval = models.CharField(max_length=10, choices=Interval.choices)
    unit_amount = models.DecimalField(
        max_digits=18, decimal_places=4, validators=[MinValueValidator(Decimal(0))],
        help_text="Per period, in the currency's major unit (per seat for per-seat prices).",
    )
    pricing = models.CharField(max_length=10, choices=Pricing.choices, default=Pricing.PER_SEAT)
    min_quantity = models.PositiveIntegerField(default=1, help_text="Fewest seats this price allows.")
    max_quantity = models.PositiveIntegerField(null=True, blank=True, help_text="Most seats; empty for no limit.")
    tax_behavior = models.CharField(max_length=10, choices=TaxBehavior.choices, default=TaxBehavior.EXCLUSIVE)
    tiers_mode = models.CharField(
        "volume tiers", max_length=10, choices=TiersMode.choices, default=TiersMode.NONE,
        help_text="Per-seat prices only. With tiers, the bands below set every seat's price (the unit amount must be "
                  "the first band's). Example, bands 1–10 seats at 10.00 and 11 or more at 8.00, for 25 seats: "
                  "graduated = 10 × 10.00 + 15 × 8.00 = 220.00; volume = 25 × 8.00 = 200.00 (all seats at the "
                  "price of the band the seat count falls in).",
    )
    is_active = models.BooleanField(
        default=True,
        help_text="Inactive prices cannot be changed to; subscribers keep them. Once a price is in use its amount, "
                  "currency, interval, pricing and tiers are frozen: to charge a new amount, deactivate it and add a "
                  "new price.",
    )

    class Meta:
        ordering = ["plan__product_id", "plan__rank", "currency", "interval"]
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "currency", "interval"], condition=Q(is_active=True),
                name="one_active_price_per_plan_currency_interval",
            ),
            models.CheckConstraint(condition=Q(unit_amount__gte=0), name="price_unit_amount_not_negative"),
            models.CheckConstraint(
                condition=Q(max_quantity__isnull=True) | Q(max_quantity__gte=models.F("min_quantity")),
                name="price_max_quantity_not_below_min",
            ),
            models.CheckConstraint(condition=Q(tiers_mode="none") | Q(pricing="per_seat"),
                                   name="price_tiers_only_per_seat"),
        ]

    def __str__(self) -> str:
        per = " per seat" if self.pricing == self.Pricing.PER_SEAT else ""
        return f"{self.plan} · {self.unit_amount.normalize():f} {self.currency}{per} / {self.interval}"

    @property
    def is_tiered(self) -> bool:
        return self.tiers_mode != self.TiersMode.NONE

    def clean(self) -> None:
        if self.pricing == self.Pricing.FLAT and (self.min_quantity != 1 or self.max_quantity != 1):
            raise ValidationError("A flat price is for exactly one unit: minimum and maximum seats must be 1.")
        if self.is_tiered and self.pricing != self.Pricing.PER_SEAT:
            raise ValidationError({"tiers_mode": "Volume tiers are for per-seat prices only: a flat price is for "
                                                 "one unit, so there are no seats to put in bands."})

    def clean_tiers(self, tiers: Iterable[PriceTier]) -> None:
        """Check this price's complete set of bands, in ascending order (the admin passes the rows it saves).

        Bands are defined by where they end, so ascending bands without overlaps leave no gaps: each starts
        one seat after the previous one ends, and the open-ended last band covers every seat count above.
        """
        tiers = list(tiers)
        if not self.is_tiered:
            if tiers:
                raise ValidationError("Bands are only for a tiered price: choose graduated or volume tiers, or "
                                      "delete the bands.")
            return
        if not tiers:
            raise ValidationError(f"A {self.tiers_mode} price needs its bands: add them, the last one with an empty "
                                  "'up to' (open-ended).")
        errors = []
        open_ended = [tier for tier in tiers if tier.up_to is None]
        if len(open_ended) > 1:
            errors.append(f"Exactly one band is open-ended (empty 'up to'); {len(open_ended)} are.")
        elif tiers[-1].up_to is not None:
            errors.append(f"The last band must be open-ended (leave its 'up to' empty): with the last band ending at "
                          f"{tiers[-1].up_to} seats, larger seat counts would have no price.")
        previous = None
        for tier in tiers:
            if tier.up_to is None:
                continue
            if previous is not None and tier.up_to == previous:
                errors.append(f"Two bands end at {tier.up_to} seats: bands may not overlap.")
            elif previous is not None and tier.up_to < previous:
                errors.append(f"Bands must be in ascending order: the band up to {tier.up_to} seats comes after the "
                              f"band up to {previous}.")
            previous = tier.up_to
        first_unit = tiers[0].unit_amount
        if first_unit is not None and self.unit_amount is not None and self.unit_amount != first_unit:
            errors.append(f"For a tiered price the unit amount is what the first seat costs: set it to "
                          f"{first_unit.normalize():f}, the first band's unit amount (it is {self.unit_amount.normalize():f}).")
        if errors:
            raise ValidationError(errors)


class PriceTier(models.Model):
    """One band of a tiered per-seat price, as Stripe's tiers: seats up to `up_to` at `unit_amount` each, plus an
    optional flat fee. The bands of a price are checked together by `Price.clean_tiers` (no unique constraints
    here: the admin saves edited rows one by one, and a swap of two bands' ends would collide midway)."""

    price = models.ForeignKey(Price, on_delete=models.CASCADE, related_name="tiers")
    up_to = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Last seat of this band, inclusive; the next band starts one seat later. Empty for the last band, "
                  "which is open-ended. Example: 10, 50, (empty) make the bands 1–10, 11–50 and 51 or more.",
    )
    unit_amount = models.DecimalField(
        max_digits=18, decimal_places=4, validators=[MinValueValidator(Decimal(0))],
        help_text="Per seat per period for the seats in this band (graduated), or for every seat when the seat "
                  "count falls in this band (volume).",
    )
    flat_amount = models.DecimalField(
        max_digits=18, decimal_places=4, default=Decimal(0), validators=[MinValueValidator(Decimal(0))],
        help_text="Optional fee per period, added once when the band is reached (graduated) or when the seat count "
                  "falls in it (volume).",
    )

    class Meta:
        ordering = ["price_id", models.F("up_to").asc(nulls_last=True)]
        constraints = [
            models.CheckConstraint(condition=Q(up_to__isnull=True) | Q(up_to__gte=1), name="price_tier_up_to_positive"),
            models.CheckConstraint(condition=Q(unit_amount__gte=0) & Q(flat_amount__gte=0),
                                   name="price_tier_amounts_not_negative"),
        ]

    def __str__(self) -> str:
        seats = f"up to {self.up_to}" if self.up_to is not None else "open-ended"
        return f"{self.price} · {seats}: {self.unit_amount.normalize():f}"

    def clean(self) -> None:
        if self.price_id is not None and self.price.pricing != Price.Pricing.PER_SEAT:
            raise ValidationError("Only per-seat prices have bands.")


class Feature(models.Model):
    class Kind(models.TextChoices):
        BOOLEAN = "boolean", _("On/off")
        LIMIT = "limit", _("Numeric limit")

    code = models.SlugField(unique=True, help_text="Stable identifier that products check, e.g. 'sso'.")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    unit = models.CharField(max_length=30, blank=True, help_text="For limits, e.g. 'GB' or 'calls / month'.")
    limit_from_quantity = models.BooleanField(
        default=False,
        help_text="For per-seat prices the limit is the number of seats bought, capped by the plan's value "
                  "(use it for the seats feature).",
    )
    description = models.TextField(blank=True)
    sort_order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["sort_order", "name"]

    def __str__(self) -> str:
        return self.name


class PlanFeature(models.Model):
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="plan_features")
    feature = models.ForeignKey(Feature, on_delete=models.PROTECT, related_name="plan_features")
    enabled = models.BooleanField(default=True)
    limit_value = models.BigIntegerField(
        null=True, blank=True, help_text="For numeric limits: the allowance; empty means unlimited."
    )

    class Meta:
        ordering = ["feature__sort_order"]
        constraints = [models.UniqueConstraint(fields=["plan", "feature"], name="plan_feature_unique")]

    def __str__(self) -> str:
        return f"{self.plan}: {self.feature}"


class Direction(models.TextChoices):
    UPGRADE = "upgrade", _("Upgrade")
    DOWNGRADE = "downgrade", _("Downgrade")
    CROSSGRADE = "crossgrade", _("Cross-grade")
    CANCEL = "cancel", _("Cancellation")


class Timing(models.TextChoices):
    NOW = "now", _("Now")
    PERIOD_END = "period_end", _("At period end")


class Mode(models.TextChoices):
    PRORATED = "prorated", _("Prorated")
    FULL = "full", _("Full period")
    NONE = "none", _("None")


class ChangeRule(models.Model):
    """One ordered, first-match rule deciding whether and how a plan change happens."""

    position = models.PositiveIntegerField(help_text="Rules are tried in ascending position; the first match decides.")
    name = models.CharField(max_length=120)
    is_active = models.BooleanField(default=True)
    from_product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                     help_text="Empty matches any product.")
    from_plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                  help_text="Empty matches any plan.")
    from_interval = models.CharField(max_length=10, choices=Interval.choices, blank=True,
                                     help_text="Empty matches any interval.")
    to_product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                   help_text="Empty matches any product.")
    to_plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                help_text="Empty matches any plan.")
    to_interval = models.CharField(max_length=10, choices=Interval.choices, blank=True,
                                   help_text="Empty matches any interval.")
    direction = models.CharField(max_length=12, choices=Direction.choices, blank=True,
                                 help_text="Empty matches any direction (cancellations included). "
                                           "Direction comes from plan rank; within "
                                           "one rank (seat or interval changes) from the value per day.")
    allowed = models.BooleanField(default=True)
    refusal_reason = models.CharField(max_length=300, blank=True,
                                      help_text="Shown to the customer when the rule refuses the change.")
    timing = models.CharField(max_length=12, choices=Timing.choices, default=Timing.NOW)
    charge = models.CharField(max_length=10, choices=Mode.choices, default=Mode.PRORATED,
                              help_text="How the new plan is charged for the rest of the period. A change of "
                                        "billing interval always charges the full new period (PRORATION.md).")
    credit = models.CharField(max_length=10, choices=Mode.choices, default=Mode.PRORATED,
                              help_text="How unused time on the old plan is credited.")
    requires_approval = models.BooleanField(default=False)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"#{self.position} {self.name}"

    def clean(self) -> None:
        if not self.allowed and not self.refusal_reason:
            raise ValidationError({"refusal_reason": "A refusing rule needs a reason the customer can read."})
