"""A pause's "features frozen", made explicit: what only a paused subscription grants is marked frozen and read-only
(with the pause's end) by entitlements_for_customer and the entitlements API, from the pause's start to its end
exactly; the overview says so. The subscription: Pro × 5 monthly around the real clock (retention.tests.factories)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Customer, PlanFeature, Subscription
from billing.tests.factories import PlanFactory, PriceFactory, ProductFactory
from entitlements.selectors import entitlements_for_customer
from entitlements.services import entitlements_sync
from retention.services.exit_flow import exit_survey_start, subscription_resume
from retention.services.offers import offer_accept, offer_present
from retention.tests.factories import exit_setup

pytestmark = pytest.mark.django_db


@pytest.fixture
def x():
    return exit_setup()


def table(x, now=None) -> dict:
    customer = Customer.objects.get(pk=x.s.customer.pk)
    return {e.feature: (e.enabled, e.frozen, e.read_only, e.frozen_until)
            for e in entitlements_for_customer(customer=customer, now=now)}


def paused_now(x):
    """The pause offer accepted, then moved so that it is under way now."""
    now = timezone.now()
    survey = exit_survey_start(subscription=x.subscription, flow="cancel", reason_code="temporary_pause", details="",
                               actor=x.s.owner, now=now)
    offer_accept(presentation=offer_present(survey=survey, now=now)[0], actor=x.s.owner, now=now)
    sub = Subscription.objects.get(pk=x.subscription.pk)
    start, end = sub.pause_starts_at, sub.paused_until
    return sub, start, end


def test_frozen_exactly_from_the_pause_start_to_its_end_and_cached_until_then(x):
    sub, start, end = paused_now(x)
    assert table(x) == {"sso": (True, False, False, None), "storage": (True, False, False, None)}  # not yet
    during = table(x, now=start + timedelta(seconds=1))  # the cached answer knew it changes at the start
    assert during == {"sso": (True, True, True, end.isoformat()), "storage": (True, True, True, end.isoformat())}
    assert table(x, now=end) == {"sso": (True, False, False, None), "storage": (True, False, False, None)}


def test_a_feature_another_live_subscription_grants_stays_live(x):
    sub, start, end = paused_now(x)
    other = ProductFactory(code="collab")
    plan = PlanFactory(product=other, code="team")
    PlanFeature.objects.create(plan=plan, feature=x.s.feature_storage, limit_value=None)
    Subscription.objects.create(customer=x.s.customer, product=other, price=PriceFactory(plan=plan), quantity=1,
                                current_period_start=sub.current_period_start,
                                current_period_end=sub.current_period_end)
    entitlements_sync(customer=x.s.customer)
    during = table(x, now=start + timedelta(seconds=1))
    assert during["sso"][1] is True and during["storage"][:3] == (True, False, False)


def test_the_api_marks_them_frozen_and_resuming_thaws_them_at_once(x):
    sub, start, end = paused_now(x)
    now = timezone.now()
    Subscription.objects.filter(pk=sub.pk).update(  # the pause is under way now
        current_period_start=now - timedelta(days=2), pause_starts_at=now - timedelta(days=2),
        current_period_end=now + timedelta(days=28), paused_until=now + timedelta(days=28))
    entitlements_sync(customer=x.s.customer)
    client = APIClient()
    client.force_authenticate(x.s.owner)
    url = reverse("api-customer-entitlements", args=[x.s.customer.pk])
    rows = {e["feature"]: e for e in client.get(url).json()}
    until = Subscription.objects.get(pk=sub.pk).paused_until
    assert (rows["sso"]["enabled"], rows["sso"]["frozen"], rows["sso"]["read_only"]) == (True, True, True)
    assert rows["sso"]["frozen_until"] == until.isoformat().replace("+00:00", "Z")
    assert rows["storage"]["frozen"] is True and rows["storage"]["limit"] == 100  # kept, readable
    subscription_resume(subscription=Subscription.objects.get(pk=sub.pk), actor=x.s.owner, now=timezone.now())
    rows = {e["feature"]: e for e in client.get(url).json()}
    assert (rows["sso"]["frozen"], rows["sso"]["read_only"], rows["sso"]["frozen_until"]) == (False, False, None)


def test_the_overview_says_the_data_is_kept_and_nothing_new_can_be_added(client, x):
    sub, start, end = paused_now(x)
    now = timezone.now()
    Subscription.objects.filter(pk=sub.pk).update(pause_starts_at=now - timedelta(days=1),
                                                  current_period_start=now - timedelta(days=1))
    entitlements_sync(customer=x.s.customer)
    client.force_login(x.s.owner)
    page = client.get(reverse("portal:overview", args=[x.s.customer.pk])).content.decode()
    assert "Your data is kept and stays readable" in page and "nothing new can be added until" in page
    assert 'data-testid="frozen-sso"' in page and "paused: read-only until" in page
