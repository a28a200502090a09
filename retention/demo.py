"""Demo data for the exit flow: the six exit reasons and four retention offers (called by `seed_demo`)."""

from __future__ import annotations

from decimal import Decimal

from billing.models import Plan
from retention.models import ExitReason, RetentionOffer

REASONS = [  # code, label, asks_details
    ("too_expensive", "It is too expensive", False),
    ("missing_feature", "A feature I need is missing", False),
    ("not_using", "We are not using it enough", False),
    ("competitor", "We are switching to another product", False),
    ("temporary_pause", "We only need a break for a while", False),
    ("other", "Something else", True),
]

OFFERS = [  # name, headline, kind, fields, reasons, priority
    ("30 % off for 3 months", "30 % off your next 3 months", RetentionOffer.Kind.DISCOUNT,
     {"percent_off": Decimal("30"), "periods": 3}, ["too_expensive"], 10),
    ("Pause for up to 2 months", "Pause for 2 months, free", RetentionOffer.Kind.PAUSE,
     {"periods": 2}, ["temporary_pause", "not_using"], 20),
    ("Move to Starter", "Move to Starter and pay less", RetentionOffer.Kind.CROSSGRADE,
     {"target_plan": ("analytics", "starter")}, ["too_expensive", "not_using"], 30),
    ("Try Business free for 30 days", "Try Business free for 30 days", RetentionOffer.Kind.TRIAL,
     {"target_plan": ("analytics", "business"), "trial_days": 30}, ["missing_feature"], 40),
]


def retention_demo_seed() -> None:
    """Idempotent: reasons by code, offers by name."""
    reasons = {}
    for position, (code, label, asks_details) in enumerate(REASONS, start=1):
        reasons[code] = ExitReason.objects.update_or_create(code=code, defaults={
            "label": label, "asks_details": asks_details, "position": position * 10, "is_active": True})[0]
    for name, headline, kind, fields, reason_codes, priority in OFFERS:
        values = dict(fields)
        if "target_plan" in values:
            product, plan = values["target_plan"]
            values["target_plan"] = Plan.objects.get(product__code=product, code=plan)
        offer, _created = RetentionOffer.objects.update_or_create(name=name, defaults={
            "headline": headline, "kind": kind, "priority": priority, "flow": RetentionOffer.Flow.ANY,
            "cooldown_days": 365, "is_active": True, **values})
        offer.reasons.set([reasons[code] for code in reason_codes])
