"""Contracts: negotiated prices in quotes, renewals and invoices (with the PO number), the commitment refusal naming
the term's end, the co-termed term, and amendments priced per PRORATION.md, applied and invoiced."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import translation

from billing.errors import ChangeConflict, ChangeRefused
from billing.models import (
    Amendment,
    AuditEvent,
    ContractPrice,
    Invoice,
    PlanChange,
    Subscription,
)
from billing.services.contracts import (
    amendment_cancel,
    amendment_preview,
    amendment_save_draft,
    amendment_submit,
    amendments_apply_due,
    contract_term_for,
)
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.services.renewals import subscription_renew
from billing.tests.factories import (
    BERLIN,
    MID_JANUARY,
    PERIOD_END,
    PERIOD_START,
    UserFactory,
    contract_for,
    subscription_setup,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _english():
    """Refusals are in the reader's language: these tests read English (another test may have left German on)."""
    from django.utils import translation

    with translation.override("en"):
        yield

MARCH_16 = datetime(2026, 3, 16, 9, 0, tzinfo=BERLIN)


@pytest.fixture
def setup():
    return subscription_setup()


@pytest.fixture
def staff():
    return UserFactory(username="sam", is_staff=True, is_superuser=True)


def fresh(s):
    return Subscription.objects.get(pk=s.subscription.pk)


# --- the term ------------------------------------------------------------------------------------------------


def test_the_term_starts_on_a_period_boundary_and_lasts_whole_periods(setup):
    start, end = contract_term_for(subscription=fresh(setup), start_on=date(2026, 1, 1), periods=12)
    assert (start, end) == (PERIOD_START, datetime(2027, 1, 1, tzinfo=BERLIN))
    start, end = contract_term_for(subscription=fresh(setup), start_on=date(2026, 2, 1), periods=3)
    assert (start, end) == (PERIOD_END, datetime(2026, 5, 1, tzinfo=BERLIN))
    with pytest.raises(ValidationError, match="co-terming"):
        contract_term_for(subscription=fresh(setup), start_on=date(2026, 1, 16), periods=12)


# --- negotiated prices -------------------------------------------------------------------------------------------


def test_quotes_price_both_items_at_the_negotiated_prices(setup):
    contract_for(setup)
    q = quote_create(subscription=fresh(setup), to_price=setup.pro_month, quantity=5, now=MID_JANUARY,
                     actor=setup.owner)
    # Worked example A at the contract's prices: 5 × 27.00 → 5 × 45.00, factor 16/31.
    credit, charge = q.lines
    assert credit["amount"] == "-69.68"  # R(135 × 16/31) = R(69.677…)
    assert charge["amount"] == "116.13"  # R(225 × 16/31) = R(116.129…)
    assert (q.subtotal, q.tax, q.total) == (Decimal("46.45"), Decimal("8.83"), Decimal("55.28"))
    assert q.next_period_amount == Decimal("267.75")  # 225.00 + 19 %


def test_a_customer_change_invoice_prints_the_negotiated_amounts_and_the_po_number(setup):
    contract_for(setup)
    q = quote_create(subscription=fresh(setup), to_price=setup.pro_month, quantity=5, now=MID_JANUARY,
                     actor=setup.owner)
    change = quote_accept(quote=q, actor=setup.owner, now=MID_JANUARY)
    assert change.status == "applied"
    invoice = Invoice.objects.get(plan_change=change)
    assert invoice.purchase_order == "PO-4711"
    assert [line.amount for line in invoice.lines.all()] == [Decimal("-69.68"), Decimal("116.13")]
    assert invoice.total == Decimal("55.28") and invoice.status == "paid"


def test_renewals_bill_the_negotiated_price_with_the_po_number_until_the_term_ends(setup):
    contract_for(setup, periods=2)  # 1 Jan – 1 Mar 2026
    assert subscription_renew(subscription_id=setup.subscription.pk, now=PERIOD_END)
    invoice = Invoice.objects.get(billing_reason="renewal")
    assert (invoice.subtotal, invoice.purchase_order) == (Decimal("135.00"), "PO-4711")  # 5 × 27.00
    assert subscription_renew(subscription_id=setup.subscription.pk, now=datetime(2026, 3, 1, tzinfo=BERLIN))
    after = Invoice.objects.filter(billing_reason="renewal").order_by("supply_start").last()
    assert (after.subtotal, after.purchase_order) == (Decimal("150.00"), "")  # the term ended: catalog, no PO


