from __future__ import annotations

import pytest

from billing.serializers import QuoteSerializer, quote_json
from billing.services.quotes import quote_create
from billing.tests.factories import MID_JANUARY, PERIOD_END, subscription_setup

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("target", ["pro_month", "pro_year", "basic_year"])
def test_quote_json_is_exactly_what_the_documented_serializer_says(target):
    s = subscription_setup()
    s.subscription.price = s.pro_month if target != "pro_month" else s.basic_month
    s.subscription.save()
    price = getattr(s, target, None) or s.basic_month.plan.prices.get(interval="year")
    q = quote_create(subscription=s.subscription, to_price=price, quantity=5, now=MID_JANUARY, actor=s.owner)
    for now in (MID_JANUARY, PERIOD_END):
        assert quote_json(q, now=now) == dict(QuoteSerializer(q, context={"now": now}).data)
