"""The portal's live-price partial under concurrent clients: gunicorn on PostgreSQL, measured end to end.

The partial is what htmx fetches while a customer types a seat count on the plans page
(GET /c/<customer>/subscriptions/<subscription>/plans/<plan>/price/?interval=month&seats=N with
HX-Request: true): eligibility and the exact prorated price through billing's quote_price, nothing
written. Signed in through the real login form (session cookie), 20 clients by default, seats 3..20.

    .venv/bin/python bench/portal_price_latency.py [--clients 20] [--requests 3000] [--rate R]

Same database, gunicorn and reporting as quote_latency.py (bench/loadkit.py).
"""

from __future__ import annotations

import http.client
import random
import re
import sys
from urllib.parse import urlencode

from loadkit import HOST, Target, api_get, log, parse_args, run_benchmark


def session_cookie(port: int, username: str, password: str) -> str:
    """Sign in through /accounts/login/ like a browser: CSRF cookie and token, then the session cookie."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    conn.request("GET", "/accounts/login/")
    response = conn.getresponse()
    page = response.read().decode()
    csrf_cookie = re.search(r"csrftoken=([^;]+)", response.getheader("Set-Cookie") or "").group(1)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    body = urlencode({"csrfmiddlewaretoken": token, "username": username, "password": password})
    conn.request("POST", "/accounts/login/", body=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={csrf_cookie}"})
    response = conn.getresponse()
    response.read()
    conn.close()
    cookies = response.getheader("Set-Cookie") or ""
    match = re.search(r"sessionid=([^;]+)", cookies)
    if response.status != 302 or match is None:
        raise SystemExit(f"signing in as {username} failed: {response.status}")
    return f"sessionid={match.group(1)}"


def price_target(port: int, token: str) -> Target:
    customer = next(c for c in api_get(port, token, "/api/customers/") if c["name"] == "Acme GmbH")
    subscription = next(s for s in api_get(port, token, f"/api/customers/{customer['id']}/subscriptions/")
                        if s["price"]["product"] == "analytics")
    products = api_get(port, token, "/api/plans/?product=analytics")
    plan = next(p for product in products for p in product["plans"] if p["code"] == "business")
    path = f"/c/{customer['id']}/subscriptions/{subscription['id']}/plans/{plan['id']}/price/"
    log(f"partial {path} for {subscription['price']['plan_name']} × {subscription['quantity']} → Business")

    def request(rng: random.Random) -> tuple[str, str, None]:
        return "GET", f"{path}?{urlencode({'interval': 'month', 'seats': rng.randint(3, 20)})}", None

    return Target(request=request, expected_status=200, headers={
        "Cookie": session_cookie(port, "alice", "crossgrade-demo"), "HX-Request": "true",
        "HX-Target": f"price-{plan['id']}", "Accept": "text/html"})


if __name__ == "__main__":
    sys.exit(run_benchmark(parse_args(__doc__.split("\n\n")[0]), label="plan price partial",
                           target_for=price_target))
