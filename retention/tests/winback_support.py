"""Shared setup for the win-back tests: a campaign of two steps after a cancellation, one after a downgrade."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from billing.models import PlanChange, Subscription
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.services.renewals import plan_changes_apply_due
from billing.tests.factories import MID_JANUARY, PERIOD_END
from retention.models import RetentionOffer, WinBackCampaign, WinBackStep


@dataclass
class Campaigns:
    cancel: WinBackCampaign
    downgrade: WinBackCampaign
    offer: RetentionOffer
    first: WinBackStep
    second: WinBackStep


def campaigns() -> Campaigns:
    offer = RetentionOffer.objects.create(name="Come back 20 %", headline="20 % off for 3 months", kind="discount",
                                          percent_off=Decimal("20.00"), periods=3)
    cancel = WinBackCampaign.objects.create(name="After cancellation", trigger="cancel")
    first = WinBackStep.objects.create(campaign=cancel, position=1, delay_days=7)
    second = WinBackStep.objects.create(campaign=cancel, position=2, delay_days=30, offer=offer)
    downgrade = WinBackCampaign.objects.create(name="After downgrade", trigger="downgrade")
    WinBackStep.objects.create(campaign=downgrade, position=1, delay_days=14, offer=offer)
    return Campaigns(cancel, downgrade, offer, first, second)


def cancel_at_period_end(s) -> PlanChange:
    """The customer cancels mid-January; the cancellation takes effect at the period end (1 Feb 2026)."""
    quote = quote_create(subscription=s.subscription, to_price=None, quantity=0, now=MID_JANUARY, actor=s.owner,
                         cancel=True)
    change = quote_accept(quote=quote, actor=s.owner, now=MID_JANUARY)
    assert plan_changes_apply_due(now=PERIOD_END) == 1
    change.refresh_from_db()
    assert change.status == "applied"
    return change


def downgrade_at_period_end(s) -> PlanChange:
    """Pro × 5 → Basic × 5 at the period end."""
    Subscription.objects.filter(pk=s.subscription.pk).update(price=s.pro_month)
    s.subscription.refresh_from_db()
    quote = quote_create(subscription=s.subscription, to_price=s.basic_month, quantity=5, now=MID_JANUARY,
                         actor=s.owner)
    assert quote.direction == "downgrade"
    change = quote_accept(quote=quote, actor=s.owner, now=MID_JANUARY)
    assert plan_changes_apply_due(now=PERIOD_END) == 1
    change.refresh_from_db()
    assert change.status == "applied"
    return change


DAY = timedelta(days=1)
