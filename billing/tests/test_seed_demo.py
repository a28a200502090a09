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
