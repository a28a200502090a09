"""The demo seed brings the six reasons and the four offers, idempotently, and a demo customer sees offers."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import Subscription
from retention.models import ExitReason, RetentionOffer
from retention.services.exit_flow import exit_survey_start
from retention.services.offers import offers_eligible

pytestmark = pytest.mark.django_db


def test_seed_brings_reasons_and_offers_once():
    call_command("seed_demo", stdout=io.StringIO())
    call_command("seed_demo", stdout=io.StringIO())
    assert list(ExitReason.objects.values_list("code", flat=True)) == [
        "too_expensive", "missing_feature", "not_using", "competitor", "temporary_pause", "other"]
    assert ExitReason.objects.get(code="other").asks_details
    exit_offers = RetentionOffer.objects.exclude(flow="win_back")  # the win-back seed brings its email's own offer
    assert sorted(exit_offers.values_list("kind", flat=True)) == ["crossgrade", "discount", "pause", "trial"]
    discount = exit_offers.get(kind="discount")
    assert (discount.percent_off, discount.periods) == (30, 3)
    assert [r.code for r in discount.reasons.all()] == ["too_expensive"]
    acme = Subscription.objects.select_related("customer", "price__plan__product").get(
        customer__name="Acme GmbH", product__code="analytics")
    now = timezone.now()
    if not (acme.current_period_start <= now < acme.current_period_end):
        pytest.skip("the demo period is not current")
    survey = exit_survey_start(subscription=acme, flow="cancel", reason_code="too_expensive", details="", actor=None,
                               now=now)
    eligible = [item.offer for item in offers_eligible(survey=survey, now=now)]
    assert eligible[0].kind == "discount"
    assert all(offer.flow != "win_back" for offer in eligible)  # win-back emails' offers never show on the way out
