"""The win-back sweep over 100,000 enrolled customers: pick the due ones, queue their emails in the outbox and
enqueue the sending tasks on Redis, timed in-process (what the beat task `retention.tasks.winback_sweep` runs).

It (re)creates a PostgreSQL database, runs `migrate` and `seed_demo`, then with bulk_create writes N customers and
one enrolment each in a two-step cancellation campaign (7 and 30 days, the second with a 20 % offer), a realistic
mix (the share due now is --due, default 10 %):

* due now for step 1 or step 2 (half each),
* due now but opted out (the sweep stops them and sends nothing), 2 %,
* waiting for a later step, 58 %; converted (came back), 15 %; finished or stopped, the rest.

It flushes its Redis database, starts the clock, calls `winback_sweep(now=…)` and stops the clock when it returns:
by then every due email is a committed outbox row (with its signed offer and unsubscribe links) and every batch
task is on the Redis queue (enqueued after each chunk's commit). It checks the counts (one email per due enrolment,
each send row unique, the queue holding every batch), runs the sweep a second time to show it queues nothing twice,
and prints the figure, the load average and the counts. No worker runs: sending is not part of the target.

    .venv/bin/python bench/winback_sweep.py                    # --customers 100000 --due 0.10 --target-seconds 30
    .venv/bin/python bench/winback_sweep.py --customers 10000 --reuse-db
    .venv/bin/python bench/winback_sweep.py --profile          # and cProfile's hottest functions

The target (issue text): the sweep over 100,000 customers picks the due ones and enqueues their emails within 30 s
on this machine. The exit status is 0 only when it is met and the checks pass.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import workerkit
from loadkit import log

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/crossgrade_bench_winback"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--due", type=float, default=0.10, help="share of enrolments due now (default 0.10)")
    parser.add_argument("--target-seconds", type=float, default=30.0)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--reuse-db", action="store_true", help="keep the database (and its rows) if it exists")
    parser.add_argument("--profile", action="store_true")
    return parser.parse_args()


def populate(count: int, due_share: float, now) -> dict[str, int]:
    from django.db import transaction

    from billing.models import Customer, Product
    from retention.models import EmailOptOut, RetentionOffer, WinBackCampaign, WinBackEnrolment, WinBackStep

    offer = RetentionOffer.objects.create(name="Bench come back", headline="20 % off for 3 months",
                                          kind="discount", percent_off=Decimal("20.00"), periods=3)
    campaign = WinBackCampaign.objects.create(name="Bench after cancellation", trigger="cancel")
    WinBackStep.objects.create(campaign=campaign, position=1, delay_days=7)
    WinBackStep.objects.create(campaign=campaign, position=2, delay_days=30, offer=offer)
    product = Product.objects.get(code="analytics")
    assert product  # the seeded catalog is there
    due = int(count * due_share)
    opted_out = int(count * 0.02)
    later = int(count * 0.58)
    converted = int(count * 0.15)
    counts = {"due": due, "due_opted_out": opted_out, "later": later, "converted": converted,
              "finished_or_stopped": count - due - opted_out - later - converted}
    log(f"creating {count:,} customers and enrolments: {counts}")
    with transaction.atomic():
        customers = Customer.objects.bulk_create([
            Customer(name=f"Winback bench {i:06d}", email=f"billing+wb{i}@winback-bench.example", currency="EUR",
                     country="DE", timezone="Europe/Berlin", language="de" if i % 3 == 0 else "en",
                     address=f"Bench {i}\nMusterweg 1\n10115 Berlin") for i in range(count)], batch_size=2000)
        rows = []
        for index, customer in enumerate(customers):
            triggered = now - timedelta(days=10 + index % 20)
            row = WinBackEnrolment(customer=customer, campaign=campaign, triggered_at=triggered, created_at=triggered,
                                   next_position=1, next_send_at=now - timedelta(minutes=1 + index % 600))
            if index < due + opted_out:
                row.next_position = 1 + index % 2
            elif index < due + opted_out + later:
                row.next_send_at = now + timedelta(days=1 + index % 25)
                row.next_position = 2
            elif index < due + opted_out + later + converted:
                row.status, row.next_send_at, row.converted_at = "converted", None, now - timedelta(days=1)
            else:
                row.status, row.next_send_at = ("finished" if index % 2 else "stopped"), None
            rows.append(row)
        WinBackEnrolment.objects.bulk_create(rows, batch_size=5000)
        EmailOptOut.objects.bulk_create([EmailOptOut(customer=customers[i], source="link", created_at=now)
                                         for i in range(due, due + opted_out)], batch_size=5000)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return counts


def main() -> int:
    args = parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="winback-bench-"))
    env = workerkit.app_env(database_url=args.database_url, redis_url=args.redis_url, var_dir=var_dir)
    workerkit.app_database(env, args.database_url, fresh=not args.reuse_db)
    from django.utils import timezone

    from billing.models import Notification
    from config.celery import app
    from retention.models import WinBackEnrolment, WinBackSend
    from retention.services.winback import SEND_BATCH, winback_sweep

    app.conf.task_always_eager = False
    now = timezone.now()
    if WinBackEnrolment.objects.filter(campaign__name="Bench after cancellation").exists():
        raise SystemExit("the database already holds a bench run: run without --reuse-db")
    # The demo seed's own enrolment (vera, cancelled 8 days ago) is due as well: the sweep rightly sends it too.
    seeded_due = WinBackEnrolment.objects.filter(status="active", next_send_at__lte=now).count()
    counts = populate(args.customers, args.due, now)
    counts["due"] += seeded_due
    workerkit.redis_flush(args.redis_url)
    before_notifications = Notification.objects.count()
    load = workerkit.load_average()
    log(f"sweeping (load average {load})")
    profile = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profile:
        profile.enable()
    result = winback_sweep(now=now, chunk_size=args.chunk_size)
    if profile:
        profile.disable()
    elapsed = time.perf_counter() - started
    queued_tasks = workerkit.queue_length(args.redis_url)
    again_started = time.perf_counter()
    again = winback_sweep(now=now, chunk_size=args.chunk_size)
    again_elapsed = time.perf_counter() - again_started

    emails = Notification.objects.count() - before_notifications
    sends = WinBackSend.objects.count()
    expected_batches = sum(math.ceil(n / SEND_BATCH) for n in _chunk_sizes(counts, args.chunk_size))
    problems = []
    if result["queued"] != counts["due"] or emails != counts["due"] or sends != counts["due"]:
        problems.append(f"expected {counts['due']} emails: queued {result['queued']}, rows {emails}, sends {sends}")
    if result["stopped"] != counts["due_opted_out"]:
        problems.append(f"expected {counts['due_opted_out']} stopped (opted out), got {result['stopped']}")
    if queued_tasks < math.ceil(counts["due"] / SEND_BATCH) or queued_tasks > expected_batches:
        problems.append(f"{queued_tasks} tasks on Redis, expected about {expected_batches}")
    if again["queued"] != 0:
        problems.append(f"a second sweep queued {again['queued']} more")

    print(f"customers/enrolments: {args.customers:,}; {counts}")
    print(f"sweep: {result['queued']:,} emails queued (outbox rows with signed links), {result['stopped']:,} "
          f"opted-out enrolments stopped, {result['chunks']} chunks of ≤ {args.chunk_size}, {queued_tasks} "
          f"batch tasks (≤ {SEND_BATCH} emails each) on Redis")
    print(f"second sweep right after: {again['queued']} queued in {again_elapsed:.2f} s")
    print(f"load average before the sweep: {load}; after: {workerkit.load_average()}")
    print(f"code: {workerkit.code_state()}")
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    if profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    ok = elapsed <= args.target_seconds and not problems
    verdict = "OK" if ok else "FAILED" if problems else "ABOVE TARGET"
    print(f"win-back sweep: {args.customers:,} customers, {result['queued']:,} due emails queued and enqueued in "
          f"{elapsed:.1f} s (target ≤ {args.target_seconds:.0f} s) {verdict}")
    return 0 if ok else 1


def _chunk_sizes(counts: dict[str, int], chunk: int) -> list[int]:
    """Upper bound of the batches: every chunk's emails split in SEND_BATCH pieces."""
    total = counts["due"] + counts["due_opted_out"]
    return [chunk] * (total // chunk) + ([total % chunk] if total % chunk else [])


if __name__ == "__main__":
    sys.exit(main())