def test_the_pdf_prints_the_purchase_order(setup):
    import io

    from pypdf import PdfReader

    from billing.services.invoice_pdfs import invoice_pdf_render

    contract_for(setup)
    subscription_renew(subscription_id=setup.subscription.pk, now=PERIOD_END)
    invoice = invoice_pdf_render(invoice_id=Invoice.objects.get(billing_reason="renewal").pk)
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(invoice.pdf.read())).pages)
    assert "Purchase order" in text and "PO-4711" in text


def test_the_overview_renewal_uses_the_negotiated_price(setup):
    from billing.selectors import subscription_next_renewal

    contract_for(setup)
    renewal = subscription_next_renewal(subscription=fresh(setup))
    assert renewal.subtotal == Decimal("135.00")


# --- commitments -----------------------------------------------------------------------------------------------


def test_going_below_the_committed_seats_is_refused_naming_the_end_date(setup):
    contract_for(setup, committed_seats=5)
    with pytest.raises(ChangeRefused) as refusal:
        quote_create(subscription=fresh(setup), to_price=setup.basic_month, quantity=4, now=MID_JANUARY,
                     actor=setup.owner)
    assert refusal.value.code == "contract_commitment"
    assert refusal.value.detail == ("Your contract commits you to at least 5 seats until January 1, 2027; you asked "
                                    "for 4.")
    assert refusal.value.extra["contract_end"] == "2027-01-01T00:00:00+01:00"


def test_the_commitment_refusal_in_german(setup):
    contract_for(setup, committed_seats=5)
    with translation.override("de"), pytest.raises(ChangeRefused) as refusal:
        quote_create(subscription=fresh(setup), to_price=setup.basic_month, quantity=4, now=MID_JANUARY,
                     actor=setup.owner)
    assert "1. Januar 2027" in refusal.value.detail


def test_a_downgrade_below_the_minimum_spend_is_refused_but_upgrades_and_seats_pass(setup):
    Subscription.objects.filter(pk=setup.subscription.pk).update(price=setup.pro_month)
    contract_for(setup, committed_seats=0, minimum_spend="200.00")
    with pytest.raises(ChangeRefused, match=r"at least €200.00 a billing period until January 1, 2027; this change "
                                            r"would bring it to €135.00"):
        quote_create(subscription=fresh(setup), to_price=setup.basic_month, quantity=5, now=MID_JANUARY,
                     actor=setup.owner)
    # the same downgrade with enough seats keeps the commitment: 8 × 27.00 = 216.00
    assert quote_create(subscription=fresh(setup), to_price=setup.basic_month, quantity=8, now=MID_JANUARY,
                        actor=setup.owner).direction == "downgrade"
    assert quote_create(subscription=fresh(setup), to_price=setup.business_month, quantity=5, now=MID_JANUARY,
                        actor=setup.owner).direction == "upgrade"
    assert quote_create(subscription=fresh(setup), to_price=setup.pro_month, quantity=9, now=MID_JANUARY,
                        actor=setup.owner).direction == "upgrade"


def test_cancelling_and_changing_the_interval_during_the_term_are_refused(setup):
    contract_for(setup)
    with pytest.raises(ChangeRefused, match="runs until January 1, 2027") as refusal:
        quote_create(subscription=fresh(setup), to_price=None, quantity=0, now=MID_JANUARY, actor=setup.owner,
                     cancel=True)
    assert refusal.value.code == "contract_commitment"
    with pytest.raises(ChangeRefused, match="billed monthly until January 1, 2027") as refusal:
        quote_create(subscription=fresh(setup), to_price=setup.pro_year, quantity=5, now=MID_JANUARY,
                     actor=setup.owner)
    assert refusal.value.code == "contract_interval"


def test_a_change_at_the_end_of_the_term_is_not_bound_by_it(setup):
    contract_for(setup, periods=1)  # ends with the current period, 1 Feb
    q = quote_create(subscription=fresh(setup), to_price=None, quantity=0, now=MID_JANUARY, actor=setup.owner,
                     cancel=True)
    assert q.effective_at == PERIOD_END


# --- amendments --------------------------------------------------------------------------------------------------


def draft(s, staff, **fields) -> Amendment:
    contract = s.subscription.contracts.get()
    amendment = Amendment(contract=contract, effective_on=fields.pop("effective_on", date(2026, 1, 16)), **fields)
    return amendment_save_draft(amendment=amendment, actor=staff, now=MID_JANUARY)


