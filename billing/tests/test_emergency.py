"""Emergency upgrades: staff with the permission and a reason, priced as a quote, charged off-session, invoiced;
a card that cannot be charged changes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.errors import BillingError
from billing.models import AuditEvent, BalanceEntry, Invoice, LocalPayment, PaymentMethod, PlanChange, Subscription
from billing.services.emergency import emergency_upgrade_confirm, emergency_upgrade_quote
from billing.tests.factories import MID_JANUARY, PERIOD_END, PERIOD_START, staff_user, subscription_setup

pytestmark = pytest.mark.django_db


@pytest.fixture
def sue():
    return staff_user("emergency_upgrade", "view_subscription", username="sue")


def priced(s, user, price=None, quantity: int = 5):
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    return emergency_upgrade_quote(subscription=subscription, to_price=price or s.pro_month, quantity=quantity,
                                   actor=user, now=MID_JANUARY)


def assert_nothing_changed(s) -> None:
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    assert (subscription.price, subscription.quantity, subscription.version) == (s.basic_month, 5, 1)
    assert not Invoice.objects.exists() and not BalanceEntry.objects.exists()


def test_the_upgrade_applies_at_once_is_charged_off_session_and_invoiced(sue):
    s = subscription_setup()
    quote = priced(s, sue)
    assert (quote.direction, quote.timing, quote.amount_due, quote.created_by) == ("upgrade", "now", Decimal("61.42"), sue)
    change = emergency_upgrade_confirm(quote=quote, actor=sue, reason="Locked out during their launch", now=MID_JANUARY)
    assert change.status == "applied" and change.off_session and change.created_by == sue
    assert change.reason_code == "staff_emergency_upgrade"
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    assert (subscription.price, subscription.quantity) == (s.pro_month, 5)
    assert (subscription.current_period_start, subscription.current_period_end) == (PERIOD_START, PERIOD_END)
    invoice = Invoice.objects.get(plan_change=change)
    assert (invoice.kind, invoice.status, invoice.total, invoice.amount_paid) == ("invoice", "paid", Decimal("61.42"),
                                                                                  Decimal("61.42"))
    payment = LocalPayment.objects.get()
    assert (payment.amount_minor, payment.reference) == (6142, change.payment_reference)
    event = AuditEvent.objects.get(action="plan_change.emergency_upgrade")
    assert (event.actor, event.object_id, event.message, event.reason_code) == (
        sue, str(change.pk), "Locked out during their launch", "staff_emergency_upgrade")
    applied = AuditEvent.objects.get(action="plan_change.applied")
    assert applied.actor == sue and applied.reason_code == "staff_emergency_upgrade"


@pytest.mark.parametrize("card", ["pm_card_chargeDeclined", "pm_card_authenticationRequired"])
def test_a_card_that_cannot_be_charged_off_session_changes_nothing(sue, card):
    s = subscription_setup(payment_method=card)
    change = emergency_upgrade_confirm(quote=priced(s, sue), actor=sue, reason="Outage", now=MID_JANUARY)
    assert change.status == "failed" and change.failure_message
    assert_nothing_changed(s)
    assert LocalPayment.objects.get().status == "declined"  # off-session: no authentication page to wait on


def test_no_saved_card_is_refused_before_anything_happens(sue):
    s = subscription_setup()
    PaymentMethod.objects.filter(customer=s.customer).delete()
    quote = priced(s, sue)
    with pytest.raises(BillingError) as info:
        emergency_upgrade_confirm(quote=quote, actor=sue, reason="Outage", now=MID_JANUARY)
    assert info.value.code == "no_payment_method"
    assert_nothing_changed(s)
    assert not PlanChange.objects.exists()


def test_the_permission_is_needed_to_price_and_to_confirm(sue):
    s = subscription_setup()
    quote = priced(s, sue)
    viewer = staff_user("view_subscription", username="viewer")
    with pytest.raises(BillingError) as info:
        priced(s, viewer)
    assert info.value.code == "permission_denied" and info.value.status == 403
    with pytest.raises(BillingError) as info:
        emergency_upgrade_confirm(quote=quote, actor=viewer, reason="Outage", now=MID_JANUARY)
    assert info.value.code == "permission_denied"
    assert_nothing_changed(s)
    assert not PlanChange.objects.exists()


@pytest.mark.parametrize("reason", ["", "  "])
def test_a_reason_is_required(sue, reason):
    s = subscription_setup()
    with pytest.raises(BillingError) as info:
        emergency_upgrade_confirm(quote=priced(s, sue), actor=sue, reason=reason, now=MID_JANUARY)
    assert info.value.code == "reason_required"
    assert not PlanChange.objects.exists() and not LocalPayment.objects.exists()


def test_only_upgrades(sue):
    s = subscription_setup()
    with pytest.raises(BillingError) as info:
        priced(s, sue, price=s.basic_month, quantity=3)
    assert info.value.code == "not_an_upgrade"


def test_the_change_rules_still_decide_when(sue):
    from billing.models import ChangeRule

    s = subscription_setup()
    ChangeRule.objects.filter(name="Upgrades").update(timing="period_end", charge="none", credit="none")
    with pytest.raises(BillingError) as info:
        priced(s, sue)
    assert info.value.code == "not_immediate"


@pytest.mark.parametrize(("card", "outcome"), [("pm_card_visa", "applied"),
                                               ("pm_card_authenticationRequired", "failed")])
def test_stripe_is_asked_for_an_off_session_payment(sue, stripe_standin, card, outcome):
    s = subscription_setup(payment_method=card)
    PaymentMethod.objects.filter(customer=s.customer).update(gateway="stripe", gateway_customer="cus_standin_1")
    change = emergency_upgrade_confirm(quote=priced(s, sue), actor=sue, reason="Outage", now=MID_JANUARY)
    [request] = stripe_standin.requests_to("POST", "/v1/payment_intents")
    assert request.params["off_session"] == "true" and "return_url" not in request.params
    assert (request.params["amount"], request.params["customer"]) == ("6142", "cus_standin_1")
    assert request.idempotency_key == change.payment_idempotency_key
    assert change.status == outcome
    if outcome == "failed":  # 3-D Secure cannot be asked of nobody: declined, nothing changed
        assert_nothing_changed(s)
