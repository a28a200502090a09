"""Invoice PDFs: rendered from the snapshot, read back, numbers and totals checked against the database."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from babel.numbers import format_currency
from pypdf import PdfReader

from billing.models import ChangeRule, Customer, Invoice, Subscription, TaxRate
from billing.services.invoice_pdfs import invoice_pdf_render
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.factories import MID_JANUARY, MembershipFactory, subscription_setup

pytestmark = pytest.mark.django_db


@pytest.fixture
def applied(django_capture_on_commit_callbacks):
    """Accept a change and let its after-commit work (the PDF task) run, as a real commit would."""

    def accept(setup, price, quantity=5):
        q = quote_create(subscription=Subscription.objects.get(pk=setup.subscription.pk), to_price=price,
                         quantity=quantity, now=MID_JANUARY, actor=setup.owner)
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            change = quote_accept(quote=q, actor=setup.owner, now=MID_JANUARY)
        assert callbacks, "the PDF task is enqueued after commit"
        return Invoice.objects.get(plan_change=change)

    return accept


def text_of(invoice: Invoice) -> str:
    invoice.refresh_from_db()
    with invoice.pdf.open("rb") as handle:
        reader = PdfReader(io.BytesIO(handle.read()))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_the_worker_renders_the_pdf_after_issue_and_it_reads_back_right(applied):
    s = subscription_setup()
    invoice = applied(s, s.pro_month)  # the task ran (eagerly here) after the transaction committed
    assert invoice.pdf.name == f"invoices/{invoice.number}.pdf"
    text = text_of(invoice)
    assert f"Invoice {invoice.number}" in text and "Crossgrade GmbH" in text and s.customer.name in text
    for line in invoice.lines.all():
        assert format_currency(line.amount, "EUR", locale="en") in text
    assert format_currency(invoice.total, "EUR", locale="en") in text  # €61.42
    assert format_currency(invoice.tax_total, "EUR", locale="en") in text  # €9.81
    assert "VAT at 19%" in text and "DE136695976" in text


def test_rendering_again_keeps_the_stored_file(applied):
    s = subscription_setup()
    invoice = applied(s, s.pro_month)
    invoice.refresh_from_db()
    first = invoice.pdf.name
    with invoice.pdf.open("rb") as handle:
        content = handle.read()
    Customer.objects.filter(pk=s.customer.pk).update(name="Renamed Later AG")
    again = invoice_pdf_render(invoice_id=invoice.pk)
    assert again.pdf.name == first
    with again.pdf.open("rb") as handle:
        assert handle.read() == content
    assert "Renamed Later" not in text_of(again)


def test_german_customer_gets_a_german_document(applied):
    s = subscription_setup()
    Customer.objects.filter(pk=s.customer.pk).update(language="de")
    invoice = applied(s, s.pro_month)
    text = text_of(invoice)
    assert f"Rechnung {invoice.number}" in text
    assert format_currency(invoice.total, "EUR", locale="de") in text  # 61,42 €


def test_reverse_charge_wording_on_the_document(applied):
    s = subscription_setup()
    TaxRate.objects.create(country="FR", rate=Decimal("0.20"), valid_from="2020-01-01")
    Customer.objects.filter(pk=s.customer.pk).update(country="FR", vat_id="FR40303265045")
    text = text_of(applied(s, s.pro_month))
    assert "Reverse charge" in text and "Article 196" in text and "FR40303265045" in text


def test_a_credit_note_says_so(applied):
    s = subscription_setup()
    ChangeRule.objects.filter(name="Downgrades").update(timing="now", charge="prorated", credit="prorated")
    s.subscription.price = s.pro_month
    s.subscription.save()
    credit_note = applied(s, s.basic_month)
    text = text_of(credit_note)
    assert f"Credit note {credit_note.number}" in text and "Total credited" in text
    assert format_currency(Decimal("61.42"), "EUR", locale="en") in text


def test_customers_download_their_own_documents_only(client, applied):
    s = subscription_setup()
    invoice = applied(s, s.pro_month)
    client.force_login(s.member)  # members may read billing documents
    response = client.get(f"/c/{s.customer.pk}/invoices/{invoice.pk}.pdf")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert b"".join(response.streaming_content).startswith(b"%PDF")
    stranger = MembershipFactory(role="owner").user
    client.force_login(stranger)
    assert client.get(f"/c/{s.customer.pk}/invoices/{invoice.pk}.pdf").status_code == 404
    own = stranger.memberships.get().customer_id
    assert client.get(f"/c/{own}/invoices/{invoice.pk}.pdf").status_code == 404


def test_the_catch_up_sweep_resends_documents_left_without_a_pdf(settings):
    from datetime import timedelta

    from billing.services.invoice_pdfs import invoices_pdf_missing_enqueue

    s = subscription_setup()
    q = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=MID_JANUARY, actor=s.owner)
    change = quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)  # after-commit hook never ran: no PDF yet
    invoice = Invoice.objects.get(plan_change=change)
    assert not invoice.pdf
    assert invoices_pdf_missing_enqueue(now=MID_JANUARY) == 0  # within the grace minute
    assert invoices_pdf_missing_enqueue(now=MID_JANUARY + timedelta(minutes=2)) == 1  # the eager worker renders
    invoice.refresh_from_db()
    assert invoice.pdf.name == f"invoices/{invoice.number}.pdf"
    assert invoices_pdf_missing_enqueue(now=MID_JANUARY + timedelta(minutes=3)) == 0