def test_adding_seats_is_prorated_to_the_period_and_co_termed_to_the_contract_end(setup, staff):
    """docs/contracts.md's worked example."""
    contract_for(setup)
    amendment = draft(setup, staff, kind="add_seats", seats=5)
    preview = amendment_preview(amendment=amendment)
    credit, charge = preview.lines
    assert credit["amount"] == "-69.68" and credit["description"] == (
        "Unused time on Analytics Basic × 5, 16 Jan – 1 Feb 2026 (16 of 31 days)")  # R(5 × 27 × 16/31)
    assert charge["amount"] == "139.35" and charge["description"] == (
        "Remaining time on Analytics Basic × 10, 16 Jan – 1 Feb 2026 (16 of 31 days)")  # R(10 × 27 × 16/31)
    assert (preview.subtotal, preview.tax, preview.total) == (Decimal("69.67"), Decimal("13.24"), Decimal("82.91"))
    assert preview.next_period_total == Decimal("321.30")  # 270.00 + 19 %
    assert preview.periods_after == 11  # Feb … Dec, the term ends on 1 Jan 2027
    assert preview.until_term_end == Decimal("3617.21")  # 82.91 + 11 × 321.30


def test_an_amendment_outside_the_current_period_or_the_term_is_refused(setup, staff):
    contract_for(setup)
    contract = setup.subscription.contracts.get()
    with pytest.raises(ChangeRefused, match="current billing period") as refusal:
        amendment_preview(amendment=Amendment(contract=contract, kind="add_seats", seats=1,
                                              effective_on=date(2026, 2, 3)))
    assert refusal.value.code == "effective_date_outside_period"


def test_an_amendment_below_the_commitment_is_refused(setup, staff):
    Subscription.objects.filter(pk=setup.subscription.pk).update(price=setup.pro_month)
    contract_for(setup, committed_seats=5, minimum_spend="200.00")
    contract = setup.subscription.contracts.get()
    with pytest.raises(ChangeRefused, match="before its end on January 1, 2027") as refusal:
        amendment_preview(amendment=Amendment(contract=contract, kind="change_tier", to_price=setup.basic_month,
                                              effective_on=date(2026, 1, 16)))
    assert refusal.value.code == "contract_commitment"


def test_submitted_without_a_matching_policy_it_is_approved_and_applied_invoiced_and_audited(
        setup, staff, django_capture_on_commit_callbacks):
    contract_for(setup)
    amendment = draft(setup, staff, kind="add_seats", seats=5)
    with django_capture_on_commit_callbacks(execute=True):
        amendment = amendment_submit(amendment_id=amendment.pk, actor=staff, now=MID_JANUARY)
    assert amendment.status == "applied" and amendment.plan_change is not None
    change = amendment.plan_change
    assert change.reason_code == f"contract_amendment_{amendment.pk}"
    assert (change.status, change.total, change.collection_method) == ("applied", Decimal("82.91"), "invoice")
    subscription = fresh(setup)
    assert (subscription.quantity, subscription.version) == (10, 2)
    invoice = Invoice.objects.get(plan_change=change)
    # invoiced now, collected afterwards off-session like renewals (the local gateway's card pays it at once)
    assert invoice.purchase_order == "PO-4711" and invoice.total == Decimal("82.91")
    assert invoice.payment_attempts.get().off_session
    invoice.refresh_from_db()
    assert invoice.status == "paid"
    applied = AuditEvent.objects.get(action="plan_change.applied", object_id=str(change.pk))
    assert (applied.before["quantity"], applied.after["quantity"]) == (5, 10)
    assert applied.reason_code == f"contract_amendment_{amendment.pk}"
    assert AuditEvent.objects.filter(action="amendment.applied", object_id=str(amendment.pk)).exists()


def test_a_future_dated_amendment_waits_for_its_day(setup, staff):
    contract_for(setup)
    amendment = draft(setup, staff, kind="add_seats", seats=2, effective_on=date(2026, 1, 20))
    amendment = amendment_submit(amendment_id=amendment.pk, actor=staff, now=MID_JANUARY)
    assert amendment.status == "approved"
    assert amendments_apply_due(now=MID_JANUARY) == 0
    assert amendments_apply_due(now=datetime(2026, 1, 20, 0, 0, tzinfo=BERLIN)) == 1
    assert amendments_apply_due(now=datetime(2026, 1, 20, 0, 5, tzinfo=BERLIN)) == 0  # once
    amendment.refresh_from_db()
    assert amendment.status == "applied" and fresh(setup).quantity == 7


