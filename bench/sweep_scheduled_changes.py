"""The sweep: N due scheduled changes applied by K real Celery workers, timed end to end (or profiled in-process).

Self-contained and repeatable, like renewal_invoices.py: it (re)creates a PostgreSQL database, runs `migrate` and
`seed_demo` (catalog, change rules, tax rates, the legal entity, the admin user), creates N customers in-process
with bulk_create, flushes its Redis database, starts K `celery -A config worker --concurrency 1` processes, starts
the clock and sends `billing.tasks.apply_due_changes` once, as beat does every minute. From there the product
does everything.

Two kinds of due change:

* default: customers' period-end downgrades. Each customer has an Analytics Pro × 5 EUR monthly subscription whose
  period ended a minute ago and a scheduled `PlanChange` to Starter × 5 at that period end, written as
  `quote_accept` writes one (an accepted quote, the plan change, its `plan_change.scheduled` audit event). The
  sweep sends the due subscriptions in chunks of 100 (`apply_period_ends`); each renewal step applies the change
  and issues the new period's invoice (Starter × 5, 71.40 EUR with 19 % VAT) in one transaction, then queues its
  PDF and its collection; a paid invoice queues the receipt.
* `--staff`: staff `ScheduledChange` rows, upgrades due now (Pro × 5 → Business × 5 in the middle of the period,
  good cards), as `scheduled_change_create` writes them. The sweep sends them in chunks of 100
  (`apply_scheduled_changes`); each is a quote and its acceptance: the charge, the change applied, its invoice
  issued (paid) and, after commit, its PDF.

    .venv/bin/python bench/sweep_scheduled_changes.py               # --changes 10000 --workers 2 --target-seconds 60
    .venv/bin/python bench/sweep_scheduled_changes.py --staff
    .venv/bin/python bench/sweep_scheduled_changes.py --changes 1000 --until target
    .venv/bin/python bench/sweep_scheduled_changes.py --profile     # in-process: queries and cProfile of one chunk

The target (issue text): 10,000 due scheduled changes applied by the sweep with two workers within 60 s. The
clock runs from sending apply_due_changes until every change is applied (staff rows: finished). What follows
(renewal invoices issued, paid and rendered; plan-change invoices rendered) is reported but is not the target.
The exit status is 0 only when the target is met and the checks pass.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import workerkit
from loadkit import log

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/crossgrade_bench_sweep"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/7"
TIMEZONE = "Europe/Berlin"
SEATS = 5
SWEEP_CHUNK = 100  # period_ends_dispatch's chunk_size


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    workerkit.add_run_arguments(parser, database_url=DEFAULT_DATABASE_URL, redis_url=DEFAULT_REDIS_URL)
    parser.add_argument("--changes", type=int, default=10_000, help="due scheduled changes, one customer each "
                                                                   "(default 10000)")
    parser.add_argument("--staff", action="store_true",
                        help="staff ScheduledChange rows (upgrades due now) instead of period-end PlanChanges")
    parser.add_argument("--target-seconds", type=float, default=60.0,
                        help="every change applied within this (default 60)")
    parser.add_argument("--until", choices=("all", "target"), default="all",
                        help="wait for the invoices, payments and PDFs that follow too (all, default) or stop when "
                             "the target count is reached (target)")
    parser.add_argument("--profile", action="store_true",
                        help="no workers: apply chunks in this process and print queries per item and a cProfile")
    parser.add_argument("--chunk", type=int, default=SWEEP_CHUNK,
                        help=f"--profile: items per profiled chunk (default {SWEEP_CHUNK}, the sweep's)")
    parser.add_argument("--top", type=int, default=25, help="--profile: functions and query shapes to print")
    args = parser.parse_args()
    if args.changes < 1 or args.workers < 1 or args.chunk < 1:
        parser.error("--changes, --workers and --chunk must be at least 1")
    return args


# --- the due changes -------------------------------------------------------------------------------------


class PeriodEnd:
    """Customers' period-end downgrades (PlanChange, scheduled), due with their subscription's period end."""

    label = "period-end plan changes"
    unit = "change"

    def __init__(self, count: int, tag: str) -> None:
        from django.db import transaction
        from django.utils import timezone

        from billing import proration
        from billing.models import AuditEvent, PlanChange, Quote
        from billing.services.plan_changes import _change_snapshot
        from billing.services.quotes import quote_price

        pro = workerkit.catalog_price("analytics", "pro")
        self.to_price = workerkit.catalog_price("analytics", "starter")
        tz = ZoneInfo(TIMEZONE)
        end = (timezone.now() - timedelta(minutes=1)).replace(microsecond=0)
        local = end.astimezone(tz)
        year, month0 = divmod(local.month - 2, 12)
        start = local.replace(year=local.year + year, month=month0 + 1,
                              day=min(local.day, 28)).astimezone(ZoneInfo("UTC"))  # about a month earlier
        made = workerkit.customers_with_subscriptions(count, tag=tag, label="Sweep bench", price=pro, seats=SEATS,
                                                      start=start, end=end, timezone_name=TIMEZONE)
        self.customer_ids, self.subscription_ids = made.customer_ids, made.subscription_ids
        self.end, self.next_end = end, proration.add_interval(end, "month", tz)

        # What quote_accept writes for a period-end change, for every customer: the customer chose the downgrade
        # three days before the period end; the quote is the same for all (same terms, period and tax).
        accepted_at = end - timedelta(days=3)
        template = quote_price(subscription=made.subscriptions[0], to_price=self.to_price, quantity=SEATS,
                               now=accepted_at)
        if (template.timing, template.direction, template.amount_due) != ("period_end", "downgrade", 0):
            raise SystemExit(f"the template quote is {template.direction}, {template.timing}, "
                             f"{template.amount_due} due: expected a period-end downgrade with nothing due")
        fields = {f.attname: getattr(template, f.attname) for f in Quote._meta.concrete_fields
                  if f.attname not in ("id", "customer_id", "subscription_id", "status")}
        with transaction.atomic():
            quotes = Quote.objects.bulk_create([
                Quote(**fields, customer_id=s.customer_id, subscription_id=s.pk, status=Quote.Status.ACCEPTED)
                for s in made.subscriptions], batch_size=1000)
            changes = PlanChange.objects.bulk_create([
                PlanChange(
                    customer_id=q.customer_id, subscription_id=q.subscription_id, quote=q,
                    status=PlanChange.Status.SCHEDULED, direction=q.direction, timing=q.timing,
                    from_price_id=q.from_price_id, from_quantity=q.from_quantity, to_price_id=q.to_price_id,
                    to_quantity=q.to_quantity, effective_at=q.effective_at, new_period_start=q.new_period_start,
                    new_period_end=q.new_period_end, currency=q.currency, lines=q.lines, subtotal=q.subtotal,
                    tax_rate=q.tax_rate, reverse_charge=q.reverse_charge, tax=q.tax, total=q.total,
                    balance_applied=q.balance_applied, amount_due=q.amount_due, balance_after=q.balance_after,
                    payment_method=None, payment_gateway="", payment_method_reference="",
                    reason_code=f"customer_{q.direction}", created_by=None, created_at=accepted_at)
                for q in quotes], batch_size=1000)
            AuditEvent.objects.bulk_create([
                AuditEvent(created_at=accepted_at, actor=None, actor_label="system", customer_id=c.customer_id,
                           action="plan_change.scheduled", reason_code=c.reason_code,
                           object_type=PlanChange._meta.label, object_id=str(c.pk), before=None,
                           after=_change_snapshot(c), message=f"Scheduled for {c.effective_at.isoformat()}")
                for c in changes], batch_size=1000)
        self.change_ids = [c.pk for c in changes]
        log(f"created {count} customers with a card, Analytics Pro × {SEATS} EUR monthly (period ended "
            f"{end:%Y-%m-%d %H:%M:%S} UTC) and a scheduled downgrade to {self.to_price.plan} × {SEATS} at its end")

    def chunk_ids(self) -> list[int]:
        """What the sweep hands to apply_period_ends: the due subscriptions (their change is part of the step)."""
        return self.subscription_ids

    def run_chunk(self, ids: list[int], now) -> int:
        from billing.services.renewals import period_ends_run

        return period_ends_run(subscription_ids=ids, plan_change_ids=[], now=now)

    def counter(self):
        from django.db.models import Count, Q

        from billing.models import Invoice, Notification, PlanChange

        changes = PlanChange.objects.filter(status=PlanChange.Status.APPLIED, **workerkit.scoped("pk", self.change_ids))
        invoices = Invoice.objects.filter(billing_reason=Invoice.Reason.RENEWAL, kind=Invoice.Kind.INVOICE,
                                          **workerkit.scoped("subscription_id", self.subscription_ids))
        receipts = Notification.objects.filter(kind="renewal_paid", status=Notification.Status.SENT,
                                               **workerkit.scoped("customer_id", self.customer_ids))

        def counts() -> dict[str, int]:
            row = invoices.aggregate(issued=Count("pk", filter=Q(number__isnull=False)),
                                     paid=Count("pk", filter=Q(status=Invoice.Status.PAID)),
                                     rendered=Count("pk", filter=~Q(pdf="")))
            return {"applied": changes.count(), **row, "receipts": receipts.count()}

        return counts

    target_key = "applied"
    follow_keys = ("issued", "paid", "rendered")

    def check(self, *, complete: bool, media: Path, clock_wall: float) -> list[str]:
        from datetime import UTC, datetime

        from django.db.models import Count

        from billing.models import AuditEvent, Invoice, LocalPayment, PaymentAttempt, PlanChange, Subscription

        n = len(self.change_ids)
        failures: list[str] = []
        changes = list(PlanChange.objects.filter(**workerkit.scoped("pk", self.change_ids)))
        if bad := [c.pk for c in changes if c.status != PlanChange.Status.APPLIED or c.applied_at is None]:
            failures.append(f"{len(bad)} of {n} scheduled changes not applied, e.g. {bad[:3]}")
        applied_events = (AuditEvent.objects.filter(action="plan_change.applied", object_type=PlanChange._meta.label,
                                                    **workerkit.scoped("customer_id", self.customer_ids))
                          .values("object_id").annotate(c=Count("pk")))
        if twice := [row["object_id"] for row in applied_events if row["c"] != 1]:
            failures.append(f"{len(twice)} changes applied more than once (audit), e.g. {twice[:3]}")
        subscriptions = list(Subscription.objects.filter(**workerkit.scoped("pk", self.subscription_ids)))
        if bad := [s.pk for s in subscriptions if (s.price_id, s.quantity, s.current_period_start,
                                                   s.current_period_end, s.version, s.status)
                   != (self.to_price.pk, SEATS, self.end, self.next_end, 2, Subscription.Status.ACTIVE)]:
            failures.append(f"{len(bad)} subscriptions not on {self.to_price.plan} × {SEATS} for the next period at "
                            f"version 2, e.g. {bad[:3]}")
        invoices = list(Invoice.objects.filter(billing_reason=Invoice.Reason.RENEWAL, kind=Invoice.Kind.INVOICE,
                                               **workerkit.scoped("subscription_id", self.subscription_ids)))
        per_subscription: dict[int, int] = {}
        for invoice in invoices:
            per_subscription[invoice.subscription_id] = per_subscription.get(invoice.subscription_id, 0) + 1
        if len(invoices) != n:
            failures.append(f"{len(invoices)} renewal invoices for {n} subscriptions")
        if doubles := [s for s, c in per_subscription.items() if c > 1]:
            failures.append(f"{len(doubles)} subscriptions billed more than once, e.g. {doubles[:3]}")
        expected = Decimal("71.40")  # Starter 12.00 × 5 + 19 % VAT: the new terms, not Pro's 178.50
        if wrong := [i.number for i in invoices if (i.supply_start, i.supply_end, i.total) !=
                     (self.end, self.next_end, expected)]:
            failures.append(f"{len(wrong)} renewal invoices not for the next period at {expected} EUR, e.g. {wrong[:3]}")
        failures += workerkit.series_failures()
        attempts = list(PaymentAttempt.objects.filter(invoice__in=[i.pk for i in invoices]))
        succeeded = [a for a in attempts if a.status == PaymentAttempt.Status.SUCCEEDED]
        if complete and (len(succeeded) != n or len(attempts) != n):
            failures.append(f"{len(attempts)} payment attempts, {len(succeeded)} succeeded, for {n} invoices")
        since = datetime.fromtimestamp(clock_wall - 1, tz=UTC)
        charged = LocalPayment.objects.filter(created_at__gte=since).count()
        if charged != len(succeeded):
            failures.append(f"{charged} charges at the gateway for {len(succeeded)} succeeded attempts")
        if complete:
            if missing := [i.number for i in invoices if not i.pdf or not (media / i.pdf.name).is_file()]:
                failures.append(f"{len(missing)} invoices without a stored PDF, e.g. {missing[:3]}")
        return failures


class Staff:
    """Staff ScheduledChange rows: upgrades due now, each a quote and its acceptance (charge, apply, invoice)."""

    label = "staff scheduled changes"
    unit = "change"

    def __init__(self, count: int, tag: str) -> None:
        from django.contrib.auth import get_user_model
        from django.db import transaction
        from django.utils import timezone

        from billing import proration
        from billing.models import AuditEvent, ScheduledChange

        pro = workerkit.catalog_price("analytics", "pro")
        self.to_price = workerkit.catalog_price("analytics", "business")
        tz = ZoneInfo(TIMEZONE)
        now = timezone.now().replace(microsecond=0)
        start = now - timedelta(days=10)
        end = proration.add_interval(start, "month", tz)
        made = workerkit.customers_with_subscriptions(count, tag=tag, label="Staff bench", price=pro, seats=SEATS,
                                                      start=start, end=end, timezone_name=TIMEZONE)
        self.customer_ids, self.subscription_ids = made.customer_ids, made.subscription_ids
        self.start, self.end = start, end
        admin = get_user_model().objects.get(username="admin")
        created_at = now - timedelta(days=1)
        effective_at = now - timedelta(minutes=1)
        with transaction.atomic():
            rows = ScheduledChange.objects.bulk_create([
                ScheduledChange(customer_id=s.customer_id, subscription=s, to_price=self.to_price, to_quantity=SEATS,
                                effective_at=effective_at, status=ScheduledChange.Status.SCHEDULED,
                                reason="Sweep benchmark: staff upgrade", created_by=admin, created_at=created_at)
                for s in made.subscriptions], batch_size=1000)
            AuditEvent.objects.bulk_create([
                AuditEvent(created_at=created_at, actor=admin, actor_label=admin.get_username(),
                           customer_id=row.customer_id, action="scheduled_change.created",
                           reason_code="staff_scheduled", object_type=ScheduledChange._meta.label,
                           object_id=str(row.pk), after={"to_price_id": self.to_price.pk, "to_quantity": SEATS,
                                                         "effective_at": effective_at.isoformat()},
                           message=row.reason) for row in rows], batch_size=1000)
        self.row_ids = [row.pk for row in rows]
        log(f"created {count} customers with a card, Analytics Pro × {SEATS} EUR monthly (period "
            f"{start:%Y-%m-%d} – {end:%Y-%m-%d}) and a staff change to {self.to_price.plan} × {SEATS} due "
            f"{effective_at:%H:%M:%S} UTC")

    def chunk_ids(self) -> list[int]:
        return self.row_ids

    def run_chunk(self, ids: list[int], now) -> int:
        from billing.services.scheduled_changes import scheduled_changes_run

        return scheduled_changes_run(ids=ids, now=now)

    def counter(self):
        return staff_counter(row_ids=self.row_ids, customer_ids=self.customer_ids)

    target_key = "finished"
    follow_keys = ("rendered",)

    def check(self, *, complete: bool, media: Path, clock_wall: float) -> list[str]:
        return staff_check(row_ids=self.row_ids, subscription_ids=self.subscription_ids, to_price=self.to_price,
                           complete=complete, media=media, clock_wall=clock_wall)


def staff_counter(*, row_ids: list[int], customer_ids: list[int], job_id: int | None = None):
    """Counts for staff rows: finished (any final status), applied, their invoices issued and rendered; with a
    job, whether the job says it is done."""
    from django.db.models import Count, Q

    from billing.models import BulkJob, Invoice, ScheduledChange

    rows = ScheduledChange.objects.filter(**workerkit.scoped("pk", row_ids))
    invoices = Invoice.objects.filter(kind=Invoice.Kind.INVOICE, billing_reason=Invoice.Reason.PLAN_CHANGE,
                                      **workerkit.scoped("customer_id", customer_ids))

    def counts() -> dict[str, int]:
        row = rows.aggregate(finished=Count("pk", filter=Q(status__in=ScheduledChange.DONE)),
                             applied=Count("pk", filter=Q(status=ScheduledChange.Status.APPLIED)))
        row.update(invoices.aggregate(issued=Count("pk", filter=Q(number__isnull=False)),
                                      rendered=Count("pk", filter=~Q(pdf=""))))
        if job_id is not None:
            row["job_done"] = int(BulkJob.objects.filter(pk=job_id, status=BulkJob.Status.DONE).exists())
        return row

    return counts


def staff_check(*, row_ids: list[int], subscription_ids: list[int], to_price, complete: bool, media: Path,
                clock_wall: float) -> list[str]:
    """Every row applied exactly once: one applied plan change, one charge of its amount and one paid invoice each,
    every subscription on the new terms once, numbers without gaps."""
    from datetime import UTC, datetime

    from billing.models import Invoice, LocalPayment, PlanChange, ScheduledChange, Subscription

    n = len(row_ids)
    failures: list[str] = []
    rows = list(ScheduledChange.objects.filter(**workerkit.scoped("pk", row_ids)))
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row.status] = by_status.get(row.status, 0) + 1
    if by_status.get(ScheduledChange.Status.APPLIED, 0) != n:
        codes: dict[str, int] = {}
        for row in rows:
            if row.status != ScheduledChange.Status.APPLIED:
                codes[row.result_code or row.status] = codes.get(row.result_code or row.status, 0) + 1
        failures.append(f"rows by status {by_status} (not applied, by result code: {codes})")
    changes = list(PlanChange.objects.filter(**workerkit.scoped("subscription_id", subscription_ids)))
    live = [c for c in changes if c.status not in (PlanChange.Status.CANCELLED, PlanChange.Status.FAILED)]
    applied = [c for c in changes if c.status == PlanChange.Status.APPLIED]
    if len(applied) != by_status.get(ScheduledChange.Status.APPLIED, 0) or len(live) != len(applied):
        failures.append(f"{len(applied)} applied and {len(live) - len(applied)} other live plan changes for "
                        f"{by_status.get(ScheduledChange.Status.APPLIED, 0)} applied rows")
    if len({c.subscription_id for c in applied}) != len(applied):
        failures.append("a subscription with more than one applied plan change")
    if wrong := [row.pk for row in rows if row.status == ScheduledChange.Status.APPLIED
                 and row.plan_change_id not in {c.pk for c in applied}]:
        failures.append(f"{len(wrong)} applied rows without their applied plan change, e.g. {wrong[:3]}")
    keys = {c.payment_idempotency_key: c for c in applied}
    payments = list(LocalPayment.objects.filter(idempotency_key__in=list(keys)))
    if len(payments) != len(applied) or any(p.status != LocalPayment.Status.SUCCEEDED for p in payments):
        failures.append(f"{len(payments)} charges for {len(applied)} applied changes")
    if wrong := [p.reference for p in payments
                 if p.amount_minor != int(keys[p.idempotency_key].amount_due * 100) or p.currency != "EUR"]:
        failures.append(f"{len(wrong)} charges for the wrong amount, e.g. {wrong[:3]}")
    since = datetime.fromtimestamp(clock_wall - 1, tz=UTC)
    if (charged := LocalPayment.objects.filter(created_at__gte=since).count()) != len(applied):
        failures.append(f"{charged} charges at the gateway during the run for {len(applied)} applied changes")
    invoices = list(Invoice.objects.filter(plan_change__in=[c.pk for c in applied]).select_related("plan_change"))
    if len(invoices) != len(applied) or any(i.kind != Invoice.Kind.INVOICE or i.status != Invoice.Status.PAID
                                            or not i.number or i.total != i.plan_change.total for i in invoices):
        failures.append(f"{len(invoices)} documents for {len(applied)} applied changes (each: one paid invoice of "
                        "the change's total)")
    failures += workerkit.series_failures()
    subscriptions = list(Subscription.objects.filter(**workerkit.scoped("pk", subscription_ids)))
    if bad := [s.pk for s in subscriptions if (s.price_id, s.quantity, s.version) != (to_price.pk, SEATS, 2)]:
        failures.append(f"{len(bad)} subscriptions not on {to_price.plan} × {SEATS} at version 2, e.g. {bad[:3]}")
    if complete:
        if missing := [i.number for i in invoices if not i.pdf or not (media / i.pdf.name).is_file()]:
            failures.append(f"{len(missing)} invoices without a stored PDF, e.g. {missing[:3]}")
    return failures


# --- in process: one chunk timed, one with its queries, one under cProfile --------------------------------


def profile(work, *, chunk: int, top: int, database_url: str) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    connection.queries_limit = 1_000_000  # Django keeps only the last 9,000 by default: a staff chunk has more
    ids = work.chunk_ids()
    warmup, timed, queried, profiled = ids[:5], ids[5:5 + chunk], ids[5 + chunk:5 + 2 * chunk], ids[5 + 2 * chunk:]
    work.run_chunk(warmup, timezone.now())  # imports, first connection, caches

    counter = workerkit.QueryCounter()
    stats_before = workerkit.database_stats(database_url)
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        done = work.run_chunk(timed, timezone.now())
    seconds = time.perf_counter() - started
    stats_after = workerkit.database_stats(database_url)
    commits = stats_after.get("commits", 0) - stats_before.get("commits", 0)
    print(f"one chunk of {len(timed)} in this process: {seconds:.2f} s, {1000 * seconds / len(timed):.1f} ms per "
          f"{work.unit} ({done} done), {counter.count / len(timed):.1f} statements and {commits / len(timed):.1f} "
          f"transactions (autocommit statements included) per {work.unit}, "
          f"{1000 * counter.seconds / len(timed):.1f} ms per {work.unit} waiting for "
          f"statements; load average {workerkit.load_average()}")

    with CaptureQueriesContext(connection) as captured:
        work.run_chunk(queried, timezone.now())
    print(f"\nqueries of one chunk ({len(queried)} {work.unit}s), by shape:")
    for line in workerkit.query_report(captured.captured_queries, items=len(queried), top=top):
        print(line)

    if isinstance(work, PeriodEnd):  # what follows each renewal: collect_invoice, in this process too
        from billing.models import Invoice
        from billing.services.collection import invoice_collect

        invoice_ids = list(Invoice.objects.filter(billing_reason=Invoice.Reason.RENEWAL, subscription_id__in=queried)
                           .values_list("pk", flat=True))
        started = time.perf_counter()
        with CaptureQueriesContext(connection) as captured:
            for invoice_id in invoice_ids:
                invoice_collect(invoice_id=invoice_id, now=timezone.now())
        seconds = time.perf_counter() - started
        print(f"\ncollect_invoice for those {len(invoice_ids)} invoices: {1000 * seconds / len(invoice_ids):.1f} ms "
              "each (queries captured):")
        for line in workerkit.query_report(captured.captured_queries, items=len(invoice_ids), top=12):
            print(line)

    profiler = cProfile.Profile()
    profiler.enable()
    work.run_chunk(profiled, timezone.now())
    profiler.disable()
    print()
    for line in workerkit.cprofile_report(profiler, items=len(profiled), top=top):
        print(line)


# --- the run ---------------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="crossgrade-sweep-"))
    var_dir = scratch / "var"
    env = workerkit.app_env(database_url=args.database_url, redis_url=args.redis_url, var_dir=var_dir)
    workers: list[workerkit.Worker] = []
    ok = False
    try:
        workerkit.app_database(env, args.database_url, fresh=not args.reuse_db)
        kind = Staff if args.staff else PeriodEnd
        n = 5 + 3 * args.chunk if args.profile else args.changes
        tag = time.strftime("%Y%m%d%H%M%S")
        started = time.perf_counter()
        work = kind(n, tag)
        log(f"… in {time.perf_counter() - started:.1f} s")
        if args.profile:
            workerkit.redis_flush(args.redis_url)
            print(workerkit.code_state())
            try:
                profile(work, chunk=args.chunk, top=args.top, database_url=args.database_url)
            finally:
                workerkit.redis_flush(args.redis_url)  # the PDFs and collections the chunks queued: nobody runs them
            return 0

        from config.celery import app

        counts = work.counter()
        targets = {work.target_key: n}
        if args.until == "all":
            targets.update(dict.fromkeys(work.follow_keys, n))
        run = workerkit.run_with_workers(
            env, database_url=args.database_url, redis_url=args.redis_url, count=args.workers, log_dir=scratch,
            prefix="sweep", start=lambda: app.send_task("billing.tasks.apply_due_changes"), progress=counts,
            targets=targets, timeout=args.timeout, workers_out=workers, app=args.celery_app)

        progress, reached, first = run.progress, run.progress.reached, run.progress.first
        last = progress.last
        print(workerkit.code_state())
        print(f"{n} {work.label}, {args.workers} workers × --concurrency 1 (prefork) on {os.cpu_count()} CPUs shared "
              f"with PostgreSQL, Redis, this script and anything else running; load average {run.before.load} "
              f"before, {run.after.load} after")
        print(f"stopped: {progress.stopped_because} after {progress.elapsed:.1f} s; last counts "
              + ", ".join(f"{k} {v}/{n}" for k, v in last.items()) + f"; {run.waiting} messages left in the queue")
        key = work.target_key
        rate = f" ({n / reached[key]:.1f}/s)" if reached[key] else ""
        print(f"  all {key}: {workerkit.fmt(reached[key])}{rate}; first at {workerkit.fmt(first[key])}")
        for follow in work.follow_keys:
            if follow in reached:
                print(f"  all {follow}: {workerkit.fmt(reached[follow])}; first at {workerkit.fmt(first[follow])}")
        print("  (seconds after sending apply_due_changes, polled every 0.5 s)")
        for line in run.report(items=last[key], unit=f"{work.unit} done"):  # per item done, not per item asked for
            print(line)

        failures = work.check(complete=progress.complete and args.until == "all", media=var_dir / "media",
                              clock_wall=run.clock_wall)
        if run.problems:
            failures.append(f"{len(run.problems)} failed/retried tasks or tracebacks in the worker logs")
        if failures and not progress.complete:
            print("checks after an unfinished run (the missing work fails some of them):")
        for failure in failures:
            print(f"  CHECK FAILED: {failure}")
        if not failures:
            print(f"checks: {n} changes applied once each, one document each, numbers without gaps, "
                  f"one charge per payment: OK")

        target_time = reached[key]
        within = target_time is not None and target_time <= args.target_seconds
        ok = within and not failures
        verdict = ("OK" if ok else "NOT DONE" if target_time is None else "INCORRECT" if failures
                   else "ABOVE TARGET")
        head = (f"{n} {key} in {target_time:.1f} s ({n / target_time:.1f}/s)" if target_time is not None
                else f"{last[key]} of {n} {key} at the {args.timeout:.0f} s timeout")
        follow = "; ".join(f"{k} {workerkit.fmt(reached[k])}" if reached.get(k) is not None else f"{k} {last[k]}/{n}"
                           for k in work.follow_keys if k in last)
        if args.celery_app != "config":
            print(f"EXPERIMENT: the workers ran -A {args.celery_app}, not the product's config app")
        print(f"sweep, {work.label}: {head}; then {follow}; with {args.workers} workers, load average "
              f"{run.after.load.split(' / ')[0]} (target ≤ {args.target_seconds:.0f} s) {verdict}")
    finally:
        workerkit.finish(workers, scratch, keep=args.keep)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
