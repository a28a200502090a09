"""Exit-flow test data: a live subscription on Pro × 5 monthly (250.00 + 19 % VAT = 297.50 a month), the six
reasons and one offer of each kind."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing.models import Subscription
from billing.tests.factories import Setup, live_subscription_setup
from retention.models import ExitReason, RetentionOffer

REASON_CODES = ["too_expensive", "missing_feature", "not_using", "competitor", "temporary_pause", "other"]


@dataclass
class ExitSetup:
    s: Setup
    subscription: Subscription
    reasons: dict[str, ExitReason]
    discount: RetentionOffer
    pause: RetentionOffer
    crossgrade: RetentionOffer
    trial: RetentionOffer


def exit_setup(**kwargs) -> ExitSetup:
    s = live_subscription_setup(**kwargs)
    Subscription.objects.filter(pk=s.subscription.pk).update(price=s.pro_month)
    subscription = Subscription.objects.select_related("customer", "price__plan__product").get(pk=s.subscription.pk)
    reasons = {code: ExitReason.objects.create(code=code, label=code.replace("_", " ").capitalize(),
                                               asks_details=code == "other", position=i)
               for i, code in enumerate(REASON_CODES)}
    discount = RetentionOffer.objects.create(name="30 % off", headline="30 % off your next 3 months", kind="discount",
                                             percent_off=Decimal("30"), periods=3, priority=10)
    discount.reasons.set([reasons["too_expensive"]])
    pause = RetentionOffer.objects.create(name="Pause", headline="Pause for 2 months", kind="pause", periods=2,
                                          priority=20)
    pause.reasons.set([reasons["temporary_pause"], reasons["not_using"]])
    crossgrade = RetentionOffer.objects.create(name="Move to Basic", headline="Move to Basic", kind="crossgrade",
                                               target_plan=s.basic, priority=30)
    crossgrade.reasons.set([reasons["too_expensive"], reasons["not_using"]])
    trial = RetentionOffer.objects.create(name="Try Business", headline="Try Business free for 30 days", kind="trial",
                                          target_plan=s.business, trial_days=30, priority=40)
    trial.reasons.set([reasons["missing_feature"]])
    return ExitSetup(s, subscription, reasons, discount, pause, crossgrade, trial)
