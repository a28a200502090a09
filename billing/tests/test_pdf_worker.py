"""Invoice PDFs rendered end to end by a real Celery worker process, over Redis, against the test database."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from babel.numbers import format_currency
from django.conf import settings as django_settings
from django.db import connection
from pypdf import PdfReader

from billing.models import Invoice
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tasks import render_invoice_pdf
from billing.tests.factories import MID_JANUARY, subscription_setup
from config.celery import app
from conftest import requires_postgres, requires_redis

ROOT = Path(__file__).resolve().parents[2]
TASK = "billing.tasks.render_invoice_pdf"


def database_url() -> str:
    """The test database (test_…), for the worker process: as in test_tasks.py."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """`celery -A config worker` as a subprocess; its output is collected line by line as it comes."""

    def __init__(self, var_dir: Path) -> None:
        env = {**os.environ, "DATABASE_URL": database_url(), "REDIS_URL": django_settings.REDIS_URL,
               "CROSSGRADE_VAR_DIR": str(var_dir)}
        env.pop("CELERY_TASK_ALWAYS_EAGER", None)
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--concurrency", "2", "--pool", "prefork",
             "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--hostname", f"pdf-test-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def succeeded(self) -> dict[str, str]:
        """Task id → return value of every render_invoice_pdf the worker finished (celery's INFO log)."""
        pattern = rf"Task {re.escape(TASK)}\[([0-9a-f-]+)\] succeeded in [0-9.e-]+s: (.*)"
        return dict(re.findall(pattern, self.output))

    def stop(self) -> str:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=5)
        return self.output


def wait_for(condition: Callable[[], object], *, seconds: float, worker: Worker, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        if worker.process.poll() is not None:
            pytest.fail(f"the worker exited ({worker.process.returncode}) before {what}:\n{worker.output}")
        time.sleep(0.2)
    pytest.fail(f"not within {seconds:.0f} s: {what}\n--- worker output ---\n{worker.output}")


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
        first_id = wait_for(worker.succeeded, seconds=10, worker=worker, what="the worker logs the first run")
        assert list(first_id.values()) == [repr(invoice.pdf.name)]
        written_at = (media / invoice.pdf.name).stat().st_mtime_ns

        # Delivered again, as a retry or a redelivery after a lost worker would: the stored file is kept.
        again = render_invoice_pdf.delay(invoice.pk)
        wait_for(lambda: again.id in worker.succeeded(), seconds=60, worker=worker,
                 what="the worker runs the second delivery")
        assert worker.succeeded()[again.id] == repr(invoice.pdf.name)
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
