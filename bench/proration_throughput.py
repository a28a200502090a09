"""How many plan changes the proration engine prices per second, in one process.

Pure Python, no Django: builds a few thousand varied, valid `Change` inputs up front (EUR, JPY,
USD and a few others; day and second granularity; Berlin, New York, Tokyo, Kolkata, Sydney,
London, UTC; same-interval changes and month→quarter/year changes; exclusive and inclusive tax
or none; zero and positive customer balances; prorated/full/none credit and charge), then prices
the whole set repeatedly and reports the best and the median of N timed runs.

    .venv/bin/python bench/proration_throughput.py [--changes 4000] [--runs 5] [--seconds 1.0]
        [--seed 1] [--profile]

`--profile` adds a cProfile run over the same inputs and prints the hottest functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import statistics
import sys
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from billing.proration import Change, Item, Tax, add_interval, prorate  # noqa: E402

TARGET_PER_SECOND = 20_000

# currency: (unit amounts for a month of one seat, as a plan catalog would price them)
CURRENCY_PRICES = {
    "EUR": ["9.00", "12.00", "29.00", "30.00", "49.99", "50.00", "79.00", "90.00", "119.00"],
    "USD": ["10", "13", "33", "55", "99", "12.50", "32.99"],
    "JPY": ["1900", "4800", "8000", "14400", "29800"],
    "GBP": ["8", "10.50", "26", "43"],
    "KWD": ["3.250", "9.900"],  # three minor digits
}
CURRENCY_WEIGHTS = {"EUR": 5, "USD": 3, "JPY": 2, "GBP": 1, "KWD": 1}
TIMEZONES = ["Europe/Berlin", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Asia/Kolkata",
             "Australia/Sydney", "Europe/London", "UTC"]
INTERVAL_FACTOR = {"month": Decimal(1), "quarter": Decimal("2.85"), "year": Decimal(10)}
TAX_RATES = ["0.19", "0.20", "0.21", "0.10", "0.07", "0.0825"]
PLAN_NAMES = ["Analytics Starter", "Analytics Pro", "Analytics Business", "Collaboration Team",
              "Collaboration Business"]


def _unit_amount(rng: random.Random, currency: str, interval: str) -> Decimal:
    base = Decimal(rng.choice(CURRENCY_PRICES[currency]))
    return base * INTERVAL_FACTOR[interval]


def _item(rng: random.Random, currency: str, interval: str) -> Item:
    discount = rng.choice([Decimal(0)] * 6 + [Decimal(10), Decimal("12.5"), Decimal(20), Decimal(100)])
    return Item(
        unit_amount=_unit_amount(rng, currency, interval),
        quantity=rng.choice([1, 1, 2, 3, 5, 5, 10, 17, 25, 100, 250]),
        interval=interval,
        discount_percent=discount,
        name=rng.choice(PLAN_NAMES),
    )


def make_change(rng: random.Random) -> Change:
    """One realistic mid-period change; always valid input for the engine."""
    currency = rng.choices(list(CURRENCY_WEIGHTS), weights=list(CURRENCY_WEIGHTS.values()))[0]
    tz_name = rng.choice(TIMEZONES)
    tz = ZoneInfo(tz_name)
    granularity = rng.choice(["day", "day", "second"])
    current_interval = rng.choice(["month", "month", "month", "quarter", "year"])
    roll = rng.random()
    if current_interval == "month" and roll < 0.25:
        target_interval = "year"  # month → year: the new period starts at the change
    elif current_interval == "month" and roll < 0.35:
        target_interval = "quarter"
    else:
        target_interval = current_interval  # same interval: credit and charge the rest of the period
    # Periods start at local midnight on the 1st (or an anniversary day), in any month of 2025–2027,
    # so month lengths, leap years and DST transitions all occur.
    year = rng.choice([2025, 2026, 2027, 2028])
    month = rng.randint(1, 12)
    day = rng.choice([1, 1, 1, 15, 28, 29, 30, 31])
    day = min(day, 28) if month == 2 else min(day, 30 if month in (4, 6, 9, 11) else 31)
    start = datetime(year, month, day, rng.choice([0, 0, 9]), tzinfo=tz)
    end = add_interval(start, current_interval, tz)
    span = (end - start).total_seconds()
    offset = rng.uniform(0, span * 0.999)
    change_at = start + timedelta(seconds=offset)
    if granularity == "day" and change_at.astimezone(tz).date() >= end.astimezone(tz).date():
        change_at = start
    tax = None
    tax_roll = rng.random()
    if tax_roll < 0.45:
        tax = Tax(rate=Decimal(rng.choice(TAX_RATES)), inclusive=False)
    elif tax_roll < 0.8:
        tax = Tax(rate=Decimal(rng.choice(TAX_RATES)), inclusive=True)
    balance = Decimal(0)
    if rng.random() < 0.3:
        digits = 3 if currency == "KWD" else (0 if currency == "JPY" else 2)
        balance = Decimal(rng.randint(1, 50_000)).scaleb(-digits)
    credit = rng.choices(["prorated", "full", "none"], weights=[8, 1, 1])[0]
    charge = rng.choices(["prorated", "full", "none"], weights=[8, 1, 1])[0]
    return Change(
        currency=currency,
        period_start=start.astimezone(ZoneInfo("UTC")),  # as the database hands them over
        period_end=end.astimezone(ZoneInfo("UTC")),
        change_at=change_at.astimezone(ZoneInfo("UTC")),
        current=_item(rng, currency, current_interval),
        target=_item(rng, currency, target_interval),
        timezone=tz_name,
        granularity=granularity,
        tax=tax,
        customer_balance=balance,
        credit=credit,
        charge=charge,
    )


def make_changes(count: int, seed: int) -> list[Change]:
    rng = random.Random(seed)
    changes = [make_change(rng) for _ in range(count)]
    for change in changes:
        prorate(change)  # every input must be valid: fail here, not in the timed loop
    return changes


def price_all(changes: list[Change]) -> None:
    for change in changes:
        prorate(change)


def timed_run(changes: list[Change], min_seconds: float) -> float:
    """Price the set repeatedly for at least `min_seconds`; changes priced per second."""
    priced = 0
    started = time.perf_counter()
    while True:
        price_all(changes)
        priced += len(changes)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return priced / elapsed


def describe(changes: list[Change]) -> str:
    def share(predicate) -> str:
        return f"{100 * sum(1 for c in changes if predicate(c)) / len(changes):.0f}%"

    return (
        f"{len(changes):,} changes: EUR {share(lambda c: c.currency == 'EUR')}, "
        f"USD {share(lambda c: c.currency == 'USD')}, JPY {share(lambda c: c.currency == 'JPY')}; "
        f"second granularity {share(lambda c: c.granularity == 'second')}; "
        f"Europe/Berlin {share(lambda c: c.timezone == 'Europe/Berlin')}; "
        f"interval change {share(lambda c: c.current.interval != c.target.interval)}; "
        f"tax inclusive {share(lambda c: c.tax is not None and c.tax.inclusive)}, "
        f"exclusive {share(lambda c: c.tax is not None and not c.tax.inclusive)}; "
        f"balance {share(lambda c: c.customer_balance > 0)}"
    )


def profile(changes: list[Change], top: int = 25) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    price_all(changes)
    price_all(changes)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=4000, help="distinct inputs generated up front")
    parser.add_argument("--runs", type=int, default=5, help="timed runs (report best and median)")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum duration of each run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the hot spots")
    args = parser.parse_args()

    changes = make_changes(args.changes, args.seed)
    print(describe(changes))
    timed_run(changes, min(0.3, args.seconds))  # warm-up: zoneinfo caches, interned strings
    rates = []
    for i in range(args.runs):
        rate = timed_run(changes, args.seconds)
        rates.append(rate)
        print(f"  run {i + 1}: {rate:,.0f} changes/s")
    median = statistics.median(rates)
    print(f"best of {args.runs}: {max(rates):,.0f} changes/s")
    verdict = "OK" if median >= TARGET_PER_SECOND else "BELOW TARGET"
    print(f"proration throughput: {median:,.0f} changes/s (median of {args.runs} runs; "
          f"target ≥ {TARGET_PER_SECOND:,}) {verdict}")
    if args.profile:
        print(profile(changes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
