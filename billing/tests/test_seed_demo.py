"""The demo data loads twice without duplicates and gives a working demo."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import ChangeRule, Customer, Feature, Plan, Price, Product, Subscription
from billing.services.quotes import quote_create

pytestmark = pytest.mark.django_db


def counts():
    return [m.objects.count() for m in (Product, Plan, Price, Feature, ChangeRule, Customer, Subscription)]


def test_seed_demo_is_idempotent_and_quotable():
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    first = counts()
    call_command("seed_demo", stdout=io.StringIO())
    assert counts() == first
    assert "API token (alice)" in out.getvalue()
    assert Product.objects.count() >= 2
    assert all(3 <= Plan.objects.filter(product=p).count() <= 5 for p in Product.objects.all())
    assert set(Price.objects.values_list("currency", flat=True)) >= {"EUR", "USD", "GBP", "JPY"}
    assert set(Price.objects.values_list("interval", flat=True)) == {"month", "quarter", "year"}
    assert set(Feature.objects.values_list("code", flat=True)) >= {"seats", "storage", "sso", "audit_log",
                                                                   "api_calls", "priority_support"}
    acme = Subscription.objects.get(customer__name="Acme GmbH", product__code="analytics")
    business = Price.objects.get(plan__product__code="analytics", plan__code="business", currency="EUR",
                                 interval="month")
    q = quote_create(subscription=acme, to_price=business, quantity=5, now=timezone.now(), actor=None)
    assert q.direction == "upgrade" and q.timing == "now" and q.amount_due > 0
    enterprise = Price.objects.get(plan__code="enterprise", currency="EUR", interval="month")
    from billing.errors import ChangeRefused

    with pytest.raises(ChangeRefused, match="sales team"):
        quote_create(subscription=acme, to_price=enterprise, quantity=10, now=timezone.now(), actor=None)


def test_seed_demo_shows_a_past_due_account_through_the_real_renewal_step():
    from billing.models import Invoice, Notification

    call_command("seed_demo", stdout=io.StringIO())
    call_command("seed_demo", stdout=io.StringIO())
    initech = Subscription.objects.get(customer__name="Initech Ltd")
    invoice = Invoice.objects.get(subscription=initech, billing_reason="renewal")
    assert initech.status == "past_due" and initech.current_period_start <= timezone.now() < initech.current_period_end
    assert invoice.status == "issued" and invoice.currency == "GBP" and invoice.next_payment_attempt_at is not None
    assert list(invoice.payment_attempts.values_list("status", flat=True)) == ["declined"]
    assert Notification.objects.filter(customer=initech.customer, kind="renewal_payment_failed").count() == 1
    assert Subscription.objects.filter(status="past_due").count() == 1


def test_seed_demo_has_a_graduated_and_a_volume_price_with_bands():
    from billing.models import PriceTier

    call_command("seed_demo", stdout=io.StringIO())
    tiers = list(PriceTier.objects.order_by("pk").values_list("pk", "up_to", "unit_amount"))
    call_command("seed_demo", stdout=io.StringIO())
    assert list(PriceTier.objects.order_by("pk").values_list("pk", "up_to", "unit_amount")) == tiers  # untouched
    team = Price.objects.get(plan__product__code="helpdesk", plan__code="team", currency="EUR", interval="month")
    assert team.tiers_mode == "graduated" and team.unit_amount == 12
    assert [(t.up_to, t.unit_amount) for t in team.tiers.all()] == [(10, 12), (50, 10), (None, 8)]
    scale = Price.objects.get(plan__product__code="helpdesk", plan__code="scale", currency="JPY", interval="month")
    # 11 EUR × 160 = 1760 → 1800 yen; 9 × 160 = 1440 → 1400; 7 × 160 = 1120 → 1100 (JPY prices in steps of 100)
    assert scale.tiers_mode == "volume"
    assert [(t.up_to, t.unit_amount) for t in scale.tiers.all()] == [(25, 1800), (100, 1400), (None, 1100)]
    acme = Subscription.objects.get(customer__name="Acme GmbH", product__code="helpdesk")
    assert (acme.price, acme.quantity) == (team, 12)
    # 12 seats cost 10 × 12 + 2 × 10 = 140.00 a month, 60 seats 10 × 12 + 40 × 10 + 10 × 8 = 600.00: an upgrade
    q = quote_create(subscription=acme, to_price=team, quantity=60, now=timezone.now(), actor=None)
    assert q.direction == "upgrade" and q.timing == "now"
    credit, charge = q.lines
    assert (credit["tiered_amount"], charge["tiered_amount"]) == ("140.00", "600.00")
    assert [(band["from"], band["to"]) for band in charge["bands"]] == [(1, 10), (11, 50), (51, 60)]
