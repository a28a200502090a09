"""The demo data shows a renewal offer at once: Nordwind (nora) renews its monthly Analytics Pro within a week."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from billing.models import Customer, Subscription
from retention.models import RenewalOffer
from retention.selectors.renewal_offers import renewal_offer_get

pytestmark = pytest.mark.django_db


def test_seed_demo_has_a_customer_inside_the_renewal_window():
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    call_command("seed_demo", stdout=io.StringIO())  # again: nothing doubled
    assert RenewalOffer.objects.count() == 1 and "nora" in out.getvalue()
    nordwind = Customer.objects.get(name="Nordwind GmbH")
    sub = Subscription.objects.select_related("customer", "price__plan__product").get(customer=nordwind)
    now = timezone.now()
    assert now < sub.current_period_end <= now + timedelta(days=7)
    view, reason = renewal_offer_get(subscription=sub, now=now)
    assert view is not None, reason
    assert view.discount_percent == 10 and view.first_gross.saving > view.gross.saving > 0
    client = Client()
    assert client.login(username="nora", password="crossgrade-demo")
    page = client.get(f"/c/{nordwind.pk}/").content.decode()
    assert 'data-testid="renewal-offer"' in page