def test_a_price_change_updates_the_negotiated_price_and_credits_a_decrease(setup, staff):
    contract_for(setup)
    amendment = draft(setup, staff, kind="change_price", unit_amount=Decimal("24.00"))
    amendment = amendment_submit(amendment_id=amendment.pk, actor=staff, now=MID_JANUARY)
    assert amendment.status == "applied"
    contract = setup.subscription.contracts.get()
    assert ContractPrice.objects.get(contract=contract, price=setup.basic_month).unit_amount == Decimal("24.00")
    # −R(135 × 16/31) + R(120 × 16/31) = −69.68 + 61.94 = −7.74; tax −1.47: a credit note of 9.21
    credit_note = Invoice.objects.get(plan_change=amendment.plan_change)
    assert (credit_note.kind, credit_note.total) == ("credit_note", Decimal("9.21"))


def test_extending_the_term_moves_the_end_and_renewals_follow(setup, staff):
    contract = contract_for(setup, periods=1)
    amendment = draft(setup, staff, kind="extend_term", extend_periods=12)
    preview = amendment_preview(amendment=amendment)
    assert preview.term_end == datetime(2027, 2, 1, tzinfo=BERLIN) and preview.amount_due == 0
    assert preview.until_term_end == Decimal("12") * Decimal("160.65")  # 12 × (135.00 + 19 %)
    amendment_submit(amendment_id=amendment.pk, actor=staff, now=MID_JANUARY)
    contract.refresh_from_db()
    assert contract.term_end == datetime(2027, 2, 1, tzinfo=BERLIN)
    subscription_renew(subscription_id=setup.subscription.pk, now=PERIOD_END)
    assert Invoice.objects.get(billing_reason="renewal").subtotal == Decimal("135.00")  # still the contract price
    event = AuditEvent.objects.get(action="amendment.applied")
    assert (event.before["term_end"], event.after["term_end"]) == ("2026-01-31T23:00:00+00:00",  # 1 Feb, Berlin
                                                                   "2027-01-31T23:00:00+00:00")


def test_an_amendment_fails_when_the_subscription_changed_after_it_was_priced(setup, staff):
    contract_for(setup)
    amendment = draft(setup, staff, kind="add_seats", seats=2, effective_on=date(2026, 1, 20))
    amendment_submit(amendment_id=amendment.pk, actor=staff, now=MID_JANUARY)
    q = quote_create(subscription=fresh(setup), to_price=setup.pro_month, quantity=5, now=MID_JANUARY,
                     actor=setup.owner)
    quote_accept(quote=q, actor=setup.owner, now=MID_JANUARY)
    amendments_apply_due(now=datetime(2026, 1, 20, tzinfo=BERLIN))
    amendment.refresh_from_db()
    assert (amendment.status, amendment.failure_code) == ("failed", "subscription_changed")
    assert fresh(setup).quantity == 5


def test_drafts_can_be_edited_and_cancelled_but_not_once_submitted(setup, staff):
    contract_for(setup)
    amendment = draft(setup, staff, kind="add_seats", seats=2, effective_on=date(2026, 1, 20))
    amendment.seats = 3
    amendment_save_draft(amendment=amendment, actor=staff, now=MID_JANUARY)
    amendment_submit(amendment_id=amendment.pk, actor=staff, now=MID_JANUARY)
    amendment.refresh_from_db()
    with pytest.raises(ChangeConflict):
        amendment_save_draft(amendment=amendment, actor=staff, now=MID_JANUARY)
    amendment = amendment_cancel(amendment_id=amendment.pk, actor=staff, now=MID_JANUARY)
    assert amendment.status == "cancelled"
    assert amendments_apply_due(now=datetime(2026, 1, 21, tzinfo=BERLIN)) == 0
    assert PlanChange.objects.count() == 0


def test_a_tier_change_with_its_own_negotiated_price(setup, staff):
    contract_for(setup)
    amendment = draft(setup, staff, kind="change_tier", to_price=setup.business_month, unit_amount=Decimal("80.00"))
    preview = amendment_preview(amendment=amendment)
    assert preview.lines[1]["amount"] == "206.45"  # R(5 × 80 × 16/31) = R(206.451…)
    assert preview.price_override and preview.discount_percent == Decimal("100") * 10 / 90  # 80 against 90
    amendment_submit(amendment_id=amendment.pk, actor=staff, now=MID_JANUARY)
    subscription = fresh(setup)
    assert subscription.price == setup.business_month
