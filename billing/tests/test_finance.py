"""Finance: any document as PDF, a month as ZIP, a period as CSV/XLSX in the base currency; permissions."""

from __future__ import annotations

import csv
import io
import zipfile
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission
from openpyxl import load_workbook

from billing.models import ChangeRule, Customer, ExchangeRate, Invoice, Subscription
from billing.reports import report_rows
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.factories import MID_JANUARY, PriceFactory, UserFactory, subscription_setup

pytestmark = pytest.mark.django_db


@pytest.fixture
def documents():
    """An invoice (EUR), a credit note (EUR) and an invoice in USD for another customer, all in January 2026."""
    s = subscription_setup()
    ChangeRule.objects.filter(name="Downgrades").update(timing="now", charge="prorated", credit="prorated")

    def change(setup, subscription, price):
        q = quote_create(subscription=Subscription.objects.get(pk=subscription.pk), to_price=price, quantity=5,
                         now=MID_JANUARY, actor=setup.owner)
        return quote_accept(quote=q, actor=setup.owner, now=MID_JANUARY)

    change(s, s.subscription, s.pro_month)      # invoice 61.42 EUR
    change(s, s.subscription, s.basic_month)    # credit note 61.42 EUR
    usd_customer = Customer.objects.create(name="Globex", email="ap@globex.example", currency="USD", country="US",
                                           timezone="America/New_York")
    usd_basic = PriceFactory(plan=s.basic, currency="USD", unit_amount=Decimal("33.00"))
    usd_pro = PriceFactory(plan=s.pro, currency="USD", unit_amount=Decimal("55.00"))
    from billing.models import Membership, PaymentMethod

    Membership.objects.create(customer=usd_customer, user=s.owner, role="owner")
    PaymentMethod.objects.create(customer=usd_customer, reference="pm_card_visa", label="Visa", is_default=True)
    usd_sub = Subscription.objects.create(customer=usd_customer, product=s.product, price=usd_basic, quantity=5,
                                          current_period_start=s.subscription.current_period_start,
                                          current_period_end=s.subscription.current_period_end)
    change(s, usd_sub, usd_pro)
    ExchangeRate.objects.create(base_currency="EUR", quote_currency="USD", rate=Decimal("1.0850"),
                                valid_on="2026-01-01")
    return s


def staff(*codenames):
    user = UserFactory(is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="billing", codename__in=codenames))
    return user


def test_rows_carry_signed_amounts_and_the_base_currency(documents):
    from billing.models import LegalEntity

    rows = {r.values["number"]: r.values for r in report_rows(entity=LegalEntity.objects.get(),
                                                                start=MID_JANUARY.date(), end=MID_JANUARY.date())}
    assert set(rows) == {"CG-2026-000001", "CGC-2026-000001", "CG-2026-000002"}
    invoice, credit, usd = rows["CG-2026-000001"], rows["CGC-2026-000001"], rows["CG-2026-000002"]
    assert (invoice["net"], invoice["tax"], invoice["total"], invoice["total_in_base_currency"]) == (
        "51.61", "9.81", "61.42", "61.42")
    assert invoice["tax_by_rate"] == "19.00%: 9.81" and invoice["vat_id"] == "" and invoice["status"] == "paid"
    assert (credit["kind"], credit["total"], credit["tax"]) == ("credit_note", "-61.42", "-9.81")
    usd_total = Invoice.objects.get(number="CG-2026-000002").total
    # Reported, never priced: USD total ÷ 1.0850, rounded once to cents.
    expected = (usd_total / Decimal("1.0850")).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
    assert (usd["currency"], usd["exchange_rate"], usd["total_in_base_currency"]) == ("USD", "1.085", str(expected))


def test_finance_downloads_csv_and_xlsx(client, documents):
    client.force_login(staff("view_invoice", "export_invoices"))
    form = {"start": "2026-01-01", "end": "2026-01-31"}
    response = client.post("/admin/billing/invoice/export/", {**form, "format": "csv"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["number"] for r in rows] == ["CG-2026-000001", "CGC-2026-000001", "CG-2026-000002"]
    assert sum(Decimal(r["total"]) for r in rows if r["currency"] == "EUR") == 0  # invoiced, then fully credited
    response = client.post("/admin/billing/invoice/export/", {**form, "format": "xlsx"})
    sheet = load_workbook(io.BytesIO(response.content)).active
    values = list(sheet.iter_rows(values_only=True))
    assert values[0][0] == "number" and values[1][0] == "CG-2026-000001" and Decimal(str(values[1][10])) == Decimal(
        "61.42")
    bad = client.post("/admin/billing/invoice/export/", {"start": "2026-02-01", "end": "2026-01-01", "format": "csv"})
    assert bad.status_code == 200 and b"ends before it starts" in bad.content


def test_finance_downloads_a_month_as_zip_and_any_single_pdf(client, documents):
    client.force_login(staff("view_invoice", "export_invoices", "download_invoice"))
    response = client.post("/admin/billing/invoice/zip/", {"month": "2026-01"})
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == ["CG-2026-000001.pdf", "CG-2026-000002.pdf", "CGC-2026-000001.pdf"]
    assert all(archive.read(name).startswith(b"%PDF") for name in archive.namelist())
    assert client.post("/admin/billing/invoice/zip/", {"month": "January"}).status_code == 200  # the form says why
    invoice = Invoice.objects.get(number="CG-2026-000002")
    pdf = client.get(f"/admin/billing/invoice/{invoice.pk}/pdf/")
    assert pdf.status_code == 200 and b"".join(pdf.streaming_content).startswith(b"%PDF")


def test_staff_without_the_permissions_cannot_export_or_download(client, documents):
    client.force_login(staff("view_invoice"))
    assert client.get("/admin/billing/invoice/").status_code == 200
    assert client.post("/admin/billing/invoice/export/", {"start": "2026-01-01", "end": "2026-01-31",
                                                          "format": "csv"}).status_code == 403
    assert client.post("/admin/billing/invoice/zip/", {"month": "2026-01"}).status_code == 403
    invoice = Invoice.objects.first()
    assert client.get(f"/admin/billing/invoice/{invoice.pk}/pdf/").status_code == 403


def test_the_seeded_finance_group_can_do_it_all(client):
    from django.core.management import call_command

    call_command("seed_demo", stdout=io.StringIO())
    group = Group.objects.get(name="Finance")
    assert {"download_invoice", "export_invoices", "view_invoice"} <= set(
        group.permissions.values_list("codename", flat=True))
