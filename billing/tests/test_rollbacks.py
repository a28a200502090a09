"""Rolling back applied plan changes: terms, documents, ledger and entitlements restored; every refusal."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from billing.errors import BillingError
from billing.models import (
    AuditEvent,
    BalanceEntry,
    CashRefund,
    ChangeRule,
    Customer,
    Invoice,
    LocalRefund,
    PaymentMethod,
    PlanChange,
    PlanChangeRollback,
    Subscription,
)
from billing.selectors import customer_balance
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.services.refunds import credit_note_refund
from billing.services.renewals import plan_changes_apply_due
from billing.services.rollbacks import plan_change_rollback, plan_change_rollback_preview
from billing.tests.factories import (
    BERLIN,
    MID_JANUARY,
    PERIOD_END,
    PERIOD_START,
    credit_note_setup,
    staff_user,
    subscription_setup,
)
from entitlements.selectors import entitlements_compute, entitlements_for_customer

pytestmark = pytest.mark.django_db

NEXT_DAY = MID_JANUARY + timedelta(days=1)


@pytest.fixture
def support():
    return staff_user("rollback_plan_change", "view_planchange", username="sue")


@pytest.fixture
def finance():
    return staff_user("rollback_plan_change", "refund_credit_note", "view_planchange", username="fiona")


def change_to(s, price, quantity: int = 5, at: datetime = MID_JANUARY, actor=None) -> PlanChange:
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    quote = quote_create(subscription=subscription, to_price=price, quantity=quantity, now=at, actor=actor or s.owner)
    return quote_accept(quote=quote, actor=actor or s.owner, now=at)


@pytest.fixture
def upgraded():
    """Worked example A: Basic × 5 → Pro × 5 on 16 Jan, 61.42 EUR paid by card."""
    s = subscription_setup()
    s.entitled_before = entitlements_compute(customer_id=s.customer.pk)
    change = change_to(s, s.pro_month)
    assert change.status == "applied" and change.amount_due == Decimal("61.42")
    return s, change


def rolled_back(change, actor, **kwargs):
    kwargs.setdefault("reason", "Upgraded the wrong account")
    kwargs.setdefault("now", NEXT_DAY)
    return plan_change_rollback(plan_change=change, actor=actor, **kwargs)


def refusal(change, actor, **kwargs) -> str:
    with pytest.raises(BillingError) as info:
        rolled_back(change, actor, **kwargs)
    return info.value.code


def test_rollback_restores_the_terms_and_reverses_the_invoice_with_a_credit_note(upgraded, support):
    s, change = upgraded
    invoice = Invoice.objects.get(plan_change=change, kind="invoice")
    outcome = rolled_back(change, support)
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    assert (subscription.price, subscription.quantity, subscription.status) == (s.basic_month, 5, "active")
    assert (subscription.current_period_start, subscription.current_period_end) == (PERIOD_START, PERIOD_END)
    assert subscription.version == 3  # 1, the upgrade, the rollback: a quote priced on the upgrade is stale now
    change.refresh_from_db()
    assert change.status == "rolled_back" and change.closed_at == NEXT_DAY
    note = outcome.rollback.document
    assert (note.kind, note.billing_reason, note.status, note.related_invoice) == ("credit_note", "rollback", "issued",
                                                                                   invoice)
    assert note.number.startswith("CGC-2026-") and note.plan_change == change
    # Worked example A, reversed in full: 51.61 net, 9.81 VAT, 61.42 credited (a credit note states credited amounts)
    assert (note.subtotal, note.tax_total, note.total) == (Decimal("51.61"), Decimal("9.81"), Decimal("61.42"))
    assert note.tax_breakdown == invoice.tax_breakdown
    assert [(line.description, line.amount) for line in note.lines.all()] == [
        (line.description, line.amount) for line in invoice.lines.all()]
    assert [line.amount for line in note.lines.all()] == [Decimal("-77.42"), Decimal("129.03")]
    assert customer_balance(customer=s.customer, currency="EUR") == Decimal("61.42")
    entry = BalanceEntry.objects.get(kind="rollback_credit")
    assert (entry.amount, entry.invoice, entry.plan_change) == (Decimal("61.42"), note, change)
    rollback = PlanChangeRollback.objects.get()
    assert (rollback.plan_change, rollback.created_by, rollback.reason) == (change, support, "Upgraded the wrong account")
    assert rollback.balance_amount == Decimal("61.42") and not rollback.refund_requested
    assert rollback.restored["price_id"] == s.basic_month.pk and rollback.replaced["price_id"] == s.pro_month.pk


def test_entitlements_follow_the_rollback_at_once(upgraded, support):
    s, change = upgraded
    customer = Customer.objects.get(pk=s.customer.pk)
    upgraded_entitlements = entitlements_for_customer(customer=customer)  # cached under the current version
    assert {e.feature for e in upgraded_entitlements if e.enabled} == {"sso", "storage"}
    rolled_back(change, support)
    customer.refresh_from_db()
    now_entitled = entitlements_for_customer(customer=customer)
    assert now_entitled == s.entitled_before != upgraded_entitlements
    storage = next(e for e in now_entitled if e.feature == "storage")
    assert (storage.limit, storage.sources) == (10, ("plan:analytics/basic",))
    assert not next(e for e in now_entitled if e.feature == "sso").enabled


def test_the_audit_trail_shows_the_change_and_its_rollback_linking_each_other(upgraded, support):
    s, change = upgraded
    rollback = rolled_back(change, support).rollback
    applied = AuditEvent.objects.get(action="plan_change.applied", object_id=str(change.pk))
    event = AuditEvent.objects.get(action="plan_change.rolled_back")
    assert (event.object_type, event.object_id, event.actor, event.customer) == (
        "billing.PlanChange", str(change.pk), support, s.customer)
    assert event.reason_code == "staff_rollback" and event.message.startswith("Upgraded the wrong account")
    assert event.after["rolls_back_event"] == applied.pk == rollback.change_event_id
    assert event.after["rollback_id"] == rollback.pk and event.after["document"] == rollback.document.number
    assert event.before == applied.after  # it undoes exactly what the change did, back to what was there before
    assert (event.after["price_id"], event.after["quantity"]) == (applied.before["price_id"], applied.before["quantity"])
    for key in ("current_period_start", "current_period_end"):
        assert datetime.fromisoformat(event.after[key]) == datetime.fromisoformat(applied.before[key])


def test_the_balance_the_change_used_comes_back_and_only_the_card_part_is_refunded(finance):
    s = subscription_setup()
    BalanceEntry.objects.create(customer=s.customer, currency="EUR", amount=Decimal("20.00"), kind="adjustment",
                                description="goodwill", created_at=MID_JANUARY)
    change = change_to(s, s.pro_month)
    assert (change.balance_applied, change.amount_due) == (Decimal("20.00"), Decimal("41.42"))
    assert customer_balance(customer=s.customer, currency="EUR") == 0
    outcome = rolled_back(change, finance, refund=True)
    assert outcome.refund.status == "succeeded" and not outcome.refund_error
    assert outcome.rollback.document.total == Decimal("61.42")  # the whole invoice is reversed …
    assert outcome.refund.amount == Decimal("41.42")  # … the card gets back what it paid …
    assert outcome.refund.payment_reference == change.payment_reference
    assert LocalRefund.objects.get().amount_minor == 4142
    assert customer_balance(customer=s.customer, currency="EUR") == Decimal("20.00")  # … and the 20.00 is balance again


def test_refund_in_cash_through_the_local_gateway(upgraded, finance):
    s, change = upgraded
    outcome = rolled_back(change, finance, refund=True)
    refund = CashRefund.objects.get()
    assert outcome.refund == refund and refund.credit_note == outcome.rollback.document
    assert (refund.status, refund.amount, refund.reason) == ("succeeded", Decimal("61.42"), "Upgraded the wrong account")
    local = LocalRefund.objects.get()
    assert (local.amount_minor, local.payment.reference) == (6142, change.payment_reference)
    assert customer_balance(customer=s.customer, currency="EUR") == 0
    assert PlanChangeRollback.objects.get().refund_requested
    assert list(BalanceEntry.objects.filter(customer=s.customer).order_by("pk").values_list("kind", "amount")) == [
        ("rollback_credit", Decimal("61.42")), ("cash_refund", Decimal("-61.42"))]


def test_a_cash_refund_needs_the_refund_permission(upgraded, support):
    s, change = upgraded
    assert refusal(change, support, refund=True) == "permission_denied"
    assert PlanChange.objects.get(pk=change.pk).status == "applied"


def test_a_refund_the_gateway_refuses_leaves_the_rollback_and_the_credit(upgraded, finance, monkeypatch):
    from billing.payments.base import RefundResult
    from billing.payments.local import LocalGateway

    s, change = upgraded
    monkeypatch.setattr(LocalGateway, "refund", lambda self, **kw: RefundResult(status="failed", reference="",
                                                                               failure_message="Charge disputed"))
    outcome = rolled_back(change, finance, refund=True)
    assert outcome.refund.status == "failed" and outcome.refund_error == "Charge disputed"
    assert PlanChange.objects.get(pk=change.pk).status == "rolled_back"
    assert customer_balance(customer=s.customer, currency="EUR") == Decimal("61.42")


def test_a_credit_note_of_a_rollback_refunded_later_pays_back_the_card_part_only(finance):
    s = subscription_setup()
    BalanceEntry.objects.create(customer=s.customer, currency="EUR", amount=Decimal("20.00"), kind="adjustment",
                                description="goodwill", created_at=MID_JANUARY)
    change = change_to(s, s.pro_month)
    note = rolled_back(change, finance).rollback.document
    refund = credit_note_refund(credit_note=note, actor=finance, reason="Customer asked for cash", now=NEXT_DAY)
    assert (refund.status, refund.amount, refund.payment_reference) == ("succeeded", Decimal("41.42"),
                                                                        change.payment_reference)
    assert customer_balance(customer=s.customer, currency="EUR") == Decimal("20.00")


@pytest.fixture
def downgraded():
    """Pro × 5 → Basic × 5 at once on 16 Jan: a credit note of 61.42 held as balance."""
    s = subscription_setup()
    Subscription.objects.filter(pk=s.subscription.pk).update(price=s.pro_month)
    ChangeRule.objects.filter(name="Downgrades").update(timing="now", charge="prorated", credit="prorated")
    change = change_to(s, s.basic_month)
    assert change.status == "applied" and change.total == Decimal("-61.42")
    assert customer_balance(customer=s.customer, currency="EUR") == Decimal("61.42")
    return s, change


def test_rolling_back_a_downgrade_takes_its_credit_back_with_an_invoice_paid_from_the_balance(downgraded, support):
    s, change = downgraded
    note = Invoice.objects.get(plan_change=change, kind="credit_note")
    outcome = rolled_back(change, support)
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    assert (subscription.price, subscription.quantity) == (s.pro_month, 5)
    invoice = outcome.rollback.document
    assert (invoice.kind, invoice.billing_reason, invoice.status, invoice.related_invoice) == (
        "invoice", "rollback", "paid", note)
    assert (invoice.total, invoice.balance_applied, invoice.amount_due, invoice.amount_paid) == (
        Decimal("61.42"), Decimal("61.42"), 0, 0)
    assert invoice.number.startswith("CG-2026-")
    assert customer_balance(customer=s.customer, currency="EUR") == 0
    entry = BalanceEntry.objects.get(kind="rollback_debit")
    assert (entry.amount, entry.invoice) == (Decimal("-61.42"), invoice)
    assert outcome.rollback.balance_amount == Decimal("-61.42")


def test_a_downgrade_whose_credit_was_used_cannot_be_rolled_back(downgraded, support):
    s, change = downgraded
    BalanceEntry.objects.create(customer=s.customer, currency="EUR", amount=Decimal("-10.00"),
                                kind="applied_to_invoice", description="used", created_at=MID_JANUARY)
    assert refusal(change, support) == "credit_used"


def test_a_downgrade_whose_credit_was_paid_out_cannot_be_rolled_back(finance):
    s, note = credit_note_setup()  # Basic → Pro paid by card, then Pro → Basic at once: credit note 61.42
    credit_note_refund(credit_note=note, actor=finance, reason="cash please", now=MID_JANUARY)
    assert refusal(note.plan_change, finance) == "credit_refunded"


def test_nothing_to_refund_for_a_downgrade(downgraded, finance):
    s, change = downgraded
    assert refusal(change, finance, refund=True) == "nothing_to_refund"
    assert not PlanChangeRollback.objects.exists()


def test_a_later_credit_note_does_not_reference_an_invoice_that_a_rollback_reversed(support):
    s = subscription_setup()
    ChangeRule.objects.filter(name="Downgrades").update(timing="now", charge="prorated", credit="prorated")
    kept = change_to(s, s.pro_month)  # Basic → Pro: invoice 1, which stays
    reversed_ = change_to(s, s.business_month, at=MID_JANUARY + timedelta(hours=1))  # Pro → Business: invoice 2 …
    rolled_back(reversed_, support)  # … reversed in full
    downgrade = change_to(s, s.basic_month, at=NEXT_DAY + timedelta(hours=1))  # Pro → Basic at once: a credit note
    note = Invoice.objects.get(plan_change=downgrade, kind="credit_note")
    assert note.related_invoice == Invoice.objects.get(plan_change=kept, kind="invoice")


def test_an_interval_change_gets_its_old_period_back(support):
    s = subscription_setup()
    change = change_to(s, s.pro_year)
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    assert subscription.current_period_end == datetime(2027, 1, 16, 12, tzinfo=BERLIN)
    rolled_back(change, support)
    subscription.refresh_from_db()
    assert (subscription.price, subscription.current_period_start, subscription.current_period_end) == (
        s.basic_month, PERIOD_START, PERIOD_END)


def test_the_preview_states_exactly_what_the_rollback_does(upgraded, support):
    s, change = upgraded
    plan = plan_change_rollback_preview(plan_change=change, now=NEXT_DAY)
    assert (plan.restore_price, plan.restore_quantity, plan.restore_period_start, plan.restore_period_end) == (
        s.basic_month, 5, PERIOD_START, PERIOD_END)
    assert (plan.reversal_kind, plan.reversal_total, plan.balance_before, plan.balance_after, plan.refundable) == (
        "credit_note", Decimal("61.42"), 0, Decimal("61.42"), Decimal("61.42"))
    outcome = rolled_back(change, support)
    assert outcome.rollback.document.total == plan.reversal_total
    assert customer_balance(customer=s.customer, currency="EUR") == plan.balance_after


# --- refusals -----------------------------------------------------------------------------------------------------

def test_refused_after_the_window(upgraded, support, settings):
    s, change = upgraded
    settings.ROLLBACK_WINDOW_DAYS = 2
    assert refusal(change, support, now=MID_JANUARY + timedelta(days=2, seconds=1)) == "window_passed"
    rolled_back(change, support, now=MID_JANUARY + timedelta(days=2))  # the last moment of the window


def test_refused_when_a_later_change_built_on_it_until_that_one_is_rolled_back(upgraded, support):
    s, change = upgraded
    later = change_to(s, s.business_month, at=MID_JANUARY + timedelta(hours=2))
    assert later.status == "applied"
    assert refusal(change, support) == "later_change"
    rolled_back(later, support)
    rolled_back(change, support, now=NEXT_DAY + timedelta(minutes=1))
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    assert (subscription.price, subscription.quantity) == (s.basic_month, 5)
    assert customer_balance(customer=s.customer, currency="EUR") == later.total + change.total
    assert Invoice.objects.filter(kind="credit_note", billing_reason="rollback").count() == 2


def test_refused_when_a_change_was_scheduled_after_it(upgraded, support):
    s, change = upgraded
    scheduled = change_to(s, s.basic_month, at=MID_JANUARY + timedelta(hours=1))  # a downgrade at period end
    assert scheduled.status == "scheduled"
    assert refusal(change, support) == "later_change"
    from billing.services.plan_changes import plan_change_cancel

    plan_change_cancel(plan_change=scheduled, actor=s.owner, now=NEXT_DAY)
    rolled_back(change, support)


def test_refused_after_a_renewal(upgraded, support, settings):
    s, change = upgraded
    settings.ROLLBACK_WINDOW_DAYS = 60
    assert plan_changes_apply_due(now=PERIOD_END) == 1
    assert Invoice.objects.filter(billing_reason="renewal").exists()
    assert refusal(change, support, now=PERIOD_END + timedelta(hours=1)) == "renewed_since"


def test_refused_once_its_period_has_ended_even_before_the_renewal_ran(upgraded, support, settings):
    s, change = upgraded
    settings.ROLLBACK_WINDOW_DAYS = 60
    assert refusal(change, support, now=PERIOD_END) == "period_ended"


def test_refused_a_second_time(upgraded, support):
    s, change = upgraded
    rolled_back(change, support)
    assert refusal(change, support) == "already_rolled_back"
    assert PlanChangeRollback.objects.count() == 1
    assert Invoice.objects.filter(kind="credit_note").count() == 1


def test_refused_for_changes_that_did_not_apply(support):
    s = subscription_setup(payment_method="pm_card_chargeDeclined")
    failed = change_to(s, s.pro_month)
    assert failed.status == "failed"
    assert refusal(failed, support) == "not_applied"
    scheduled = change_to(s, s.basic_month, quantity=3)  # fewer seats: a downgrade, at period end
    assert scheduled.status == "scheduled"
    assert refusal(scheduled, support) == "not_applied"


def test_refused_for_a_change_applied_by_the_renewal_step(support, settings):
    s = subscription_setup()
    settings.ROLLBACK_WINDOW_DAYS = 60
    scheduled = change_to(s, s.basic_month, quantity=3)
    plan_changes_apply_due(now=PERIOD_END)
    scheduled.refresh_from_db()
    assert scheduled.status == "applied"
    assert refusal(scheduled, support, now=PERIOD_END + timedelta(hours=1)) == "applied_at_renewal"


def test_refused_without_the_permission(upgraded):
    s, change = upgraded
    for user in (staff_user("view_planchange", username="viewer"), s.owner):
        assert refusal(change, user) == "permission_denied"
    assert PlanChange.objects.get(pk=change.pk).status == "applied" and not Invoice.objects.filter(
        kind="credit_note").exists()


@pytest.mark.parametrize("reason", ["", "   "])
def test_refused_without_a_reason(upgraded, support, reason):
    s, change = upgraded
    assert refusal(change, support, reason=reason) == "reason_required"
    assert PlanChange.objects.get(pk=change.pk).status == "applied"


def test_refused_while_a_payment_of_the_customer_is_in_flight(upgraded, support):
    s, change = upgraded
    PaymentMethod.objects.filter(customer=s.customer).update(reference="pm_card_authenticationRequired")
    waiting = change_to(s, s.business_month, at=MID_JANUARY + timedelta(hours=1))
    assert waiting.status == "requires_action"
    assert refusal(change, support) == "change_in_progress"


def test_refused_when_more_seats_are_in_use_than_before(support):
    s = subscription_setup()
    change = change_to(s, s.basic_month, quantity=10)
    Subscription.objects.filter(pk=s.subscription.pk).update(seats_in_use=8)
    assert refusal(change, support) == "seats_in_use"


def test_refused_when_the_terms_were_edited_since(upgraded, support):
    s, change = upgraded
    Subscription.objects.filter(pk=s.subscription.pk).update(quantity=7)
    assert refusal(change, support) == "subscription_changed"


def test_nothing_is_written_by_a_refusal(upgraded, support):
    s, change = upgraded
    before = (BalanceEntry.objects.count(), Invoice.objects.count(), AuditEvent.objects.count(),
              Subscription.objects.get(pk=s.subscription.pk).version)
    refusal(change, support, now=PERIOD_END)
    assert before == (BalanceEntry.objects.count(), Invoice.objects.count(), AuditEvent.objects.count(),
                      Subscription.objects.get(pk=s.subscription.pk).version)
