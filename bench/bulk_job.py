"""A bulk job of N customers from a CSV: the preview timed in-process, then the job run by K real Celery workers.

Self-contained and repeatable, like renewal_invoices.py: it (re)creates a PostgreSQL database, runs `migrate` and
`seed_demo`, creates N customers in-process with bulk_create (each in DE, a good card on the local gateway and one
Analytics Pro × 5 EUR monthly subscription ten days into its period), and builds the CSV staff would upload:
every customer (by id) to Analytics Business × 5 monthly, effective now (an upgrade: charged now, prorated).

1. Preview, in this process, timed: `bulk_job_from_csv` (every row checked and priced, the job and its rows
   stored in preview), as the admin upload does, with the number of SQL statements it took.
2. Run: it flushes its Redis database, starts K `celery -A config worker --concurrency 1` processes, starts the
   clock and confirms the job (`bulk_job_confirm`, as the admin's confirm button does): after commit
   `run_bulk_job` sends the rows to the workers in chunks of 200 (`apply_scheduled_changes`); each row is a quote
   and its acceptance (the charge, the change applied, its invoice issued, paid and queued for its PDF); each
   chunk ends with `bulk_job_finish_if_done`. Every 0.5 s the script counts the rows finished and applied, the
   invoices issued and rendered, and whether the job says `done`.

    .venv/bin/python bench/bulk_job.py                  # --customers 10000 --workers 2 --target-seconds 60
    .venv/bin/python bench/bulk_job.py --customers 1000 --until target
    .venv/bin/python bench/bulk_job.py --profile        # in-process: preview and one chunk, queries and cProfile

The target (issue text): a bulk job of 10,000 customers done within 60 s with two workers. The clock runs from the
confirmation until the job is `done`; the preview before it is timed and reported separately (and the sum). The
PDFs that follow are reported but are not the target. The exit status is 0 only when the target is met and the
checks pass: every row applied once (one applied plan change, one charge of its amount, one paid invoice each),
numbers without gaps, the job's counts right.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import workerkit
from loadkit import log
from sweep_scheduled_changes import SEATS, TIMEZONE, staff_check, staff_counter

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/crossgrade_bench_bulk"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/7"
CHUNK = 200  # bulk_jobs.CHUNK_SIZE


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    workerkit.add_run_arguments(parser, database_url=DEFAULT_DATABASE_URL, redis_url=DEFAULT_REDIS_URL)
    parser.add_argument("--customers", type=int, default=10_000, help="CSV rows, one customer each (default 10000)")
    parser.add_argument("--target-seconds", type=float, default=60.0,
                        help="the job done within this after confirming (default 60)")
    parser.add_argument("--until", choices=("all", "target"), default="all",
                        help="wait for the PDFs too (all, default) or stop when the job is done (target)")
    parser.add_argument("--profile", action="store_true",
                        help="no workers: preview and apply chunks in this process; queries per row and a cProfile")
    parser.add_argument("--chunk", type=int, default=CHUNK, help=f"--profile: rows per chunk (default {CHUNK})")
    parser.add_argument("--top", type=int, default=25, help="--profile: functions and query shapes to print")
    args = parser.parse_args()
    if args.customers < 1 or args.workers < 1 or args.chunk < 1:
        parser.error("--customers, --workers and --chunk must be at least 1")
    return args


def create_customers(count: int, tag: str) -> workerkit.Customers:
    from django.utils import timezone

    from billing import proration

    pro = workerkit.catalog_price("analytics", "pro")
    now = timezone.now().replace(microsecond=0)
    start = now - timedelta(days=10)
    end = proration.add_interval(start, "month", ZoneInfo(TIMEZONE))
    made = workerkit.customers_with_subscriptions(count, tag=tag, label="Bulk bench", price=pro, seats=SEATS,
                                                  start=start, end=end, timezone_name=TIMEZONE)
    log(f"created {count} customers with a card and Analytics Pro × {SEATS} EUR monthly "
        f"({start:%Y-%m-%d} – {end:%Y-%m-%d})")
    return made


def csv_bytes(customer_ids: list[int]) -> bytes:
    """Every customer to Analytics Business × 5 monthly, effective now (the empty effective_date)."""
    lines = ["customer,product,plan,interval,seats,effective_date"]
    lines += [f"{pk},analytics,business,month,{SEATS}," for pk in customer_ids]
    return ("\n".join(lines) + "\n").encode()


def preview(data: bytes, *, actor, name: str):
    """bulk_job_from_csv, timed, with the statements it took. Returns (job, seconds, statements)."""
    from django.db import connection
    from django.utils import timezone

    from billing.services.bulk_jobs import bulk_job_from_csv

    counter = workerkit.QueryCounter()
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        job = bulk_job_from_csv(name=name, reason="Bulk benchmark: everyone to Business", data=data, actor=actor,
                                now=timezone.now())
    return job, time.perf_counter() - started, counter


def job_rows(job) -> list[int]:
    from billing.models import ScheduledChange

    return list(ScheduledChange.objects.filter(job=job).order_by("pk").values_list("pk", flat=True))


# --- in process ---------------------------------------------------------------------------------------------


def profile(*, made: workerkit.Customers, actor, chunk: int, top: int, database_url: str) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from billing.services.bulk_jobs import bulk_job_confirm, bulk_job_from_csv
    from billing.tasks import apply_scheduled_changes

    connection.queries_limit = 1_000_000  # Django keeps only the last 9,000 by default: a chunk has more
    data = csv_bytes(made.customer_ids)
    rows = len(made.customer_ids)
    job, seconds, counter = preview(data, actor=actor, name="Profile: timed")
    print(f"preview of {rows} rows in this process: {seconds:.2f} s, {1000 * seconds / rows:.2f} ms per row, "
          f"{counter.count / rows:.1f} statements per row ({1000 * counter.seconds / rows:.2f} ms per row waiting "
          f"for them); load average {workerkit.load_average()}")
    small = data.split(b"\n")
    sample = b"\n".join(small[: 1 + chunk]) + b"\n"
    with CaptureQueriesContext(connection) as captured:
        bulk_job_from_csv(name="Profile: queries", reason="Bulk benchmark", data=sample, actor=actor,
                          now=timezone.now())
    print(f"\nqueries of a preview of {chunk} rows, by shape:")
    for line in workerkit.query_report(captured.captured_queries, items=chunk, top=top):
        print(line)
    profiler = cProfile.Profile()
    profiler.enable()
    bulk_job_from_csv(name="Profile: cProfile", reason="Bulk benchmark", data=sample, actor=actor, now=timezone.now())
    profiler.disable()
    print("\npreview under cProfile:")
    for line in workerkit.cprofile_report(profiler, items=chunk, top=top):
        print(line)

    bulk_job_confirm(job=job, actor=actor, now=timezone.now())  # its run_bulk_job message is flushed, never run
    ids = job_rows(job)
    warmup, timed, queried, profiled = ids[:5], ids[5:5 + chunk], ids[5 + chunk:5 + 2 * chunk], ids[5 + 2 * chunk:]
    apply_scheduled_changes(warmup, job.pk)  # the task's own function, in this process
    counter = workerkit.QueryCounter()
    stats_before = workerkit.database_stats(database_url)
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        done = apply_scheduled_changes(timed, job.pk)
    seconds = time.perf_counter() - started
    commits = workerkit.database_stats(database_url).get("commits", 0) - stats_before.get("commits", 0)
    print(f"\none chunk (apply_scheduled_changes) of {len(timed)} rows in this process: {seconds:.2f} s, "
          f"{1000 * seconds / len(timed):.1f} ms per row ({done} done), {counter.count / len(timed):.1f} statements "
          f"and {commits / len(timed):.1f} transactions (autocommit statements included) per row, "
          f"{1000 * counter.seconds / len(timed):.1f} ms per row waiting for statements")
    with CaptureQueriesContext(connection) as captured:
        apply_scheduled_changes(queried, job.pk)
    print(f"\nqueries of one chunk ({len(queried)} rows), by shape:")
    for line in workerkit.query_report(captured.captured_queries, items=len(queried), top=top):
        print(line)
    profiler = cProfile.Profile()
    profiler.enable()
    apply_scheduled_changes(profiled, job.pk)
    profiler.disable()
    print()
    for line in workerkit.cprofile_report(profiler, items=len(profiled), top=top):
        print(line)


# --- the run ------------------------------------------------------------------------------------------------


def job_check(*, job_id: int, n: int) -> list[str]:
    from billing.models import AuditEvent, BulkJob, PlanChange, ScheduledChange
    from billing.services.bulk_jobs import bulk_job_progress

    failures = []
    job = BulkJob.objects.get(pk=job_id)
    counts = bulk_job_progress(job=job)
    if (counts["total"], counts["finished"], counts["applied"]) != (n, n, n):
        failures.append(f"job counts: {counts['total']} rows, {counts['finished']} finished, {counts['applied']} "
                        f"applied, for {n}")
    if job.status != BulkJob.Status.DONE or job.finished_at is None:
        failures.append(f"the job is {job.status!r} (finished_at {job.finished_at}) with {counts['finished']} of "
                        f"{counts['total']} rows finished")
    if AuditEvent.objects.filter(action="bulk_job.confirmed", object_id=str(job_id)).count() != 1:
        failures.append("not exactly one bulk_job.confirmed audit event")
    # The preview priced each row; the worker charged what the quote at apply time said (same day: the same).
    rows = ScheduledChange.objects.filter(job_id=job_id, status=ScheduledChange.Status.APPLIED).select_related(
        "plan_change")
    if differ := sum(1 for row in rows if row.plan_change and row.plan_change.amount_due != row.preview_amount_due):
        log(f"note: {differ} rows charged an amount other than their preview (a day boundary passed?)")
    if PlanChange.objects.filter(pk__in=rows.values("plan_change_id")).exclude(status="applied").exists():
        failures.append("rows pointing at a plan change that is not applied")
    return failures


def main() -> int:
    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="crossgrade-bulk-"))
    var_dir = scratch / "var"
    env = workerkit.app_env(database_url=args.database_url, redis_url=args.redis_url, var_dir=var_dir)
    workers: list[workerkit.Worker] = []
    ok = False
    try:
        workerkit.app_database(env, args.database_url, fresh=not args.reuse_db)
        from django.contrib.auth import get_user_model
        from django.utils import timezone

        admin = get_user_model().objects.get(username="admin")
        n = 5 + 3 * args.chunk if args.profile else args.customers
        made = create_customers(n, time.strftime("%Y%m%d%H%M%S"))
        if args.profile:
            workerkit.redis_flush(args.redis_url)
            print(workerkit.code_state())
            try:
                profile(made=made, actor=admin, chunk=args.chunk, top=args.top, database_url=args.database_url)
            finally:
                workerkit.redis_flush(args.redis_url)
            return 0

        from billing.models import ScheduledChange
        from billing.services.bulk_jobs import bulk_job_confirm

        load_before_preview = workerkit.load_average()
        job, preview_seconds, counter = preview(csv_bytes(made.customer_ids), actor=admin,
                                                name=f"Bulk benchmark, {n} rows")
        row_ids = job_rows(job)
        statuses = dict.fromkeys(ScheduledChange.Status.values, 0)
        for status in ScheduledChange.objects.filter(job=job).values_list("status", flat=True):
            statuses[status] += 1
        print(f"preview (bulk_job_from_csv, in this process): {n} rows in {preview_seconds:.1f} s "
              f"({1000 * preview_seconds / n:.2f} ms per row), {counter.count} statements "
              f"({counter.count / n:.1f} per row, {counter.seconds:.1f} s waiting for them); "
              f"{statuses['preview']} ready, {statuses['invalid']} invalid; total due {job.preview_totals}; "
              f"load average {load_before_preview} before, {workerkit.load_average()} after")
        if statuses["preview"] != n:
            raise SystemExit(f"the preview has {statuses['preview']} valid rows of {n}")

        targets = {"finished": n, "job_done": 1}
        if args.until == "all":
            targets["rendered"] = n
        run = workerkit.run_with_workers(
            env, database_url=args.database_url, redis_url=args.redis_url, count=args.workers, log_dir=scratch,
            prefix="bulk", start=lambda: bulk_job_confirm(job=job, actor=admin, now=timezone.now()),
            progress=staff_counter(row_ids=row_ids, customer_ids=made.customer_ids, job_id=job.pk),
            targets=targets, timeout=args.timeout, workers_out=workers, app=args.celery_app)

        progress, reached, first, last = run.progress, run.progress.reached, run.progress.first, run.progress.last
        print(workerkit.code_state())
        print(f"{n} rows, {args.workers} workers × --concurrency 1 (prefork) on {os.cpu_count()} CPUs shared with "
              f"PostgreSQL, Redis, this script and anything else running; load average {run.before.load} before, "
              f"{run.after.load} after")
        print(f"stopped: {progress.stopped_because} after {progress.elapsed:.1f} s; last counts "
              + ", ".join(f"{k} {v}" for k, v in last.items()) + f"; {run.waiting} messages left in the queue")
        rate = f" ({n / reached['finished']:.1f} rows/s)" if reached["finished"] else ""
        print(f"  all rows finished: {workerkit.fmt(reached['finished'])}{rate}; first at "
              f"{workerkit.fmt(first['finished'])}")
        print(f"  job done:          {workerkit.fmt(reached['job_done'])}")
        if "rendered" in reached:
            print(f"  all PDFs rendered: {workerkit.fmt(reached['rendered'])}; first at "
                  f"{workerkit.fmt(first['rendered'])}")
        print("  (seconds after confirming, polled every 0.5 s)")
        # Per row finished, not per row of the job: a run stopped by --timeout did only part of the work.
        for line in run.report(items=last["finished"], unit="row finished"):
            print(line)

        complete = progress.complete and args.until == "all"
        failures = staff_check(row_ids=row_ids, subscription_ids=made.subscription_ids,
                               to_price=workerkit.catalog_price("analytics", "business"), complete=complete,
                               media=var_dir / "media", clock_wall=run.clock_wall)
        failures += job_check(job_id=job.pk, n=n)
        if run.problems:
            failures.append(f"{len(run.problems)} failed/retried tasks or tracebacks in the worker logs")
        if failures and not progress.complete:
            print("checks after an unfinished run (the missing work fails some of them):")
        for failure in failures:
            print(f"  CHECK FAILED: {failure}")
        if not failures:
            print(f"checks: {n} rows applied once each (one plan change, one charge, one paid invoice), numbers "
                  "without gaps, the job done with its counts right: OK")

        done_at = reached["job_done"]
        ok = done_at is not None and done_at <= args.target_seconds and not failures
        verdict = ("OK" if ok else "NOT DONE" if done_at is None else "INCORRECT" if failures else "ABOVE TARGET")
        head = (f"done {done_at:.1f} s after confirming ({n / done_at:.1f} rows/s)" if done_at is not None
                else f"{last['finished']} of {n} rows finished, job not done at the {args.timeout:.0f} s timeout")
        pdfs = (f"; PDFs {workerkit.fmt(reached['rendered'])}" if reached.get("rendered") is not None
                else f"; {last['rendered']} of {n} PDFs" if "rendered" in reached else "")
        total = f" (preview + run {preview_seconds + done_at:.1f} s)" if done_at is not None else ""
        if args.celery_app != "config":
            print(f"EXPERIMENT: the workers ran -A {args.celery_app}, not the product's config app")
        print(f"bulk job: {n} rows, preview {preview_seconds:.1f} s; {head}{total}{pdfs}; with {args.workers} "
              f"workers, load average {run.after.load.split(' / ')[0]} (target ≤ {args.target_seconds:.0f} s) "
              f"{verdict}")
    finally:
        workerkit.finish(workers, scratch, keep=args.keep)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
