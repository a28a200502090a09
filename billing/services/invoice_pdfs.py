"""Invoice PDFs: rendered by WeasyPrint from the issued snapshot, stored once, never re-rendered."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.core.files.base import ContentFile
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone, translation

from billing.errors import BillingError
from billing.models import Invoice


def invoice_pdf_bytes(*, invoice: Invoice) -> bytes:
    """The document as PDF, in the customer's language, from the snapshot fields only."""
    from weasyprint import HTML  # heavy import: only where PDFs are made

    with translation.override(invoice.language or "en"), timezone.override(ZoneInfo(invoice.billing_timezone)):
        html = render_to_string("billing/invoice_pdf.html", {"invoice": invoice, "lines": list(invoice.lines.all())})
    return HTML(string=html).write_pdf()


def invoice_pdf_render(*, invoice_id: int) -> Invoice:
    """Render and store the PDF of an issued document. Idempotent: a stored PDF is kept as it is, and two
    workers racing store one file (the row lock decides; the loser's rendering is discarded)."""
    invoice = Invoice.objects.get(pk=invoice_id)
    if invoice.status == Invoice.Status.DRAFT:
        raise BillingError("not_issued", "Drafts have no PDF.", status=409)
    if invoice.pdf:
        return invoice
    content = invoice_pdf_bytes(invoice=invoice)  # outside the lock: rendering takes a while
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        if not invoice.pdf:
            invoice.pdf.save(f"{invoice.number}.pdf", ContentFile(content), save=False)
            Invoice.objects.filter(pk=invoice.pk).update(pdf=invoice.pdf.name)
    return invoice


def invoices_pdf_missing_enqueue(*, now: datetime, grace: timedelta = timedelta(minutes=1), limit: int = 500) -> int:
    """Send issued documents that still have no PDF back to the workers; returns how many were sent."""
    from billing.tasks import render_invoice_pdf

    ids = list(Invoice.objects.exclude(status=Invoice.Status.DRAFT).filter(pdf="", issued_at__lte=now - grace)
               .order_by("issued_at").values_list("pk", flat=True)[:limit])
    for invoice_id in ids:
        render_invoice_pdf.delay(invoice_id)
    return len(ids)
