"""Executing plan changes: exactly the quoted amounts, or nothing changes."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import transaction

from billing.errors import BillingError
from billing.models import AuditEvent, BalanceEntry, ChangeRule, LocalPayment, PaymentMethod, PlanChange, Quote, Subscription
from billing.money import Money
from billing.payments import GatewayUnavailable
from billing.payments.local import LocalGateway, local_payment_authenticate
from billing.services.plan_changes import (
    plan_change_cancel,
    plan_change_refresh_payment,
    plan_changes_reconcile,
    quote_accept,
)
from billing.services.quotes import quote_create
from billing.services.renewals import plan_changes_apply_due
from billing.tests.factories import BERLIN, MID_JANUARY, PERIOD_END, subscription_setup
from entitlements.selectors import entitlements_for_customer

pytestmark = pytest.mark.django_db


def state(setup) -> dict:
    """Everything a failed change must leave exactly as it was."""
    sub = Subscription.objects.get(pk=setup.subscription.pk)
    return {
        "subscription": (sub.price_id, sub.quantity, sub.current_period_start, sub.current_period_end, sub.version,
                         sub.status),
        "ledger": list(BalanceEntry.objects.values_list("amount", "kind")),
        "applied": PlanChange.objects.filter(status="applied").count(),
        "payments": list(LocalPayment.objects.filter(status="succeeded").values_list("amount_minor", flat=True)),
        "entitlements_version": type(setup.customer).objects.get(pk=setup.customer.pk).entitlements_version,
    }


def make_quote(setup, price=None, quantity=5, now=MID_JANUARY):
    return quote_create(subscription=Subscription.objects.get(pk=setup.subscription.pk),
                        to_price=price or setup.pro_month, quantity=quantity, now=now, actor=setup.owner)


def features(customer):
    customer.refresh_from_db()
    return {e.feature: (e.enabled, e.limit) for e in entitlements_for_customer(customer=customer)}


def test_accepted_upgrade_is_paid_applied_audited_and_entitled_at_once():
    s = subscription_setup()
    assert features(s.customer)["sso"] == (False, None)
    q = make_quote(s)
    change = quote_accept(quote=q, actor=s.owner, now=MID_JANUARY + timedelta(minutes=1))
    assert change.status == "applied" and change.amount_due == Decimal("61.42")
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert (sub.price_id, sub.quantity, sub.version) == (s.pro_month.pk, 5, 2)
    assert (sub.current_period_start, sub.current_period_end) == (s.subscription.current_period_start, PERIOD_END)
    payment = LocalPayment.objects.get()
    assert (payment.amount_minor, payment.currency, payment.status) == (6142, "EUR", "succeeded")
    assert change.payment_reference == payment.reference
    assert payment.idempotency_key == f"crossgrade-plan-change-{change.pk}"
    assert features(s.customer)["sso"] == (True, None) and features(s.customer)["storage"] == (True, 100)
    event = AuditEvent.objects.get(action="plan_change.applied")
    assert event.actor == s.owner and event.reason_code == "customer_upgrade"
    assert event.before["plan"] == "Analytics Basic" and event.after["plan"] == "Analytics Pro"
    assert event.before["version"] == 1 and event.after["version"] == 2
    assert Quote.objects.get(pk=q.pk).status == "accepted"


def test_declined_payment_changes_nothing_and_the_quote_can_be_retried():
    s = subscription_setup(payment_method="pm_card_chargeDeclined")
    before = state(s)
    q = make_quote(s)
    change = quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    assert change.status == "failed" and change.failure_code == "card_declined"
    assert change.failure_message == "Your card was declined."
    assert state(s) == before
    assert AuditEvent.objects.filter(action="plan_change.payment_declined").count() == 1
    # The customer fixes their card and tries the same quote again: a new payment, applied once.
    PaymentMethod.objects.filter(customer=s.customer).update(reference="pm_card_visa")
    retry = quote_accept(quote=Quote.objects.get(pk=q.pk), actor=s.owner, now=MID_JANUARY)
    assert retry.status == "applied" and retry.pk != change.pk
    assert LocalPayment.objects.filter(status="succeeded").count() == 1


def test_authentication_required_waits_then_completes_once():
    s = subscription_setup(payment_method="pm_card_authenticationRequired")
    before = state(s)
    change = quote_accept(quote=make_quote(s), actor=s.owner, now=MID_JANUARY)
    assert change.status == "requires_action"
    assert "/gateway/local/authenticate/" in change.next_action_url
    assert state(s) == before
    # Completing before authenticating changes nothing.
    assert plan_change_refresh_payment(plan_change=change, now=MID_JANUARY).status == "requires_action"
    local_payment_authenticate(reference=change.payment_reference, approve=True)
    done = plan_change_refresh_payment(plan_change=change, now=MID_JANUARY + timedelta(minutes=2))
    assert done.status == "applied"
    again = plan_change_refresh_payment(plan_change=done, now=MID_JANUARY + timedelta(minutes=3))
    assert again.status == "applied"
    assert Subscription.objects.get(pk=s.subscription.pk).version == 2
    assert AuditEvent.objects.filter(action="plan_change.applied").count() == 1


def test_failed_authentication_fails_the_change():
    s = subscription_setup(payment_method="pm_card_authenticationRequired")
    before = state(s)
    change = quote_accept(quote=make_quote(s), actor=s.owner, now=MID_JANUARY)
    local_payment_authenticate(reference=change.payment_reference, approve=False)
    done = plan_change_refresh_payment(plan_change=change, now=MID_JANUARY)
    assert done.status == "failed" and done.failure_code == "authentication_failed"
    assert state(s) == before


def test_expired_quote_is_refused():
    s = subscription_setup()
    q = make_quote(s)
    before = state(s)
    with pytest.raises(BillingError) as info:
        quote_accept(quote=q, actor=s.owner, now=q.expires_at)
    assert info.value.code == "quote_expired"
    assert state(s) == before and not PlanChange.objects.exists()


def test_subscription_changed_since_the_quote_is_refused():
    s = subscription_setup()
    stale = make_quote(s)
    quote_accept(quote=make_quote(s, s.business_month, 5), actor=s.owner, now=MID_JANUARY)
    before = state(s)
    with pytest.raises(BillingError) as info:
        quote_accept(quote=stale, actor=s.owner, now=MID_JANUARY)
    assert info.value.code == "subscription_changed"
    assert state(s) == before


def test_balance_changed_since_the_quote_is_refused():
    s = subscription_setup()
    q = make_quote(s)
    BalanceEntry.objects.create(customer=s.customer, currency="EUR", amount=Decimal("5"), kind="adjustment",
                                description="goodwill", created_at=MID_JANUARY)
    with pytest.raises(BillingError) as info:
        quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    assert info.value.code == "balance_changed"
    assert not PlanChange.objects.exists()


def test_accepting_twice_is_refused_and_charges_once():
    s = subscription_setup()
    q = make_quote(s)
    quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    with pytest.raises(BillingError) as info:
        quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    assert info.value.code == "quote_already_accepted"
    assert LocalPayment.objects.count() == 1


def test_change_needing_approval_nobody_is_set_up_to_give_is_refused_with_reason():
    """With an approval policy it is held instead (billing/tests/test_approvals.py)."""
    s = subscription_setup()
    ChangeRule.objects.filter(name="Upgrades").update(requires_approval=True)
    with pytest.raises(BillingError) as info:
        quote_accept(quote=make_quote(s), actor=s.owner, now=MID_JANUARY)
    assert info.value.code == "approval_not_configured"
    assert not PlanChange.objects.exists()


def test_no_payment_method_is_refused():
    s = subscription_setup()
    PaymentMethod.objects.all().delete()
    with pytest.raises(BillingError) as info:
        quote_accept(quote=make_quote(s), actor=s.owner, now=MID_JANUARY)
    assert info.value.code == "no_payment_method"


class FlakyGateway(LocalGateway):
    """The provider times out after taking the payment: the outcome is unknown to us."""

    calls = 0

    def charge(self, **kwargs):
        type(self).calls += 1
        result = super().charge(**kwargs)
        if type(self).calls == 1:
            raise GatewayUnavailable("read timeout")
        return result


def test_unknown_payment_outcome_is_resumed_with_the_same_key_and_charged_once(monkeypatch):
    s = subscription_setup()
    FlakyGateway.calls = 0
    monkeypatch.setattr("billing.services.plan_changes.get_gateway", lambda name=None: FlakyGateway())
    q = make_quote(s)
    with pytest.raises(BillingError) as info:
        quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    assert info.value.code == "payment_unavailable" and info.value.status == 503
    change = PlanChange.objects.get()
    assert change.status == "pending"
    assert Subscription.objects.get(pk=s.subscription.pk).version == 1
    # The client retries: the same payment (same gateway key) is found and the change applied.
    resumed = quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    assert resumed.pk == change.pk and resumed.status == "applied"
    assert LocalPayment.objects.count() == 1 and FlakyGateway.calls == 2


def test_reconciler_settles_a_pending_change_left_by_a_crash(monkeypatch, settings):
    s = subscription_setup()
    FlakyGateway.calls = 0
    monkeypatch.setattr("billing.services.plan_changes.get_gateway", lambda name=None: FlakyGateway())
    with pytest.raises(BillingError):
        quote_accept(quote=make_quote(s), actor=s.owner, now=MID_JANUARY)
    assert plan_changes_reconcile(now=MID_JANUARY + timedelta(seconds=30))["applied"] == 0  # too fresh
    counts = plan_changes_reconcile(now=MID_JANUARY + settings.PAYMENT_RECONCILE_AFTER)
    assert counts["applied"] == 1
    assert PlanChange.objects.get().status == "applied" and LocalPayment.objects.count() == 1


def test_reconciler_cancels_a_change_never_authenticated(settings):
    s = subscription_setup(payment_method="pm_card_authenticationRequired")
    before = state(s)
    quote_accept(quote=make_quote(s), actor=s.owner, now=MID_JANUARY)
    counts = plan_changes_reconcile(now=MID_JANUARY + settings.PAYMENT_ACTION_TIMEOUT)
    assert counts["cancelled"] == 1
    change = PlanChange.objects.get()
    assert change.status == "cancelled" and change.failure_code == "authentication_timeout"
    assert state(s) == before


def test_gateway_refuses_to_be_called_inside_a_transaction():
    with pytest.raises(RuntimeError, match="inside a database transaction"), transaction.atomic():
        LocalGateway().charge(payment_method="pm_card_visa", amount=Money(Decimal("1.00"), "EUR"),
                              idempotency_key="k", description="", return_url="")


def test_scheduled_downgrade_then_sweep_applies_exactly_once():
    s = subscription_setup()
    quote_accept(quote=make_quote(s), actor=s.owner, now=MID_JANUARY)  # Basic → Pro now
    change = quote_accept(quote=make_quote(s, s.basic_month, 5), actor=s.owner, now=MID_JANUARY)
    assert change.status == "scheduled" and change.effective_at == PERIOD_END and change.amount_due == 0
    assert LocalPayment.objects.count() == 1
    assert plan_changes_apply_due(now=PERIOD_END - timedelta(seconds=1)) == 0
    out = io.StringIO()
    call_command("apply_due_changes", "--now", PERIOD_END.isoformat(), stdout=out)
    assert "Applied 1 scheduled change" in out.getvalue()
    call_command("apply_due_changes", "--now", (PERIOD_END + timedelta(hours=1)).isoformat(), stdout=out)
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert sub.price_id == s.basic_month.pk and sub.version == 3
    assert sub.current_period_start == PERIOD_END
    assert sub.current_period_end == datetime(2026, 3, 1, tzinfo=BERLIN)
    assert AuditEvent.objects.filter(action="plan_change.applied", object_id=str(change.pk)).count() == 1
    assert features(s.customer)["sso"] == (False, None)


def test_apply_due_changes_rejects_a_bad_now():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--now"):
        call_command("apply_due_changes", "--now", "yesterday")


def test_scheduled_changes_are_superseded_by_a_newer_choice_and_by_an_immediate_change():
    s = subscription_setup()
    quote_accept(quote=make_quote(s, s.business_month, 5), actor=s.owner, now=MID_JANUARY)
    first = quote_accept(quote=make_quote(s, s.pro_month, 5), actor=s.owner, now=MID_JANUARY)
    second = quote_accept(quote=make_quote(s, s.basic_month, 5), actor=s.owner, now=MID_JANUARY)
    first.refresh_from_db()
    assert first.status == "cancelled" and first.failure_code == "superseded"
    assert second.status == "scheduled"
    q = make_quote(s, s.business_month, 8)
    assert q.supersedes == [second.pk]
    quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    second.refresh_from_db()
    assert second.status == "cancelled"
    assert plan_changes_apply_due(now=PERIOD_END) == 1  # the renewal, on the terms of the immediate change
    second.refresh_from_db()
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert second.status == "cancelled" and (sub.price_id, sub.quantity) == (s.business_month.pk, 8)


def test_customer_cancels_a_scheduled_change():
    s = subscription_setup()
    s.subscription.price = s.pro_month
    s.subscription.save()
    change = quote_accept(quote=make_quote(s, s.basic_month, 5), actor=s.owner, now=MID_JANUARY)
    plan_change_cancel(plan_change=change, actor=s.owner, now=MID_JANUARY)
    assert PlanChange.objects.get(pk=change.pk).status == "cancelled"
    assert plan_changes_apply_due(now=PERIOD_END) == 1  # renews on Pro: the cancelled downgrade stays cancelled
    assert PlanChange.objects.get(pk=change.pk).status == "cancelled"
    assert Subscription.objects.get(pk=s.subscription.pk).price_id == s.pro_month.pk
    with pytest.raises(BillingError) as info:
        plan_change_cancel(plan_change=change, actor=s.owner, now=MID_JANUARY)
    assert info.value.code == "not_cancellable"
    assert AuditEvent.objects.filter(action="plan_change.cancelled").count() == 1


def test_immediate_downgrade_credits_the_balance_which_pays_the_next_upgrade():
    s = subscription_setup()
    ChangeRule.objects.filter(name="Downgrades").update(timing="now", charge="prorated", credit="prorated")
    s.subscription.price = s.pro_month
    s.subscription.save()
    down = quote_accept(quote=make_quote(s, s.basic_month, 5), actor=s.owner, now=MID_JANUARY)
    # credit −129.03, charge 77.42: subtotal −51.61, tax −9.81, total −61.42 → credited, nothing refunded.
    assert down.status == "applied" and down.total == Decimal("-61.42") and down.amount_due == 0
    assert LocalPayment.objects.count() == 0
    entry = BalanceEntry.objects.get()
    assert (entry.amount, entry.kind) == (Decimal("61.42"), "change_credit")
    up = quote_accept(quote=make_quote(s, s.pro_month, 5), actor=s.owner, now=MID_JANUARY)
    assert (up.balance_applied, up.amount_due) == (Decimal("61.42"), Decimal("0.00"))
    assert up.status == "applied" and LocalPayment.objects.count() == 0
    assert sum(BalanceEntry.objects.values_list("amount", flat=True)) == 0


def test_cancelling_a_change_waiting_for_authentication_cancels_the_payment_too():
    s = subscription_setup(payment_method="pm_card_authenticationRequired")
    before = state(s)
    q = make_quote(s)
    change = quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    plan_change_cancel(plan_change=change, actor=s.owner, now=MID_JANUARY)
    payment = LocalPayment.objects.get()
    assert payment.status == "canceled"
    # The customer approves on the bank page afterwards: nothing happens.
    assert local_payment_authenticate(reference=payment.reference, approve=True).status == "canceled"
    assert plan_change_refresh_payment(plan_change=PlanChange.objects.get(pk=change.pk),
                                       now=MID_JANUARY).status == "cancelled"
    assert state(s) == before
    # The quote can be accepted again; there is still only the one new payment in the end.
    PaymentMethod.objects.filter(customer=s.customer).update(reference="pm_card_visa")
    again = quote_accept(quote=Quote.objects.get(pk=q.pk), actor=s.owner, now=MID_JANUARY)
    assert again.status == "applied"
    assert list(LocalPayment.objects.values_list("status", flat=True).order_by("pk")) == ["canceled", "succeeded"]


def test_cancel_loses_the_race_to_authentication_and_the_change_applies():
    s = subscription_setup(payment_method="pm_card_authenticationRequired")
    change = quote_accept(quote=make_quote(s), actor=s.owner, now=MID_JANUARY)
    local_payment_authenticate(reference=change.payment_reference, approve=True)
    with pytest.raises(BillingError) as info:
        plan_change_cancel(plan_change=change, actor=s.owner, now=MID_JANUARY)
    assert info.value.code == "not_cancellable"
    assert PlanChange.objects.get(pk=change.pk).status == "applied"
    assert LocalPayment.objects.get().status == "succeeded"


def test_a_payment_arriving_for_a_closed_change_is_credited_once():
    from billing.payments import PaymentResult
    from billing.services.plan_changes import plan_change_record_payment

    s = subscription_setup(payment_method="pm_card_authenticationRequired")
    change = quote_accept(quote=make_quote(s), actor=s.owner, now=MID_JANUARY)
    PlanChange.objects.filter(pk=change.pk).update(status="cancelled")
    paid = PaymentResult(status="succeeded", reference=change.payment_reference)
    for _ in range(2):
        plan_change_record_payment(plan_change_id=change.pk, result=paid, now=MID_JANUARY)
    entry = BalanceEntry.objects.get()
    assert (entry.kind, entry.amount) == ("payment_credit", change.amount_due)
    assert AuditEvent.objects.filter(action="plan_change.payment_credited").count() == 1


class UnreachableGateway(LocalGateway):
    """The request never reached the provider."""

    def charge(self, **kwargs):
        raise GatewayUnavailable("connect timeout")


def test_reconciler_fails_a_pending_change_the_gateway_never_took(monkeypatch, settings):
    s = subscription_setup()
    monkeypatch.setattr("billing.services.plan_changes.get_gateway", lambda name=None: UnreachableGateway())
    before = state(s)
    with pytest.raises(BillingError):
        quote_accept(quote=make_quote(s), actor=s.owner, now=MID_JANUARY)
    # The card is even removed meanwhile: the change kept its own copy of the reference.
    PaymentMethod.objects.all().delete()
    # Not concluded while a search could still lag behind the charge …
    assert plan_changes_reconcile(now=MID_JANUARY + settings.PAYMENT_RECONCILE_AFTER)["failed"] == 0
    assert PlanChange.objects.get().status == "pending"
    counts = plan_changes_reconcile(now=MID_JANUARY + settings.PAYMENT_NOT_TAKEN_AFTER)
    assert counts["failed"] == 1 and counts["errors"] == 0
    change = PlanChange.objects.get()
    assert change.status == "failed" and change.failure_code == "payment_not_taken"
    assert state(s) == before and not LocalPayment.objects.exists()


def test_one_broken_change_does_not_stop_the_reconciler(monkeypatch, settings):
    s = subscription_setup(payment_method="pm_card_authenticationRequired")
    broken = quote_accept(quote=make_quote(s), actor=s.owner, now=MID_JANUARY)
    PlanChange.objects.filter(pk=broken.pk).update(payment_reference="pi_local_missing")
    other = subscription_setup_for_another_customer(s)
    PaymentMethod.objects.filter(customer=other.customer).update(reference="pm_card_authenticationRequired")
    waiting = quote_accept(quote=make_quote(other), actor=other.owner, now=MID_JANUARY)
    assert waiting.status == "requires_action"
    local_payment_authenticate(reference=waiting.payment_reference, approve=True)
    counts = plan_changes_reconcile(now=MID_JANUARY + timedelta(minutes=5))
    assert counts["errors"] == 1 and counts["applied"] == 1
    assert PlanChange.objects.get(pk=waiting.pk).status == "applied"


def test_sweep_fails_a_change_for_a_cancelled_subscription_and_goes_on():
    s = subscription_setup()
    s.subscription.price = s.pro_month
    s.subscription.save()
    doomed = quote_accept(quote=make_quote(s, s.basic_month, 5), actor=s.owner, now=MID_JANUARY)
    other = subscription_setup_for_another_customer(s)
    Subscription.objects.filter(pk=other.subscription.pk).update(price=s.pro_month)
    fine = quote_accept(quote=make_quote(other, s.basic_month, 5), actor=other.owner, now=MID_JANUARY)
    Subscription.objects.filter(pk=s.subscription.pk).update(status="cancelled")
    assert plan_changes_apply_due(now=PERIOD_END) == 1
    doomed.refresh_from_db()
    assert doomed.status == "failed" and doomed.failure_code == "subscription_not_active"
    assert PlanChange.objects.get(pk=fine.pk).status == "applied"


def subscription_setup_for_another_customer(s):
    """A second customer on the same catalog (Basic × 5 monthly, same period)."""
    from billing.tests.factories import CustomerFactory, MembershipFactory, PaymentMethodFactory, Setup

    customer = CustomerFactory()
    owner = MembershipFactory(customer=customer, role="owner").user
    PaymentMethodFactory(customer=customer)
    sub = Subscription.objects.create(customer=customer, product=s.product, price=s.basic_month, quantity=5,
                                      current_period_start=s.subscription.current_period_start,
                                      current_period_end=s.subscription.current_period_end)
    return Setup(customer, owner, owner, owner, s.product, s.basic, s.pro, s.business, s.basic_month, s.pro_month,
                 s.business_month, s.pro_year, sub, s.feature_sso, s.feature_storage)


def test_cancellation_at_period_end_keeps_everything_until_then_and_can_be_undone():
    s = subscription_setup()
    q = quote_create(subscription=s.subscription, to_price=None, quantity=0, now=MID_JANUARY, actor=s.owner,
                     cancel=True)
    assert (q.direction, q.timing, q.effective_at, q.amount_due, q.next_period_amount) == (
        "cancel", "period_end", PERIOD_END, 0, 0)
    change = quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    assert change.status == "scheduled"
    assert features(s.customer)["storage"] == (True, 10)  # still there until the period ends
    plan_change_cancel(plan_change=change, actor=s.owner, now=MID_JANUARY)  # the customer changes their mind
    assert plan_changes_apply_due(now=PERIOD_END - timedelta(seconds=1)) == 0
    again = quote_accept(quote=quote_create(subscription=Subscription.objects.get(pk=s.subscription.pk),
                                            to_price=None, quantity=0, now=MID_JANUARY, actor=s.owner, cancel=True),
                         actor=s.owner, now=MID_JANUARY)
    assert plan_changes_apply_due(now=PERIOD_END) == 1
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert sub.status == "cancelled" and sub.price_id == s.basic_month.pk and sub.quantity == 5
    assert features(s.customer)["storage"] == (False, 0)
    assert AuditEvent.objects.get(action="plan_change.applied", object_id=str(again.pk)).after["status"] == "cancelled"


def test_immediate_cancellation_credits_unused_time_when_the_rule_says_so():
    s = subscription_setup()
    ChangeRule.objects.filter(name="Cancellations").update(timing="now", credit="prorated")
    q = quote_create(subscription=s.subscription, to_price=None, quantity=0, now=MID_JANUARY, actor=s.owner,
                     cancel=True)
    assert [line["amount"] for line in q.lines] == ["-77.42"]
    assert (q.total, q.amount_due, q.balance_after) == (Decimal("-92.13"), 0, Decimal("92.13"))
    change = quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    assert change.status == "applied" and LocalPayment.objects.count() == 0
    assert Subscription.objects.get(pk=s.subscription.pk).status == "cancelled"
    assert BalanceEntry.objects.get().amount == Decimal("92.13")


def test_cancellation_refused_when_no_rule_allows_it():
    s = subscription_setup()
    ChangeRule.objects.filter(name="Cancellations").update(allowed=False,
                                                           refusal_reason="Call us to cancel an annual contract.")
    with pytest.raises(BillingError) as info:
        quote_create(subscription=s.subscription, to_price=None, quantity=0, now=MID_JANUARY, actor=s.owner,
                     cancel=True)
    assert info.value.detail == "Call us to cancel an annual contract."
