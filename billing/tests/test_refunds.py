"""Cash refunds of credit notes: staff with the permission, a reason, through the gateway, exactly once."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission

from billing.errors import BillingError
from billing.models import AuditEvent, BalanceEntry, CashRefund, LocalRefund
from billing.selectors import customer_balance
from billing.services.refunds import credit_note_refund
from billing.tests.factories import MID_JANUARY, UserFactory, credit_note_setup

pytestmark = pytest.mark.django_db


@pytest.fixture
def credit_note():
    s, note = credit_note_setup()
    assert note.total == Decimal("61.42") and customer_balance(customer=s.customer, currency="EUR") == note.total
    return note


def test_staff_refund_pays_the_card_back_and_debits_the_balance(credit_note):
    staff = UserFactory(is_staff=True)
    refund = credit_note_refund(credit_note=credit_note, actor=staff, reason="Customer closed the team", now=MID_JANUARY)
    assert refund.status == "succeeded" and refund.refund_reference.startswith("re_local_")
    local = LocalRefund.objects.get()
    assert (local.amount_minor, local.payment.reference) == (6142, refund.payment_reference)
    assert customer_balance(customer=credit_note.customer, currency="EUR") == 0
    events = AuditEvent.objects.filter(action__startswith="credit_note.cash_refund")
    assert [e.action for e in events.order_by("pk")] == ["credit_note.cash_refund_requested",
                                                         "credit_note.cash_refund_succeeded"]
    assert all(e.actor == staff and e.message == "Customer closed the team" for e in events)


def test_a_reason_is_required_and_nothing_happens_without_it(credit_note):
    with pytest.raises(BillingError) as info:
        credit_note_refund(credit_note=credit_note, actor=UserFactory(), reason="  ", now=MID_JANUARY)
    assert info.value.code == "reason_required" and not CashRefund.objects.exists()


def test_refunding_twice_is_refused(credit_note):
    staff = UserFactory()
    credit_note_refund(credit_note=credit_note, actor=staff, reason="once", now=MID_JANUARY)
    with pytest.raises(BillingError) as info:
        credit_note_refund(credit_note=credit_note, actor=staff, reason="twice", now=MID_JANUARY)
    assert info.value.code == "already_refunded" and LocalRefund.objects.count() == 1


def test_credit_already_used_cannot_be_paid_out(credit_note):
    BalanceEntry.objects.create(customer=credit_note.customer, currency="EUR", amount=Decimal("-10.00"),
                                kind="applied_to_change", description="used", created_at=MID_JANUARY)
    with pytest.raises(BillingError) as info:
        credit_note_refund(credit_note=credit_note, actor=UserFactory(), reason="x", now=MID_JANUARY)
    assert info.value.code == "balance_used" and not LocalRefund.objects.exists()


def test_the_admin_needs_the_permission_and_a_reason(client, credit_note):
    url = f"/admin/billing/invoice/{credit_note.pk}/refund/"
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_invoice"))
    client.force_login(staff)
    assert client.post(url, {"reason": "please"}).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="refund_credit_note"))
    client.force_login(staff)
    assert client.post(url, {"reason": ""}).status_code == 200  # the form asks for the reason
    assert not CashRefund.objects.exists()
    response = client.post(url, {"reason": "Goodwill after an outage"})
    assert response.status_code == 302 and CashRefund.objects.get().status == "succeeded"


def test_a_refund_whose_outcome_was_lost_is_resumed_with_the_same_key(credit_note, monkeypatch):
    from billing.payments import GatewayUnavailable
    from billing.payments.local import LocalGateway

    calls = []

    class Flaky(LocalGateway):
        def refund(self, **kwargs):
            calls.append(kwargs["idempotency_key"])
            result = super().refund(**kwargs)
            if len(calls) == 1:
                raise GatewayUnavailable("read timeout")  # the refund went through; the answer was lost
            return result

    monkeypatch.setattr("billing.services.refunds.get_gateway", lambda name=None: Flaky())
    staff = UserFactory()
    with pytest.raises(BillingError) as info:
        credit_note_refund(credit_note=credit_note, actor=staff, reason="closing", now=MID_JANUARY)
    assert info.value.code == "payment_unavailable" and CashRefund.objects.get().status == "pending"
    refund = credit_note_refund(credit_note=credit_note, actor=staff, reason="closing", now=MID_JANUARY)
    assert refund.status == "succeeded" and calls[0] == calls[1]
    assert LocalRefund.objects.count() == 1
    assert customer_balance(customer=credit_note.customer, currency="EUR") == 0
