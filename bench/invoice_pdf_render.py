"""How long WeasyPrint takes to render one one-page invoice PDF, in-process, against the real template.

Self-contained: a throwaway SQLite database and CROSSGRADE_VAR_DIR in a temp dir (never var/), `migrate`,
`seed_demo`, then an upgrade of the demo customer "Acme GmbH" (Analytics Pro × 5 → Business × 5, monthly)
is quoted and accepted, which issues an invoice. Celery runs eagerly (CELERY_TASK_ALWAYS_EAGER), so the
after-commit PDF task needs no broker. Then `invoice_pdf_bytes` is timed over --renders renders after
--warmup unmeasured ones; before each render the invoice is read afresh, as the worker does.

    .venv/bin/python bench/invoice_pdf_render.py            # --renders 50 --warmup 5 --target-ms 300

Prints the page count of the PDF (pypdf) and one summary line; exits 0 when the median meets the target.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def setup_django(scratch: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["CROSSGRADE_VAR_DIR"] = str(scratch / "var")
    os.environ["DATABASE_URL"] = f"sqlite:///{scratch / 'bench.sqlite3'}"
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "true"
    for name in ("REDIS_URL", "DJANGO_DEBUG"):  # file cache and no broker; templates as in production
        os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def issue_invoice():
    """seed_demo, then Acme GmbH's Analytics Pro × 5 → Business × 5 (an upgrade: now, prorated, invoiced)."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from billing.models import Invoice, Price, Subscription
    from billing.services.plan_changes import quote_accept
    from billing.services.quotes import quote_create

    call_command("migrate", verbosity=0)
    call_command("seed_demo", stdout=io.StringIO())
    alice = get_user_model().objects.get(username="alice")
    subscription = Subscription.objects.get(customer__name="Acme GmbH", product__code="analytics")
    business = Price.objects.get(plan__product__code="analytics", plan__code="business", currency="EUR",
                                 interval="month", is_active=True)
    now = timezone.now()
    quote = quote_create(subscription=subscription, to_price=business, quantity=subscription.quantity, now=now,
                         actor=alice)
    change = quote_accept(quote=quote, actor=alice, now=now)
    invoice = Invoice.objects.filter(plan_change=change).first()
    if invoice is None:
        raise SystemExit(f"no invoice was issued: plan change {change.pk} is {change.status}")
    return invoice


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=50, help="measured renders (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured renders first (default 5)")
    parser.add_argument("--target-ms", type=float, default=300.0, help="target for the median (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, media) and print it")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="crossgrade-pdfbench-"))
    try:
        setup_django(scratch)
        from babel.numbers import format_currency
        from pypdf import PdfReader

        from billing.models import Invoice
        from billing.services.invoice_pdfs import invoice_pdf_bytes

        invoice = issue_invoice()
        invoice.refresh_from_db()
        stored = f", stored by the after-commit task as {invoice.pdf.name}" if invoice.pdf else ""
        total = format_currency(invoice.total, invoice.currency, locale="en")
        print(f"invoice {invoice.number}: {invoice.lines.count()} lines, total {total}{stored}")

        started = time.perf_counter()
        pdf = invoice_pdf_bytes(invoice=Invoice.objects.get(pk=invoice.pk))
        print(f"first render in this script (the after-commit task already imported WeasyPrint and rendered once): "
              f"{(time.perf_counter() - started) * 1000:.0f} ms")
        pages = len(PdfReader(io.BytesIO(pdf)).pages)
        print(f"PDF: {pages} page{'s' if pages != 1 else ''}, {len(pdf):,} bytes")
        for _ in range(args.warmup):
            invoice_pdf_bytes(invoice=Invoice.objects.get(pk=invoice.pk))

        timings: list[float] = []
        for _ in range(args.renders):
            fresh = Invoice.objects.get(pk=invoice.pk)
            started = time.perf_counter()
            invoice_pdf_bytes(invoice=fresh)
            timings.append((time.perf_counter() - started) * 1000)

        median = statistics.median(timings)
        load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
        print(f"load average {load} on {os.cpu_count()} CPUs; min {min(timings):.0f} ms, "
              f"mean {statistics.fmean(timings):.0f} ms")
        ok = median <= args.target_ms and pages == 1
        verdict = "OK" if ok else ("ABOVE TARGET" if median > args.target_ms else f"NOT ONE PAGE ({pages})")
        print(f"invoice PDF render: median {median:.0f} ms, p90 {percentile(timings, 0.9):.0f} ms, "
              f"max {max(timings):.0f} ms over {len(timings)} renders (target median ≤ {args.target_ms:.0f} ms) "
              f"{verdict}")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
