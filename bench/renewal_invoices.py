"""Month end: N renewal invoices issued, collected and rendered by K real Celery workers, timed end to end.

Self-contained and repeatable: it (re)creates a PostgreSQL database for the benchmark, runs `migrate` and
`seed_demo` (catalog, tax rates, the legal entity), then creates N customers in-process with bulk_create, each
with a saved card (pm_card_visa on the local gateway) and one Analytics Pro × 5 EUR monthly subscription whose
period ended a minute ago. It flushes its Redis database, starts K `celery -A config worker --concurrency 1`
processes and waits until they are ready, then starts the clock and sends `billing.tasks.apply_due_changes`
as beat does every minute. From there the product does everything: the sweep sends the due subscriptions to
the workers in chunks of 100; each renewal issues a numbered invoice in its own transaction and, after commit,
queues its PDF (WeasyPrint) and its collection (an off-session charge), which queues the receipt email.
Every 0.5 s the script counts invoices issued, paid and rendered and receipts sent, until all N are done or
--timeout passes. The workers are always stopped.

    .venv/bin/python bench/renewal_invoices.py            # --customers 1000 --workers 2 --target-seconds 300

The target (issue text): 1,000 month-end invoices issued and rendered by two workers within 5 minutes. The
exit status is 0 only when every invoice was issued, paid and rendered within --target-seconds and the
checks pass: exactly one renewal invoice per subscription, one successful charge each and no other, invoice
numbers without gaps, every period advanced exactly once, every PDF stored, every receipt sent.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import workerkit
from loadkit import log, manage, prepare_database

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/crossgrade_bench_renewals"
TIMEZONE = "Europe/Berlin"
SEATS = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    workerkit.add_run_arguments(parser, database_url=DEFAULT_DATABASE_URL, timeout=600.0, experiments=False)
    parser.add_argument("--customers", type=int, default=1000, help="customers, one due renewal each (default 1000)")
    parser.add_argument("--target-seconds", type=float, default=300.0,
                        help="all invoices issued, paid and rendered within this (default 300)")
    args = parser.parse_args()
    if args.customers < 1 or args.workers < 1:
        parser.error("--customers and --workers must be at least 1")
    return args


# --- the month end ---------------------------------------------------------------------------------------


def create_due_subscriptions(count: int, tag: str):
    """`count` customers with a default card and a monthly subscription whose period ended a minute ago."""
    from django.db import transaction
    from django.utils import timezone

    from billing import proration
    from billing.models import Customer, PaymentMethod, Price, Subscription

    price = Price.objects.select_related("plan__product").get(
        plan__product__code="analytics", plan__code="pro", currency="EUR", interval="month", is_active=True)
    tz = ZoneInfo(TIMEZONE)
    end = (timezone.now() - timedelta(minutes=1)).replace(microsecond=0)
    local = end.astimezone(tz)
    year, month0 = divmod(local.month - 2, 12)
    start = local.replace(year=local.year + year, month=month0 + 1,
                          day=min(local.day, 28)).astimezone(ZoneInfo("UTC"))  # about a month earlier
    with transaction.atomic():
        customers = Customer.objects.bulk_create([
            Customer(name=f"Renewal bench {tag} {i:05d}", email=f"billing+{tag}-{i}@renewal-bench.example",
                     currency="EUR", country="DE", timezone=TIMEZONE, language="en",
                     address=f"Renewal bench {i}\nMusterweg {i}\n10115 Berlin")
            for i in range(1, count + 1)], batch_size=1000)
        PaymentMethod.objects.bulk_create([
            PaymentMethod(customer=customer, gateway="local", reference="pm_card_visa", label="Visa ending 4242",
                          is_default=True) for customer in customers], batch_size=1000)
        subscriptions = Subscription.objects.bulk_create([
            Subscription(customer=customer, product=price.plan.product, price=price, quantity=SEATS,
                         seats_in_use=2, status=Subscription.Status.ACTIVE, current_period_start=start,
                         current_period_end=end) for customer in customers], batch_size=1000)
    next_end = proration.add_interval(end, "month", tz)
    return [c.pk for c in customers], [s.pk for s in subscriptions], price, end, next_end


def scoped(field: str, ids: list[int]) -> dict:
    """A filter on ids: a range when they are contiguous (cheap to poll), else IN."""
    if max(ids) - min(ids) + 1 == len(ids):
        return {f"{field}__gte": min(ids), f"{field}__lte": max(ids)}
    return {f"{field}__in": ids}


def progress_counter(customer_ids: list[int], subscription_ids: list[int]):
    from django.db.models import Count, Q

    from billing.models import Invoice, Notification

    invoices = Invoice.objects.filter(billing_reason=Invoice.Reason.RENEWAL, kind=Invoice.Kind.INVOICE,
                                      **scoped("subscription_id", subscription_ids))
    receipts = Notification.objects.filter(kind="renewal_paid", status=Notification.Status.SENT,
                                           **scoped("customer_id", customer_ids))

    def counts() -> dict[str, int]:
        row = invoices.aggregate(issued=Count("pk", filter=Q(number__isnull=False)),
                                 paid=Count("pk", filter=Q(status=Invoice.Status.PAID)),
                                 rendered=Count("pk", filter=~Q(pdf="")))
        return {**row, "emailed": receipts.count()}

    return counts


# --- checks ----------------------------------------------------------------------------------------------


def check(*, customer_ids: list[int], subscription_ids: list[int], end, next_end, media: Path,
          clock_wall: float) -> list[str]:
    """What must hold after the run; returns the failures (empty: correct)."""
    from datetime import UTC, datetime

    from django.db.models import Count
    from pypdf import PdfReader

    from billing.models import (
        AuditEvent,
        DocumentSeries,
        Invoice,
        LocalPayment,
        Notification,
        PaymentAttempt,
        Subscription,
    )

    n = len(subscription_ids)
    failures: list[str] = []
    invoices = list(Invoice.objects.filter(billing_reason=Invoice.Reason.RENEWAL, kind=Invoice.Kind.INVOICE,
                                           **scoped("subscription_id", subscription_ids)))
    if len(invoices) != n:
        failures.append(f"{len(invoices)} renewal invoices for {n} subscriptions")
    per_subscription = {}
    for invoice in invoices:
        per_subscription[invoice.subscription_id] = per_subscription.get(invoice.subscription_id, 0) + 1
    if doubles := [s for s, c in per_subscription.items() if c > 1]:
        failures.append(f"{len(doubles)} subscriptions billed more than once, e.g. {doubles[:3]}")
    numbers = [invoice.number for invoice in invoices]
    if None in numbers or len(set(numbers)) != len(numbers):
        failures.append("renewal invoices without a number or with a duplicate number")
    if wrong := [i.number for i in invoices if i.supply_start != end or i.supply_end != next_end]:
        failures.append(f"{len(wrong)} invoices for the wrong period, e.g. {wrong[:3]}")
    expected_total = None
    if invoices:
        expected_total = invoices[0].total
        if odd := [i.number for i in invoices if i.total != expected_total or i.amount_due != expected_total]:
            failures.append(f"{len(odd)} invoices with a total other than {expected_total}, e.g. {odd[:3]}")
    if unpaid := [i.number for i in invoices if i.status != Invoice.Status.PAID or i.amount_paid != i.amount_due]:
        failures.append(f"{len(unpaid)} invoices not paid in full, e.g. {unpaid[:3]}")

    # Numbers: every invoice series is 1 … next_number − 1 without a gap or a duplicate (seed's invoices too).
    for series in DocumentSeries.objects.filter(kind=Invoice.Kind.INVOICE):
        head = f"{series.prefix}-{series.year}-"
        taken = sorted(int(number.removeprefix(head)) for number in Invoice.objects.filter(
            legal_entity_id=series.legal_entity_id, kind=Invoice.Kind.INVOICE, number__startswith=head,
        ).values_list("number", flat=True))
        if taken != list(range(1, series.next_number)):
            missing = sorted(set(range(1, series.next_number)) - set(taken))
            failures.append(f"series {head}: {len(taken)} numbers for next_number {series.next_number}, "
                            f"missing {missing[:5]}")

    # Payments: one succeeded attempt and one succeeded charge per invoice, and no other charge since the start.
    attempts = list(PaymentAttempt.objects.filter(invoice__in=[i.pk for i in invoices]))
    if len(attempts) != n or any(a.status != PaymentAttempt.Status.SUCCEEDED or a.number != 1 for a in attempts):
        by_status = {}
        for a in attempts:
            by_status[a.status] = by_status.get(a.status, 0) + 1
        failures.append(f"payment attempts: {len(attempts)} for {n} invoices, by status {by_status}")
    keys = [a.idempotency_key for a in attempts]
    payments = list(LocalPayment.objects.filter(idempotency_key__in=keys))
    amounts = {i.pk: i.amount_due for i in invoices}
    if len(payments) != n or any(p.status != LocalPayment.Status.SUCCEEDED for p in payments):
        failures.append(f"{len(payments)} local payments for {n} invoices, "
                        f"{sum(p.status == LocalPayment.Status.SUCCEEDED for p in payments)} succeeded")
    attempt_by_key = {a.idempotency_key: a for a in attempts}
    if wrong := [p.reference for p in payments
                 if p.amount_minor != int(amounts[attempt_by_key[p.idempotency_key].invoice_id] * 100)
                 or p.currency != "EUR"]:
        failures.append(f"{len(wrong)} charges for the wrong amount, e.g. {wrong[:3]}")
    since = datetime.fromtimestamp(clock_wall - 1, tz=UTC)
    if (charged := LocalPayment.objects.filter(created_at__gte=since).count()) != n:
        failures.append(f"{charged} charges taken at the gateway during the run for {n} invoices")

    # Periods: each subscription entered the next period exactly once.
    subscriptions = list(Subscription.objects.filter(**scoped("pk", subscription_ids)))
    if bad := [s.pk for s in subscriptions if (s.current_period_start, s.current_period_end, s.version, s.status)
               != (end, next_end, 2, Subscription.Status.ACTIVE)]:
        failures.append(f"{len(bad)} subscriptions not advanced exactly one period (or not active), e.g. {bad[:3]}")
    renewed = (AuditEvent.objects.filter(action="subscription.renewed", object_type="billing.Subscription",
                                         **scoped("customer_id", customer_ids))
               .values("object_id").annotate(c=Count("pk")))
    if len(renewed) != n or any(row["c"] != 1 for row in renewed):
        failures.append(f"subscription.renewed audit events for {len(renewed)} subscriptions, expected one each of {n}")

    # PDFs: stored once, on disk where the workers wrote them; a few are opened and read.
    missing = [i.number for i in invoices if not i.pdf or not (media / i.pdf.name).is_file()]
    if missing:
        failures.append(f"{len(missing)} invoices without a stored PDF, e.g. {missing[:3]}")
    # A second rendering that lost the race would have been stored under another name (storage adds a suffix).
    named = {Path(name).name for name in Invoice.objects.exclude(pdf="").values_list("pdf", flat=True)}
    folder = media / "invoices"
    if stray := sorted(f.name for f in folder.iterdir() if f.name not in named) if folder.is_dir() else []:
        failures.append(f"{len(stray)} PDF files that no invoice names (rendered twice?), e.g. {stray[:3]}")
    for invoice in sorted(invoices, key=lambda i: i.number)[:: max(1, n // 3)][:3]:
        if not invoice.pdf or not (media / invoice.pdf.name).is_file():
            continue
        reader = PdfReader(io.BytesIO((media / invoice.pdf.name).read_bytes()))
        text = "\n".join(page.extract_text() for page in reader.pages)
        if len(reader.pages) != 1 or invoice.number not in text:
            failures.append(f"the PDF of {invoice.number} has {len(reader.pages)} pages or lacks its number")

    # Receipts: one per invoice, sent.
    receipts = Notification.objects.filter(kind="renewal_paid", **scoped("customer_id", customer_ids))
    sent = receipts.filter(status=Notification.Status.SENT).count()
    if receipts.count() != n or sent != n:
        failures.append(f"receipt emails: {receipts.count()} queued, {sent} sent, for {n} invoices")
    return failures


# --- the run ---------------------------------------------------------------------------------------------


Meter = workerkit.Meter  # CPU and database counters at one instant, to subtract


def fmt(seconds: float | None) -> str:
    return f"{seconds:.1f} s" if seconds is not None else "not reached"


def main() -> int:
    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="crossgrade-renewals-"))
    var_dir = scratch / "var"
    env = workerkit.app_env(database_url=args.database_url, redis_url=args.redis_url, var_dir=var_dir)
    workers: list[workerkit.Worker] = []
    ok = False
    try:
        prepare_database(args.database_url, fresh=not args.reuse_db)
        log("migrating")
        manage(env, "migrate", "--noinput")
        log("seeding demo data")
        manage(env, "seed_demo")
        workerkit.django_setup(env)
        from django.db import connections

        from config.celery import app

        tag = time.strftime("%Y%m%d%H%M%S")
        started = time.perf_counter()
        customer_ids, subscription_ids, price, end, next_end = create_due_subscriptions(args.customers, tag)
        log(f"created {args.customers} customers, cards and due subscriptions ({price.plan} × {SEATS} "
            f"{price.unit_amount} {price.currency}/{price.interval}, period ended {end:%Y-%m-%d %H:%M:%S} UTC) "
            f"in {time.perf_counter() - started:.1f} s")
        connections.close_all()

        workerkit.redis_flush(args.redis_url)  # seed_demo's own after-commit tasks too: not part of the run
        workers = workerkit.start_workers(env, count=args.workers, log_dir=scratch, prefix="renewals")
        log(f"workers ready in {workerkit.wait_ready(workers):.1f} s")
        counts = progress_counter(customer_ids, subscription_ids)
        counts()  # connect before the clock starts
        before = Meter.read(workers, args.database_url)

        n = args.customers
        clock_wall = time.time()
        clock = time.monotonic()
        app.send_task("billing.tasks.apply_due_changes")  # as beat does, every minute
        progress = workerkit.watch(counts, {"issued": n, "paid": n, "rendered": n, "emailed": n}, started=clock,
                                   timeout=args.timeout, alive=lambda: workerkit.dead_worker(workers))

        after = Meter.read(workers, args.database_url)
        waiting = workerkit.queue_length(args.redis_url)
        runs = [run for w in workers for run in w.task_runs()]
        problems = [f"{w.name}: {line}" for w in workers for line in w.problems()]
        workerkit.stop_workers(workers)

        # --- report ---
        reached, first = progress.reached, progress.first
        print(f"{n} customers, {args.workers} workers × --concurrency 1 (prefork) on {os.cpu_count()} CPUs shared "
              f"with PostgreSQL, Redis, this script and anything else running; load average {before.load} before, "
              f"{after.load} after")
        print(f"stopped: {progress.stopped_because} after {progress.elapsed:.1f} s; last counts "
              + ", ".join(f"{k} {v}/{n}" for k, v in progress.last.items()) + f"; {waiting} messages left in the queue")
        issued_rate = f" ({n / reached['issued']:.1f} invoices issued/s)" if reached["issued"] else ""
        pdf_rate = f" ({n / reached['rendered']:.1f} PDFs/s)" if reached["rendered"] else ""
        print(f"  all issued:   {fmt(reached['issued'])}{issued_rate}; first at {fmt(first['issued'])}")
        print(f"  all paid:     {fmt(reached['paid'])}; first at {fmt(first['paid'])}")
        print(f"  all rendered: {fmt(reached['rendered'])}{pdf_rate}; first at {fmt(first['rendered'])}")
        print(f"  all receipts: {fmt(reached['emailed'])}; first at {fmt(first['emailed'])}")
        print("  (seconds after sending apply_due_changes, polled every 0.5 s)")
        if runs:
            print("per task, as the workers logged it (time inside the task; window in s after the clock started):")
            for line in workerkit.task_table(runs, clock_start=clock_wall, workers=args.workers):
                print("  " + line)
        for line in Meter.report(before, after, workers=workers, items=n, elapsed=progress.elapsed):
            print(line)
        for line in problems[:10]:
            print(f"  worker problem: {line}")

        failures = check(customer_ids=customer_ids, subscription_ids=subscription_ids, end=end, next_end=next_end,
                         media=var_dir / "media", clock_wall=clock_wall)
        if problems:
            failures.append(f"{len(problems)} failed/retried tasks or tracebacks in the worker logs")
        if failures and not progress.complete:
            print("checks after an unfinished run (the missing work fails some of them):")
        for failure in failures:
            print(f"  CHECK FAILED: {failure}")
        if not failures:
            print(f"checks: {n} renewal invoices, one per subscription, numbers without gaps, {n} charges and no "
                  f"other, every period advanced once, {n} PDFs stored, {n} receipts sent: OK")

        done = [reached[k] for k in ("issued", "paid", "rendered")]
        total = max(done) if all(t is not None for t in done) else None
        within = total is not None and total <= args.target_seconds
        ok = within and not failures
        # Work still missing at --timeout fails the checks too: call that not done, not incorrect.
        verdict = ("OK" if ok else "NOT DONE" if not progress.complete else "INCORRECT" if failures
                   else "ABOVE TARGET")
        issued = (f"{n} issued in {reached['issued']:.1f} s ({n / reached['issued']:.1f}/s)" if reached["issued"]
                  else f"{progress.last['issued']} of {n} issued")
        rendered = (f"rendered in {reached['rendered']:.1f} s" if reached["rendered"]
                    else f"{progress.last['rendered']} of {n} rendered")
        paid = f"paid in {reached['paid']:.1f} s" if reached["paid"] else f"{progress.last['paid']} of {n} paid"
        done_in = f"all done in {total:.1f} s" if total is not None else f"not done at the {args.timeout:.0f} s timeout"
        print(f"renewal invoices: {issued}, {paid}, {rendered}; {done_in} with {args.workers} "
              f"workers, load average {after.load.split(' / ')[0]} (target ≤ {args.target_seconds:.0f} s) {verdict}")
    finally:
        workerkit.finish(workers, scratch, keep=args.keep)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
