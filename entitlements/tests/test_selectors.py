"""Entitlements: merged across subscriptions, with sources, cached per version and never stale."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache

from billing.models import Customer, PlanFeature, Subscription
from billing.tests.factories import PlanFactory, PriceFactory, ProductFactory, subscription_setup
from entitlements.selectors import entitlements_for_customer
from entitlements.services import entitlements_sync

pytestmark = pytest.mark.django_db


def table(customer):
    customer = Customer.objects.get(pk=customer.pk)
    return {e.feature: (e.enabled, e.limit, e.sources) for e in entitlements_for_customer(customer=customer)}


def test_plan_features_with_sources_and_missing_ones_off():
    s = subscription_setup()
    assert table(s.customer) == {
        "sso": (False, None, ()),
        "storage": (True, 10, ("plan:analytics/basic",)),
    }


def test_limits_merge_across_products_and_unlimited_wins():
    s = subscription_setup()
    other = ProductFactory(code="collab")
    plan = PlanFactory(product=other, code="team")
    PlanFeature.objects.create(plan=plan, feature=s.feature_storage, limit_value=None)
    Subscription.objects.create(customer=s.customer, product=other, price=PriceFactory(plan=plan), quantity=1,
                                current_period_start=s.subscription.current_period_start,
                                current_period_end=s.subscription.current_period_start + timedelta(days=30))
    entitlements_sync(customer=s.customer)
    assert table(s.customer)["storage"] == (True, None, ("plan:analytics/basic", "plan:collab/team"))


def test_cancelled_subscriptions_grant_nothing():
    s = subscription_setup()
    Subscription.objects.filter(pk=s.subscription.pk).update(status="cancelled")
    entitlements_sync(customer=s.customer)
    assert table(s.customer)["storage"] == (False, 0, ())


def test_cached_until_the_version_moves():
    s = subscription_setup()
    assert table(s.customer)["sso"][0] is False
    # A write that forgets entitlements_sync is still served from cache: the version is the only key.
    Subscription.objects.filter(pk=s.subscription.pk).update(price=s.pro_month)
    assert table(s.customer)["sso"][0] is False
    entitlements_sync(customer=s.customer)
    assert table(s.customer)["sso"][0] is True
    assert cache.get(f"entitlements:{s.customer.pk}:1") is not None


def test_seats_follow_the_seats_bought_capped_by_the_plan():
    from billing.models import Feature

    s = subscription_setup()
    seats = Feature.objects.create(code="seats", name="Seats", kind="limit", unit="seats", limit_from_quantity=True)
    PlanFeature.objects.create(plan=s.basic, feature=seats, limit_value=3)
    PlanFeature.objects.create(plan=s.pro, feature=seats, limit_value=None)
    assert table(s.customer)["seats"][:2] == (True, 3)  # 5 bought, Basic allows 3 at most
    Subscription.objects.filter(pk=s.subscription.pk).update(price=s.pro_month)
    entitlements_sync(customer=s.customer)
    assert table(s.customer)["seats"][:2] == (True, 5)  # Pro: no cap, so the 5 bought
