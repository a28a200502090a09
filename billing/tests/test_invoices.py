"""Invoices and credit notes from applied changes: exact amounts, EU VAT, snapshots, gap-free numbers."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from billing.errors import BillingError
from billing.models import ChangeRule, Customer, DocumentSeries, Invoice, LegalEntity, Subscription, TaxRate
from billing.services.invoices import document_number_take
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tax import REVERSE_CHARGE_MENTION
from billing.tests.factories import MID_JANUARY, PERIOD_END, subscription_setup

pytestmark = pytest.mark.django_db


def change_to(setup, price, quantity=5):
    q = quote_create(subscription=Subscription.objects.get(pk=setup.subscription.pk), to_price=price,
                     quantity=quantity, now=MID_JANUARY, actor=setup.owner)
    return q, quote_accept(quote=q, actor=setup.owner, now=MID_JANUARY)


def test_an_upgrade_is_invoiced_with_the_charged_amounts_and_a_number():
    s = subscription_setup()
    quote, change = change_to(s, s.pro_month)
    invoice = Invoice.objects.get(plan_change=change)
    assert (invoice.kind, invoice.status, invoice.number) == ("invoice", "paid", "CG-2026-000001")
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (quote.subtotal, quote.tax, quote.total)
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (Decimal("51.61"), Decimal("9.81"), Decimal("61.42"))
    assert invoice.amount_paid == Decimal("61.42") and invoice.payment_reference == change.payment_reference
    assert [(line.description, line.amount) for line in invoice.lines.all()] == [
        (line["description"], Decimal(line["amount"])) for line in quote.lines]
    assert invoice.tax_breakdown == [{"rate": "0.19000", "taxable": "51.6100", "tax": "9.8100"}]
    assert (invoice.seller_name, invoice.seller_vat_id, invoice.buyer_name) == (
        "Crossgrade GmbH", "DE136695976", s.customer.name)
    assert (invoice.supply_start, invoice.supply_end) == (MID_JANUARY, PERIOD_END)
    assert not invoice.reverse_charge and invoice.legal_mention == ""


def test_an_issued_invoice_is_a_snapshot():
    s = subscription_setup()
    _, change = change_to(s, s.pro_month)
    Customer.objects.filter(pk=s.customer.pk).update(name="Renamed AG", address="Elsewhere")
    LegalEntity.objects.update(name="New Seller Name")
    invoice = Invoice.objects.get(plan_change=change)
    assert (invoice.buyer_name, invoice.seller_name) == (s.customer.name, "Crossgrade GmbH")


def test_numbers_run_on_per_series_and_credit_notes_have_their_own():
    s = subscription_setup()
    ChangeRule.objects.filter(name="Downgrades").update(timing="now", charge="prorated", credit="prorated")
    _, first = change_to(s, s.pro_month)
    _, down = change_to(s, s.basic_month)
    _, second = change_to(s, s.business_month)
    numbers = {c.pk: Invoice.objects.get(plan_change=c).number for c in (first, down, second)}
    assert numbers == {first.pk: "CG-2026-000001", down.pk: "CGC-2026-000001", second.pk: "CG-2026-000002"}
    credit_note = Invoice.objects.get(plan_change=down)
    # Pro → Basic on 16 Jan: the change's total is −61.42; the credit note credits 61.42 to the balance.
    assert (credit_note.kind, credit_note.status, credit_note.total) == ("credit_note", "issued", Decimal("61.42"))
    assert [line.amount for line in credit_note.lines.all()] == [Decimal("129.03"), Decimal("-77.42")]


def test_scheduled_changes_and_trials_make_no_document():
    s = subscription_setup()
    s.subscription.price = s.pro_month
    s.subscription.save()
    _, scheduled = change_to(s, s.basic_month)
    assert scheduled.status == "scheduled" and not Invoice.objects.exists()


def test_reverse_charge_for_a_business_with_a_valid_vat_id_in_another_eu_country():
    s = subscription_setup()
    TaxRate.objects.create(country="FR", rate=Decimal("0.20"), valid_from="2020-01-01")
    Customer.objects.filter(pk=s.customer.pk).update(country="FR", vat_id="FR40303265045")
    quote, change = change_to(s, s.pro_month)
    assert quote.reverse_charge and quote.tax_rate == 0 and quote.tax == 0 and quote.total == Decimal("51.61")
    invoice = Invoice.objects.get(plan_change=change)
    assert invoice.reverse_charge and invoice.legal_mention == REVERSE_CHARGE_MENTION
    assert (invoice.tax_total, invoice.total, invoice.buyer_vat_id) == (0, Decimal("51.61"), "FR40303265045")


def test_a_consumer_in_another_eu_country_pays_that_countrys_vat():
    s = subscription_setup()
    TaxRate.objects.create(country="FR", rate=Decimal("0.20"), valid_from="2020-01-01")
    Customer.objects.filter(pk=s.customer.pk).update(country="FR", vat_id="")
    quote, _ = change_to(s, s.pro_month)
    assert not quote.reverse_charge and quote.tax_rate == Decimal("0.20") and quote.tax == Decimal("10.32")


def test_tax_is_recalculated_for_every_quote_never_copied():
    s = subscription_setup()
    first, _ = change_to(s, s.pro_month)
    TaxRate.objects.create(country="DE", rate=Decimal("0.16"), valid_from="2026-01-10")
    second, _ = change_to(s, s.business_month)
    assert (first.tax_rate, second.tax_rate) == (Decimal("0.19"), Decimal("0.16"))


def test_customer_vat_id_is_validated_for_its_country():
    customer = Customer(name="X", email="x@example.com", currency="EUR", country="FR", timezone="UTC",
                        vat_id="FR00303265045")
    with pytest.raises(ValidationError, match="not a valid VAT ID for FR"):
        customer.full_clean()
    customer.vat_id = "FR40303265045"
    customer.full_clean()


def test_no_legal_entity_refuses_before_charging():
    from billing.models import LocalPayment

    s = subscription_setup()
    LegalEntity.objects.all().delete()
    quote = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=MID_JANUARY,
                         actor=s.owner)
    with pytest.raises(BillingError) as info:
        quote_accept(quote=quote, actor=s.owner, now=MID_JANUARY)
    assert info.value.code == "no_legal_entity" and not LocalPayment.objects.exists()


def test_a_rolled_back_issue_returns_its_number():
    subscription_setup()
    entity = LegalEntity.objects.get()
    with transaction.atomic():
        assert document_number_take(entity=entity, kind="invoice", year=2026) == "CG-2026-000001"
    with pytest.raises(RuntimeError), transaction.atomic():
        document_number_take(entity=entity, kind="invoice", year=2026)
        raise RuntimeError("the issuing transaction failed")
    with transaction.atomic():
        assert document_number_take(entity=entity, kind="invoice", year=2026) == "CG-2026-000002"
    assert DocumentSeries.objects.get(kind="invoice", year=2026).next_number == 3


def test_a_regions_own_rate_wins_over_the_countrys():
    s = subscription_setup()
    TaxRate.objects.create(country="ES", rate=Decimal("0.21"), valid_from="2020-01-01")
    TaxRate.objects.create(country="ES", region="ES-CN", rate=Decimal("0"), valid_from="2020-01-01")
    Customer.objects.filter(pk=s.customer.pk).update(country="ES", region="ES-CN")
    quote, _ = change_to(s, s.pro_month)
    assert quote.tax_rate == 0 and not quote.reverse_charge
    Customer.objects.filter(pk=s.customer.pk).update(region="")
    second, _ = change_to(s, s.business_month)
    assert second.tax_rate == Decimal("0.21")


def test_the_document_keeps_the_billing_timezone_it_was_issued_in():
    s = subscription_setup()
    _, change = change_to(s, s.pro_month)
    Customer.objects.filter(pk=s.customer.pk).update(timezone="Asia/Tokyo")
    assert Invoice.objects.get(plan_change=change).billing_timezone == "Europe/Berlin"


def test_a_quote_whose_tax_changed_before_acceptance_is_refused_before_charging():
    from billing.models import LocalPayment

    s = subscription_setup()
    TaxRate.objects.create(country="FR", rate=Decimal("0.20"), valid_from="2020-01-01")
    Customer.objects.filter(pk=s.customer.pk).update(country="FR")
    quote = quote_create(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=s.pro_month,
                         quantity=5, now=MID_JANUARY, actor=s.owner)
    Customer.objects.filter(pk=s.customer.pk).update(vat_id="FR40303265045")  # now reverse-charged
    with pytest.raises(BillingError) as info:
        quote_accept(quote=quote, actor=s.owner, now=MID_JANUARY)
    assert info.value.code == "tax_changed" and not LocalPayment.objects.exists()


def test_the_document_states_the_tax_that_was_charged():
    s = subscription_setup()
    quote, change = change_to(s, s.pro_month)
    TaxRate.objects.create(country="DE", rate=Decimal("0.16"), valid_from="2026-01-01")  # too late for this one
    invoice = Invoice.objects.get(plan_change=change)
    assert invoice.tax_breakdown[0]["rate"] == "0.19000" and invoice.tax_total == quote.tax


def test_a_credit_note_references_the_invoice_it_corrects():
    s = subscription_setup()
    ChangeRule.objects.filter(name="Downgrades").update(timing="now", charge="prorated", credit="prorated")
    _, up = change_to(s, s.pro_month)
    _, down = change_to(s, s.basic_month)
    credit_note = Invoice.objects.get(plan_change=down)
    assert credit_note.related_invoice == Invoice.objects.get(plan_change=up)


def test_two_legal_entities_number_independently_without_colliding():
    s = subscription_setup()
    _, first = change_to(s, s.pro_month)
    LegalEntity.objects.update(is_default=False)
    LegalEntity.objects.create(name="Crossgrade Ltd", address="London", country="GB", vat_id="GB980780684",
                               is_default=True)  # same default prefixes
    _, second = change_to(s, s.business_month)
    numbers = [Invoice.objects.get(plan_change=c).number for c in (first, second)]
    assert numbers == ["CG-2026-000001", "CG-2026-000001"]
    assert Invoice.objects.get(plan_change=second).legal_entity.name == "Crossgrade Ltd"


def test_an_eu_customer_without_a_configured_rate_is_not_priced_untaxed():
    s = subscription_setup()
    Customer.objects.filter(pk=s.customer.pk).update(country="IT")  # no Italian rate on file
    with pytest.raises(BillingError) as info:
        quote_create(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=s.pro_month, quantity=5,
                     now=MID_JANUARY, actor=s.owner)
    assert info.value.code == "tax_not_configured"


def test_a_buyer_outside_the_eu_gets_the_outside_scope_mention():
    from billing.tax import OUTSIDE_EU_MENTION

    s = subscription_setup()
    Customer.objects.filter(pk=s.customer.pk).update(country="US")
    quote, change = change_to(s, s.pro_month)
    invoice = Invoice.objects.get(plan_change=change)
    assert quote.tax == 0 and invoice.legal_mention == OUTSIDE_EU_MENTION and not invoice.reverse_charge


def test_the_issue_date_and_the_numbers_year_follow_the_sellers_calendar():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from billing.services.invoices import invoice_issue
    from billing.tests.factories import CustomerFactory

    subscription_setup()
    entity = LegalEntity.objects.get()  # Europe/Berlin
    draft = Invoice.objects.create(legal_entity=entity, customer=CustomerFactory(), supply_start=MID_JANUARY,
                                   supply_end=MID_JANUARY, currency="EUR", seller_name="S", seller_address="A",
                                   seller_country="DE", seller_vat_id="X", buyer_name="B", buyer_country="DE",
                                   subtotal=0, tax_total=0, total=0, created_at=MID_JANUARY)
    new_year_in_berlin = datetime(2026, 12, 31, 23, 30, tzinfo=ZoneInfo("UTC"))  # 00:30 on 1 Jan 2027 in Berlin
    issued = invoice_issue(invoice=draft, now=new_year_in_berlin)
    assert issued.issue_date.isoformat() == "2027-01-01" and issued.number == "CG-2027-000001"
