"""Finance reports: invoices and credit notes of a period, with amounts reported in the base currency.

Exchange rates are used here only, to report; never to price.
"""

from __future__ import annotations

import calendar
import csv
import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from billing.models import ExchangeRate, Invoice, LegalEntity
from billing.money import format_amount, minor_unit, round_ratio

COLUMNS = ["number", "kind", "issue_date", "customer", "country", "vat_id", "currency", "net", "tax_by_rate",
           "tax", "total", "status", "base_currency", "exchange_rate", "rate_date", "total_in_base_currency"]


@dataclass(frozen=True)
class ReportRow:
    values: dict[str, str]


def documents_issued(*, entity: LegalEntity, start: date, end: date) -> Iterable[Invoice]:
    """Documents whose issue date (the seller's calendar, as printed on them) falls in [start, end]."""
    return (Invoice.objects.filter(legal_entity=entity, issue_date__range=(start, end))
            .exclude(status=Invoice.Status.DRAFT).select_related("customer").order_by("issued_at", "pk"))


def _rate(base: str, quote: str, on: date, cache: dict) -> ExchangeRate | None:
    key = (base, quote, on)
    if key not in cache:
        cache[key] = (ExchangeRate.objects.filter(base_currency=base, quote_currency=quote, valid_on__lte=on)
                      .order_by("-valid_on").first())
    return cache[key]


def report_rows(*, entity: LegalEntity, start: date, end: date) -> list[ReportRow]:
    """One row per issued document. Credit notes carry negative amounts so a column's sum is the period's net."""
    rows, rates = [], {}
    base = entity.base_currency
    for doc in documents_issued(entity=entity, start=start, end=end):
        sign = Decimal(-1) if doc.kind == Invoice.Kind.CREDIT_NOTE else Decimal(1)
        cur = doc.currency
        issued = doc.issue_date
        total = sign * doc.total
        if cur == base:
            rate_value, rate_date, in_base = "1", issued.isoformat(), format_amount(total, base)
        else:
            rate = _rate(base, cur, issued, rates)
            if rate is None:
                rate_value, rate_date, in_base = "", "", ""  # no rate on file: finance sees the gap
            else:
                # 1 base = rate × quote, so base = quote ÷ rate, rounded once to the base currency's minor unit.
                num, den = _ratio(total, rate.rate)
                rate_value, rate_date = str(rate.rate.normalize()), rate.valid_on.isoformat()
                in_base = str(round_ratio(num, den, minor_unit(base)))
        net = doc.subtotal - doc.tax_total if doc.tax_inclusive else doc.subtotal
        rows.append(ReportRow({
            "number": doc.number, "kind": doc.kind, "issue_date": issued.isoformat(), "customer": doc.buyer_name,
            "country": doc.buyer_country, "vat_id": doc.buyer_vat_id, "currency": cur,
            "net": format_amount(sign * net, cur),
            "tax_by_rate": "; ".join(f"{Decimal(row['rate']) * 100:.2f}%: {format_amount(sign * Decimal(row['tax']), cur)}"
                                     for row in doc.tax_breakdown),
            "tax": format_amount(sign * doc.tax_total, cur), "total": format_amount(total, cur),
            "status": doc.status, "base_currency": base, "exchange_rate": rate_value, "rate_date": rate_date,
            "total_in_base_currency": in_base,
        }))
    return rows


def _ratio(amount: Decimal, rate: Decimal) -> tuple[int, int]:
    a, b = amount.as_integer_ratio()
    c, d = rate.as_integer_ratio()
    return a * d, b * c


def report_csv(rows: list[ReportRow]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(row.values)
    return out.getvalue().encode("utf-8")


def report_xlsx(rows: list[ReportRow]) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Documents"
    sheet.append(COLUMNS)
    numeric = {"net", "tax", "total", "exchange_rate", "total_in_base_currency"}
    for row in rows:
        sheet.append([Decimal(row.values[c]) if c in numeric and row.values[c] else row.values[c] for c in COLUMNS])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def documents_zip(*, entity: LegalEntity, year: int, month: int) -> bytes:
    """Every document issued in that month as PDFs in one ZIP (rendering any the workers have not yet)."""
    from billing.services.invoice_pdfs import invoice_pdf_render

    start = date(year, month, 1)
    end = date(year, month, calendar.monthrange(year, month)[1])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for doc in documents_issued(entity=entity, start=start, end=end):
            doc = invoice_pdf_render(invoice_id=doc.pk)
            with doc.pdf.open("rb") as handle:
                archive.writestr(f"{doc.number}.pdf", handle.read())
    return out.getvalue()
