"""The quote API's latency under concurrent clients: gunicorn on PostgreSQL, measured end to end.

Self-contained and repeatable: it (re)creates a PostgreSQL database for the benchmark, migrates it,
loads the demo data (`manage.py seed_demo`), starts gunicorn on a free 127.0.0.1 port, waits for
/healthz, finds alice's Analytics subscription and the Analytics Business plan through the API,
then has N concurrent clients (threads, each with its own keep-alive http.client connection)
POST quotes for Pro × 5 → Business × 3..20 seats, which answer 201. After a warm-up it records
every request's latency and status and prints p50/p90/p99/max, throughput and errors.
gunicorn is always stopped at the end.

    .venv/bin/python bench/quote_latency.py [--clients 20] [--requests 3000] [--workers 4] [--threads 1]

DATABASE_URL picks the database (default postgres://postgres@127.0.0.1:5432/crossgrade_bench).
It is dropped and recreated on each run unless --reuse-db is given; a database whose name does
not contain "bench" is never dropped. The cache (and so DRF's throttle history) lives in a
throwaway directory, as in a single-host install; --redis-url measures with the Redis cache instead.
"""

from __future__ import annotations

import json
import random
import sys

from loadkit import Target, api_get, log, parse_args, run_benchmark


def find_targets(port: int, token: str) -> tuple[int, int]:
    """alice's Analytics subscription id and the Analytics Business plan id, found through the API."""
    customers = api_get(port, token, "/api/customers/")
    subscription_id = None
    for customer in customers:
        for subscription in api_get(port, token, f"/api/customers/{customer['id']}/subscriptions/"):
            if subscription["price"]["product"] == "analytics":
                subscription_id = subscription["id"]
                log(f"subscription {subscription_id}: {customer['name']}, {subscription['price']['plan_name']} "
                    f"× {subscription['quantity']}")
                break
        if subscription_id is not None:
            break
    if subscription_id is None:
        raise SystemExit("alice has no Analytics subscription; did seed_demo run?")
    products = api_get(port, token, "/api/plans/?product=analytics")
    plans = [plan for product in products for plan in product["plans"] if plan["code"] == "business"]
    if not plans:
        raise SystemExit("no Analytics Business plan in the catalog")
    return subscription_id, plans[0]["id"]


# --- the load ------------------------------------------------------------------------------


def quote_target(port: int, token: str) -> Target:
    subscription_id, plan_id = find_targets(port, token)
    path = f"/api/subscriptions/{subscription_id}/quotes/"

    def request(rng: random.Random) -> tuple[str, str, str]:
        return "POST", path, json.dumps({"plan": plan_id, "interval": "month", "quantity": rng.randint(3, 20)})

    return Target(request=request, expected_status=201,
                  headers={"Authorization": f"Token {token}", "Content-Type": "application/json",
                           "Accept": "application/json"})


if __name__ == "__main__":
    sys.exit(run_benchmark(parse_args(__doc__.split("\n\n")[0]), label="quote API", target_for=quote_target))
