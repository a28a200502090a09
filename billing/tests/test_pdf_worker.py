"""Invoice PDFs rendered end to end by a real Celery worker process, over Redis, against the test database."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from babel.numbers import format_currency
from pypdf import PdfReader

from billing.models import Invoice
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tasks import render_invoice_pdf
from billing.tests.celery_worker import CeleryWorker, wait_for
from billing.tests.factories import MID_JANUARY, subscription_setup
from config.celery import app
from conftest import requires_postgres, requires_redis

TASK = "billing.tasks.render_invoice_pdf"


class Worker(CeleryWorker):
    """The PDF tests' worker."""

    def __init__(self, var_dir: Path) -> None:
        super().__init__(hostname="pdf-test", var_dir=var_dir)


def stored(invoice: Invoice) -> bytes:
    with invoice.pdf.open("rb") as handle:
        return handle.read()


@requires_postgres
@requires_redis
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_renders_the_pdf_after_the_change_commits_and_a_second_delivery_keeps_it(tmp_path, settings):
    # The worker's CROSSGRADE_VAR_DIR gives it STORAGES' default location VAR_DIR / "media": the same folder.
    var_dir = tmp_path / "var"
    media = var_dir / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(media)}}}
    s = subscription_setup()
    was_eager = app.conf.task_always_eager
    worker = Worker(var_dir)
    try:
        app.conf.task_always_eager = False  # the after-commit hook sends the task to Redis
        quote = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=MID_JANUARY,
                             actor=s.owner)
        change = quote_accept(quote=quote, actor=s.owner, now=MID_JANUARY)  # autocommit: committed on return
        invoice = Invoice.objects.get(plan_change=change)
        assert invoice.number and not invoice.pdf  # not rendered in this process

        invoice = wait_for(lambda: Invoice.objects.filter(pk=invoice.pk).exclude(pdf="").first(), seconds=60,
                           worker=worker, what=f"the worker stores the PDF of {invoice.number}")
        assert invoice.pdf.name == f"invoices/{invoice.number}.pdf"
        assert (media / invoice.pdf.name).is_file()  # the worker wrote where this process reads
        content = stored(invoice)
        text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)
        assert invoice.number in text
        assert format_currency(invoice.total, invoice.currency, locale="en") in text  # €61.42
        first_id = wait_for(lambda: worker.succeeded(TASK), seconds=10, worker=worker, what="the worker logs the first run")
        assert list(first_id.values()) == [repr(invoice.pdf.name)]
        written_at = (media / invoice.pdf.name).stat().st_mtime_ns

        # Delivered again, as a retry or a redelivery after a lost worker would: the stored file is kept.
        again = render_invoice_pdf.delay(invoice.pk)
        wait_for(lambda: again.id in worker.succeeded(TASK), seconds=60, worker=worker,
                 what="the worker runs the second delivery")
        assert worker.succeeded(TASK)[again.id] == repr(invoice.pdf.name)
        invoice.refresh_from_db()
        assert invoice.pdf.name == f"invoices/{invoice.number}.pdf"
        assert stored(invoice) == content
        assert (media / invoice.pdf.name).stat().st_mtime_ns == written_at
        assert sorted(path.name for path in (media / "invoices").iterdir()) == [f"{invoice.number}.pdf"]
    finally:
        app.conf.task_always_eager = was_eager
        output = worker.stop()
    assert "Traceback" not in output, output
    assert len(re.findall(rf"Task {re.escape(TASK)}\[[0-9a-f-]+\] succeeded", output)) == 2, output
