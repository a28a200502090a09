"""Where one quote request spends its time: SQL queries and the hottest functions, in-process.

Companion to quote_latency.py. Runs the same POST /api/subscriptions/<id>/quotes/ through Django's
test client (the full middleware, auth, throttle and DRF stack, no gunicorn) against the benchmark
database that quote_latency.py created and seeded, then prints:

* the SQL queries of one request (CaptureQueriesContext), with their time;
* the mean in-process time per request;
* a cProfile of --requests requests, by own time and by cumulative time.

    .venv/bin/python bench/quote_latency.py          # creates and seeds crossgrade_bench
    .venv/bin/python bench/quote_profile.py [--requests 200] [--top 30] [--redis-url redis://...]

DATABASE_URL as for quote_latency.py. Each request stores one Quote row, as in the benchmark.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import io
import json
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/crossgrade_bench"


PACKAGES = [
    ("/django/db/models/sql/", "django ORM: SQL compilation"),
    ("/django/db/models/", "django ORM: querysets, models, fields"),
    ("/django/db/", "django db backend"),
    ("/rest_framework/", "Django REST framework"),
    ("/django/", "django: other (request, middleware, urls, utils)"),
    ("/psycopg/", "psycopg (incl. waiting for PostgreSQL)"),
    ("/billing/", "billing (Crossgrade)"),
    ("/bench/", "benchmark harness"),
]


def own_time_by_package(stats: pstats.Stats) -> dict[str, float]:
    totals: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        if filename == "~":
            label = "builtins: " + ("socket/select" if "select" in name or "socket" in name or "poll" in name
                                    else "other")
            label = "psycopg (incl. waiting for PostgreSQL)" if "psycopg" in name else label
        else:
            label = next((lab for marker, lab in PACKAGES if marker in filename), "python stdlib / other")
        totals[label] = totals.get(label, 0.0) + tottime
    return totals


def explain_times(connection, query_sql: str) -> tuple[float, float]:
    planning, execution = [], []
    with connection.cursor() as cursor:
        for _ in range(20):
            cursor.execute("EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) " + query_sql)
            plan = cursor.fetchone()[0][0]
            planning.append(plan["Planning Time"])
            execution.append(plan["Execution Time"])
    return statistics.median(planning), statistics.median(execution)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests profiled")
    parser.add_argument("--top", type=int, default=30, help="functions listed per table")
    parser.add_argument("--redis-url", default="", help="use the Redis cache (as production) at this URL")
    parser.add_argument("--sql", action="store_true", help="print each query's full SQL")
    parser.add_argument("--explain", action="store_true",
                        help="EXPLAIN ANALYZE each SELECT: PostgreSQL's planning and execution time")
    args = parser.parse_args()

    os.environ.pop("DJANGO_DEBUG", None)
    os.environ.pop("REDIS_URL", None)
    os.environ["DATABASE_URL"] = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    scratch = tempfile.mkdtemp(prefix="crossgrade-profile-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    os.environ["CROSSGRADE_VAR_DIR"] = scratch
    if args.redis_url:
        os.environ["REDIS_URL"] = args.redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))

    import django

    django.setup()

    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token

    from billing.models import Plan, Subscription

    alice = get_user_model().objects.get(username="alice")
    token, _ = Token.objects.get_or_create(user=alice)
    subscription = Subscription.objects.get(customer__memberships__user=alice, product__code="analytics")
    plan = Plan.objects.get(product__code="analytics", code="business")
    client = Client(headers={"Authorization": f"Token {token.key}"})
    path = f"/api/subscriptions/{subscription.pk}/quotes/"
    rng = random.Random(1)
    cache.delete(f"throttle_user_{alice.pk}")

    def post() -> int:
        body = json.dumps({"plan": plan.pk, "interval": "month", "quantity": rng.randint(3, 20)})
        response = client.post(path, body, content_type="application/json")
        if response.status_code != 201:
            raise SystemExit(f"quote answered {response.status_code}: {response.content[:500]!r}")
        return response.status_code

    for _ in range(20):  # warm-up: imports, URL resolver, connection, throttle history
        post()

    with CaptureQueriesContext(connection) as queries:
        post()
    print(f"SQL queries in one quote request: {len(queries.captured_queries)}")
    for i, query in enumerate(queries.captured_queries, 1):
        text = query["sql"] if args.sql else " ".join(query["sql"].split())[:150]
        print(f"  {i:2d}. {float(query['time']) * 1000:5.1f} ms  {text}")
    if args.explain:
        print("PostgreSQL planning + execution per SELECT (median of 20 EXPLAIN ANALYZE runs):")
        for i, query in enumerate(queries.captured_queries, 1):
            if query["sql"].lstrip().upper().startswith("SELECT"):
                planning, execution = explain_times(connection, query["sql"])
                print(f"  {i:2d}. planning {planning:.3f} ms, execution {execution:.3f} ms")

    started = time.perf_counter()
    for _ in range(args.requests):
        post()
    mean_ms = (time.perf_counter() - started) * 1000 / args.requests
    print(f"\nin-process time per quote request (test client, one at a time): {mean_ms:.1f} ms")

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.requests):
        post()
    profiler.disable()
    print(f"\n--- own time by package, {args.requests} requests under cProfile ---")
    stats = pstats.Stats(profiler)
    grand = sum(row[2] for row in stats.stats.values())
    for package, seconds in sorted(own_time_by_package(stats).items(), key=lambda kv: -kv[1]):
        print(f"  {100 * seconds / grand:5.1f}%  {1000 * seconds / args.requests:6.2f} ms/request  {package}")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(args.top)
        print(f"\n--- cProfile of {args.requests} requests, by {order} ---")
        print(out.getvalue().split("\n", 4)[-1] if order == "tottime" else out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
