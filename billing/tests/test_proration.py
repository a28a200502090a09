"""The proration engine against shared/PRORATION.md: the worked examples, each rule, and properties.

Expected amounts are derived by hand from the rules (the derivation sits next to each number), never
by calling the engine. The property tests compare the engine with a small independent reference
written here with `fractions.Fraction`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from billing.proration import (
    Change,
    Item,
    ProrationInputError,
    Result,
    Tax,
    add_interval,
    period_amount,
    prorate,
)

D = Decimal
BERLIN = ZoneInfo("Europe/Berlin")
VAT_19 = Tax(rate=D("0.19"), inclusive=False)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def example_a(**overrides) -> Change:
    """Worked example A: EUR, day granularity, Europe/Berlin, 1 Jan – 1 Feb 2026, change on 16 Jan at noon."""
    fields = dict(
        currency="EUR",
        timezone="Europe/Berlin",
        granularity="day",
        period_start=at("2026-01-01T00:00:00+01:00"),
        period_end=at("2026-02-01T00:00:00+01:00"),
        change_at=at("2026-01-16T12:00:00+01:00"),
        current=Item(unit_amount=D("30.00"), quantity=5, interval="month"),
        target=Item(unit_amount=D("50.00"), quantity=5, interval="month"),
        tax=VAT_19,
        customer_balance=D("0.00"),
    )
    fields.update(overrides)
    return Change(**fields)


def amounts(result: Result) -> list[tuple[str, Decimal]]:
    return [(line.kind, line.amount) for line in result.lines]


def exact(value: Decimal) -> str:
    """The amount as written, exponent included: Decimal("61.4") == Decimal("61.40") but not here."""
    return str(value)


# --- the worked examples ----------------------------------------------------------------


def test_example_a():
    result = prorate(example_a())

    assert (result.remaining, result.total_units, result.unit) == (16, 31, "day")
    assert result.factor == Fraction(16, 31)
    # −R(150 × 16/31) = −R(77.419…) = −77.42; R(250 × 16/31) = R(129.032…) = 129.03
    assert [(kind, exact(amount)) for kind, amount in amounts(result)] == [("credit", "-77.42"), ("charge", "129.03")]
    assert exact(result.subtotal) == "51.61"
    assert exact(result.tax) == "9.81"  # R(51.61 × 0.19) = R(9.8059)
    assert exact(result.total) == "61.42"
    assert exact(result.balance_applied) == "0.00"
    assert exact(result.amount_due) == "61.42"
    assert exact(result.balance_after) == "0.00"
    # Same interval: the period stays.
    assert result.period_start == at("2026-01-01T00:00:00+01:00")
    assert result.period_end == at("2026-02-01T00:00:00+01:00")
    assert result.interval_changed is False


def test_example_b_interval_change_resets_the_anchor():
    result = prorate(example_a(
        current=Item(unit_amount=D("50.00"), quantity=5, interval="month"),
        target=Item(unit_amount=D("500.00"), quantity=5, interval="year"),
        tax=None,
    ))

    assert (result.remaining, result.total_units) == (16, 31)
    # −R(250 × 16/31) = −129.03; the full yearly charge R(5 × 500.00) = 2500.00
    assert [(kind, exact(amount)) for kind, amount in amounts(result)] == [("credit", "-129.03"), ("charge", "2500.00")]
    assert exact(result.subtotal) == "2370.97"
    assert exact(result.tax) == "0.00"
    assert exact(result.total) == "2370.97"
    assert exact(result.amount_due) == "2370.97"
    assert result.interval_changed is True
    assert result.period_start.isoformat() == "2026-01-16T12:00:00+01:00"
    assert result.period_end.isoformat() == "2027-01-16T12:00:00+01:00"


def test_example_b_with_the_vat_of_example_a():
    result = prorate(example_a(
        current=Item(unit_amount=D("50.00"), quantity=5, interval="month"),
        target=Item(unit_amount=D("500.00"), quantity=5, interval="year"),
    ))
    assert exact(result.subtotal) == "2370.97"
    assert exact(result.tax) == "450.48"  # R(2370.97 × 0.19) = R(450.4843)
    assert exact(result.total) == "2821.45"
    assert result.period_start.isoformat() == "2026-01-16T12:00:00+01:00"
    assert result.period_end.isoformat() == "2027-01-16T12:00:00+01:00"


def example_c(**overrides) -> Change:
    start = at("2026-01-01T00:00:00+00:00")
    fields = dict(
        currency="JPY",
        granularity="second",
        period_start=start,
        period_end=start + timedelta(seconds=10_000),
        change_at=start + timedelta(seconds=7_500),
        current=Item(unit_amount=D("1000"), quantity=3),
        target=Item(unit_amount=D("3000"), quantity=3),
    )
    fields.update(overrides)
    return Change(**fields)


def test_example_c_jpy_second_granularity():
    result = prorate(example_c())

    assert (result.remaining, result.total_units, result.unit) == (2500, 10000, "second")
    assert result.factor == Fraction(1, 4)
    # −R(3000 × 1/4) = −750; R(9000 × 1/4) = 2250
    assert [(kind, exact(amount)) for kind, amount in amounts(result)] == [("credit", "-750"), ("charge", "2250")]
    assert exact(result.subtotal) == "1500"
    assert exact(result.tax) == "0"
    assert exact(result.total) == "1500"
    assert exact(result.amount_due) == "1500"
    assert exact(result.balance_after) == "0"


# --- day granularity: calendar dates in the billing timezone ------------------------------------


def utc_january(tz: str, change_at: str) -> Change:
    return example_a(
        timezone=tz,
        period_start=at("2026-01-01T00:00:00+00:00"),
        period_end=at("2026-02-01T00:00:00+00:00"),
        change_at=at(change_at),
        tax=None,
    )


def test_change_late_in_the_utc_evening_is_already_the_next_day_in_berlin():
    # 15 Jan 23:30 UTC is 16 Jan 00:30 in Berlin: 16 days remain (16 Jan … 31 Jan), not 17.
    berlin = prorate(utc_january("Europe/Berlin", "2026-01-15T23:30:00+00:00"))
    assert (berlin.remaining, berlin.total_units) == (16, 31)
    assert amounts(berlin) == [("credit", D("-77.42")), ("charge", D("129.03"))]

    # The same instant billed in UTC is still 15 Jan: 17 days remain.
    utc = prorate(utc_january("UTC", "2026-01-15T23:30:00+00:00"))
    assert (utc.remaining, utc.total_units) == (17, 31)
    # −R(150 × 17/31) = −R(82.258…) = −82.26; R(250 × 17/31) = R(137.096…) = 137.10
    assert amounts(utc) == [("credit", D("-82.26")), ("charge", D("137.10"))]
    assert exact(utc.lines[1].amount) == "137.10"


def test_change_late_in_the_berlin_evening_is_still_that_day_in_berlin():
    # 15 Jan 23:30 in Berlin (22:30 UTC): the day of the change counts as remaining, 17 of 31.
    result = prorate(utc_january("Europe/Berlin", "2026-01-15T23:30:00+01:00"))
    assert (result.remaining, result.total_units) == (17, 31)


@pytest.mark.parametrize("change_at", ["2026-01-16T00:00:00+01:00", "2026-01-16T12:00:00+01:00", "2026-01-16T23:59:59+01:00"])
def test_every_instant_of_a_day_prices_the_same(change_at):
    result = prorate(example_a(change_at=at(change_at)))
    assert (result.remaining, result.total_units) == (16, 31)
    assert exact(result.total) == "61.42"


def test_change_in_the_evening_of_the_first_day_credits_the_full_period():
    result = prorate(example_a(change_at=at("2026-01-01T18:00:00+01:00")))
    assert result.factor == 1
    assert amounts(result) == [("credit", D("-150.00")), ("charge", D("250.00"))]


def test_change_on_the_last_day_counts_that_day():
    result = prorate(example_a(change_at=at("2026-01-31T23:00:00+01:00"), tax=None))
    assert (result.remaining, result.total_units) == (1, 31)
    # −R(150/31) = −R(4.838…) = −4.84; R(250/31) = R(8.064…) = 8.06
    assert amounts(result) == [("credit", D("-4.84")), ("charge", D("8.06"))]


def berlin_dst(period_start: str, period_end: str, change_at: str, granularity: str) -> Change:
    return example_a(
        granularity=granularity,
        period_start=at(period_start),
        period_end=at(period_end),
        change_at=at(change_at),
        current=Item(unit_amount=D("100.00")),
        target=Item(unit_amount=D("0.00")),
        tax=None,
    )


def test_march_in_berlin_is_31_days_though_not_31_times_24_hours():
    start, end = "2026-03-01T00:00:00+01:00", "2026-04-01T00:00:00+02:00"
    assert at(end) - at(start) == timedelta(days=31, hours=-1)  # summer time starts on 29 Mar

    day = prorate(berlin_dst(start, end, "2026-03-16T12:00:00+01:00", "day"))
    assert (day.remaining, day.total_units) == (16, 31)
    assert amounts(day) == [("credit", D("-51.61")), ("charge", D("0.00"))]  # −R(100 × 16/31)

    # 16 Mar 11:00 UTC → 31 Mar 22:00 UTC = 15 d 11 h; 28 Feb 23:00 UTC → 31 Mar 22:00 UTC = 31 d − 1 h.
    second = prorate(berlin_dst(start, end, "2026-03-16T12:00:00+01:00", "second"))
    assert (second.remaining, second.total_units) == (1_335_600, 2_674_800)
    assert amounts(second) == [("credit", D("-49.93")), ("charge", D("0.00"))]  # −R(100 × 1335600/2674800)


def test_october_in_berlin_is_31_days_though_not_31_times_24_hours():
    start, end = "2026-10-01T00:00:00+02:00", "2026-11-01T00:00:00+01:00"
    assert at(end) - at(start) == timedelta(days=31, hours=1)  # summer time ends on 25 Oct

    day = prorate(berlin_dst(start, end, "2026-10-25T12:00:00+01:00", "day"))
    assert (day.remaining, day.total_units) == (7, 31)  # 25 … 31 Oct
    assert amounts(day)[0] == ("credit", D("-22.58"))  # −R(100 × 7/31)

    # 25 Oct 11:00 UTC → 31 Oct 23:00 UTC = 6 d 12 h; the period is 31 d + 1 h.
    second = prorate(berlin_dst(start, end, "2026-10-25T12:00:00+01:00", "second"))
    assert (second.remaining, second.total_units) == (561_600, 2_682_000)
    assert amounts(second)[0] == ("credit", D("-20.94"))  # −R(100 × 561600/2682000)


@pytest.mark.parametrize("change_at", ["2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00"])
def test_the_day_summer_time_starts_is_one_day(change_at):
    result = prorate(berlin_dst("2026-03-01T00:00:00+01:00", "2026-04-01T00:00:00+02:00", change_at, "day"))
    assert (result.remaining, result.total_units) == (3, 31)  # 29, 30, 31 Mar


def test_seconds_are_elapsed_time_even_when_datetimes_share_the_billing_zone():
    """Regression: aware datetimes sharing one ZoneInfo were subtracted as wall-clock times.

    Python subtracts two datetimes with the same tzinfo object by their wall clocks, ignoring the DST
    change in between; 1 Mar – 1 Apr in Berlin then counted 31 × 24 h instead of 31 × 24 h − 1 h.
    """
    change = Change(
        currency="EUR",
        timezone="Europe/Berlin",
        granularity="second",
        period_start=datetime(2026, 3, 1, tzinfo=BERLIN),
        period_end=datetime(2026, 4, 1, tzinfo=BERLIN),
        change_at=datetime(2026, 3, 16, 12, tzinfo=BERLIN),
        current=Item(unit_amount=D("100.00")),
        target=Item(unit_amount=D("0.00")),
    )
    result = prorate(change)
    assert (result.remaining, result.total_units) == (1_335_600, 2_674_800)
    assert amounts(result)[0] == ("credit", D("-49.93"))


def test_an_instant_is_ordered_by_time_not_by_wall_clock():
    """change_at 02:10 CET (01:10 UTC) is after period_end 02:50 CEST (00:50 UTC) on 25 Oct 2026."""
    change = Change(
        currency="EUR",
        timezone="Europe/Berlin",
        granularity="second",
        period_start=datetime(2026, 10, 1, tzinfo=BERLIN),
        period_end=datetime(2026, 10, 25, 2, 50, tzinfo=BERLIN, fold=0),
        change_at=datetime(2026, 10, 25, 2, 10, tzinfo=BERLIN, fold=1),
        current=Item(unit_amount=D("100.00")),
        target=Item(unit_amount=D("0.00")),
    )
    with pytest.raises(ProrationInputError) as info:
        prorate(change)
    assert info.value.field == "change_at"


# --- second granularity ------------------------------------------------------------------


def test_second_granularity_ignores_the_calendar():
    # Any timezone: the count is of seconds, not of dates.
    utc = prorate(example_c())
    berlin = prorate(example_c(timezone="Europe/Berlin"))
    assert amounts(utc) == amounts(berlin) == [("credit", D("-750")), ("charge", D("2250"))]


def test_second_granularity_within_one_calendar_day():
    # A period of a few hours is fine in seconds (in days it would be empty).
    start = at("2026-01-01T08:00:00+00:00")
    result = prorate(example_c(period_start=start, period_end=start + timedelta(hours=4),
                               change_at=start + timedelta(hours=3)))
    assert (result.remaining, result.total_units) == (3600, 14400)
    assert amounts(result) == [("credit", D("-750")), ("charge", D("2250"))]


def test_second_granularity_with_sub_second_instants_stays_exact():
    start = at("2026-01-01T00:00:00+00:00")
    result = prorate(example_c(period_start=start, period_end=start + timedelta(seconds=10),
                               change_at=start + timedelta(seconds=2.5)))
    assert result.remaining == D("7.5")
    assert result.total_units == 10
    assert result.factor == Fraction(3, 4)
    # −R(3000 × 3/4) = −2250; R(9000 × 3/4) = 6750
    assert amounts(result) == [("credit", D("-2250")), ("charge", D("6750"))]


# --- tax ---------------------------------------------------------------------------------


def test_tax_exclusive():
    result = prorate(example_a())
    assert (result.tax, result.total) == (D("9.81"), D("61.42"))


def test_tax_inclusive_is_part_of_the_subtotal():
    result = prorate(example_a(tax=Tax(rate=D("0.19"), inclusive=True)))
    assert exact(result.subtotal) == "51.61"
    assert exact(result.tax) == "8.24"  # R(51.61 × 0.19 / 1.19) = R(8.2403…)
    assert exact(result.total) == "51.61"
    assert exact(result.amount_due) == "51.61"


def downgrade(**overrides) -> Change:
    """Example A reversed: 5 × 50.00 → 5 × 30.00."""
    fields = dict(current=Item(unit_amount=D("50.00"), quantity=5), target=Item(unit_amount=D("30.00"), quantity=5))
    fields.update(overrides)
    return example_a(**fields)


def test_tax_carries_a_negative_subtotals_sign():
    result = prorate(downgrade())
    assert amounts(result) == [("credit", D("-129.03")), ("charge", D("77.42"))]
    assert exact(result.subtotal) == "-51.61"
    assert exact(result.tax) == "-9.81"  # R(−51.61 × 0.19) = R(−9.8059)
    assert exact(result.total) == "-61.42"


def test_inclusive_tax_carries_a_negative_subtotals_sign():
    result = prorate(downgrade(tax=Tax(rate=D("0.19"), inclusive=True)))
    assert exact(result.tax) == "-8.24"
    assert exact(result.total) == "-51.61"


def half_cent_subtotal(subtotal_sign: int, tax: Tax) -> Change:
    """A subtotal of ±0.50 (or ±0.01): a change on the first day, from or to a free item."""
    price = Item(unit_amount=D("0.50") if tax.rate != 1 else D("0.01"))
    free = Item(unit_amount=D("0.00"))
    current, target = (free, price) if subtotal_sign > 0 else (price, free)
    return example_a(change_at=at("2026-01-01T00:00:00+01:00"), current=current, target=target, tax=tax)


@pytest.mark.parametrize(
    ("sign", "tax", "subtotal", "expected_tax", "total"),
    [
        (1, Tax(rate=D("0.01")), "0.50", "0.01", "0.51"),  # R(0.005) = 0.01
        (-1, Tax(rate=D("0.01")), "-0.50", "-0.01", "-0.51"),  # R(−0.005) = −0.01
        (1, Tax(rate=D("1"), inclusive=True), "0.01", "0.01", "0.01"),  # R(0.01 × 1/2) = R(0.005)
        (-1, Tax(rate=D("1"), inclusive=True), "-0.01", "-0.01", "-0.01"),
    ],
)
def test_tax_rounds_half_away_from_zero(sign, tax, subtotal, expected_tax, total):
    result = prorate(half_cent_subtotal(sign, tax))
    assert exact(result.subtotal) == subtotal
    assert exact(result.tax) == expected_tax
    assert exact(result.total) == total


def test_zero_rate_and_no_tax():
    zero_rate = prorate(example_a(tax=Tax(rate=D("0"))))
    assert (exact(zero_rate.tax), exact(zero_rate.total)) == ("0.00", "51.61")
    no_tax = prorate(example_a(tax=None))
    assert (exact(no_tax.tax), exact(no_tax.total)) == ("0.00", "51.61")


# --- customer balance -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("balance", "applied", "due", "after"),
    [
        ("0.00", "0.00", "61.42", "0.00"),
        ("10.00", "10.00", "51.42", "0.00"),
        ("61.42", "61.42", "0.00", "0.00"),
        ("100.00", "61.42", "0.00", "38.58"),
        ("100", "61.42", "0.00", "38.58"),  # a whole-number balance still yields cents
    ],
)
def test_balance_applies_up_to_the_total(balance, applied, due, after):
    result = prorate(example_a(customer_balance=D(balance)))
    assert exact(result.total) == "61.42"
    assert (exact(result.balance_applied), exact(result.amount_due), exact(result.balance_after)) == (applied, due, after)


@pytest.mark.parametrize(("balance", "after"), [("0.00", "61.42"), ("10.00", "71.42")])
def test_negative_total_is_not_refunded_but_kept_as_balance(balance, after):
    result = prorate(downgrade(customer_balance=D(balance)))
    assert exact(result.total) == "-61.42"
    assert exact(result.amount_due) == "0.00"
    assert exact(result.balance_applied) == "0.00"
    assert exact(result.balance_after) == after  # B − total


# --- lines --------------------------------------------------------------------------------


def test_credit_line_is_omitted_when_the_current_item_is_free():
    result = prorate(example_a(current=Item(unit_amount=D("0.00"), quantity=5)))
    assert amounts(result) == [("charge", D("129.03"))]
    assert exact(result.subtotal) == "129.03"


def test_credit_line_is_omitted_when_it_rounds_to_zero():
    # 0.01 × 1/31 = 0.0003… → 0.00; the charge line stays, even at zero.
    result = prorate(example_a(
        change_at=at("2026-01-31T09:00:00+01:00"),
        current=Item(unit_amount=D("0.01")),
        target=Item(unit_amount=D("0.01")),
        tax=None,
    ))
    assert amounts(result) == [("charge", D("0.00"))]
    assert exact(result.total) == "0.00"


def test_credit_line_is_omitted_at_a_full_discount():
    result = prorate(example_a(current=Item(unit_amount=D("30.00"), quantity=5, discount_percent=D("100"))))
    assert [kind for kind, _ in amounts(result)] == ["charge"]


def test_zero_quantity_is_free():
    result = prorate(example_a(current=Item(unit_amount=D("30.00"), quantity=0)))
    assert amounts(result) == [("charge", D("129.03"))]


def test_description_names_item_quantity_span_and_days():
    result = prorate(example_a(current=Item(unit_amount=D("30.00"), quantity=5, name="Basic")))
    assert result.lines[0].description == "Unused time on Basic × 5, 16 Jan – 1 Feb 2026 (16 of 31 days)"


def test_discount_percent():
    result = prorate(example_a(
        current=Item(unit_amount=D("30.00"), quantity=5, discount_percent=D("10")),
        target=Item(unit_amount=D("50.00"), quantity=5, discount_percent=D("20")),
        tax=None,
    ))
    # −R(150 × 16/31 × 0.9) = −R(69.677…) = −69.68; R(250 × 16/31 × 0.8) = R(103.225…) = 103.23
    assert amounts(result) == [("credit", D("-69.68")), ("charge", D("103.23"))]
    assert exact(result.subtotal) == "33.55"


def test_fractional_discount_percent():
    result = prorate(example_a(target=Item(unit_amount=D("50.00"), quantity=5, discount_percent=D("12.5"))))
    assert amounts(result)[1] == ("charge", D("112.90"))  # R(250 × 16/31 × 0.875) = R(112.903…)


def test_unit_amount_with_more_digits_than_the_currency_is_rounded_only_at_the_end():
    # 1000 × 0.004 = 4.00 exactly; rounding each seat first would give 1000 × 0.00 = 0.
    result = prorate(example_a(
        change_at=at("2026-01-01T00:00:00+01:00"),
        current=Item(unit_amount=D("0.00")),
        target=Item(unit_amount=D("0.004"), quantity=1000),
        tax=None,
    ))
    assert amounts(result) == [("charge", D("4.00"))]


# --- currencies -------------------------------------------------------------------------


def test_kwd_has_three_digits():
    result = prorate(example_a(
        currency="KWD",
        current=Item(unit_amount=D("10.000")),
        target=Item(unit_amount=D("25.000")),
        tax=Tax(rate=D("0.05")),
    ))
    # −R(10 × 16/31) = −R(5.1612…) = −5.161; R(25 × 16/31) = R(12.9032…) = 12.903
    assert [(kind, exact(amount)) for kind, amount in amounts(result)] == [("credit", "-5.161"), ("charge", "12.903")]
    assert exact(result.subtotal) == "7.742"
    assert exact(result.tax) == "0.387"  # R(7.742 × 0.05) = R(0.3871)
    assert exact(result.total) == "8.129"
    assert exact(result.balance_applied) == "0.000"


def test_jpy_has_no_digits():
    result = prorate(example_a(
        currency="JPY",
        current=Item(unit_amount=D("3000"), quantity=5),
        target=Item(unit_amount=D("5000"), quantity=5),
        tax=Tax(rate=D("0.10")),
    ))
    # −R(15000 × 16/31) = −R(7741.93…) = −7742; R(25000 × 16/31) = R(12903.2…) = 12903
    assert [(kind, exact(amount)) for kind, amount in amounts(result)] == [("credit", "-7742"), ("charge", "12903")]
    assert exact(result.subtotal) == "5161"
    assert exact(result.tax) == "516"  # R(516.1)
    assert exact(result.total) == "5677"


# --- intervals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "interval", "expected"),
    [
        ("2026-01-31T10:00:00+01:00", "month", "2026-02-28T10:00:00+01:00"),
        ("2028-01-31T10:00:00+01:00", "month", "2028-02-29T10:00:00+01:00"),  # leap year
        ("2026-01-30T10:00:00+01:00", "month", "2026-02-28T10:00:00+01:00"),
        ("2026-03-31T10:00:00+02:00", "month", "2026-04-30T10:00:00+02:00"),
        ("2026-12-31T10:00:00+01:00", "month", "2027-01-31T10:00:00+01:00"),  # into the next year
        ("2026-01-16T12:00:00+01:00", "month", "2026-02-16T12:00:00+01:00"),
        ("2025-11-30T10:00:00+01:00", "quarter", "2026-02-28T10:00:00+01:00"),
        ("2027-11-30T10:00:00+01:00", "quarter", "2028-02-29T10:00:00+01:00"),  # leap year
        ("2026-08-31T10:00:00+02:00", "quarter", "2026-11-30T10:00:00+01:00"),
        ("2026-11-15T10:00:00+01:00", "quarter", "2027-02-15T10:00:00+01:00"),
        ("2026-01-16T12:00:00+01:00", "year", "2027-01-16T12:00:00+01:00"),
        ("2028-02-29T10:00:00+01:00", "year", "2029-02-28T10:00:00+01:00"),
        # The time of day is kept across a DST change; the offset follows the calendar.
        ("2026-03-15T12:00:00+01:00", "month", "2026-04-15T12:00:00+02:00"),
        ("2026-10-15T12:00:00+02:00", "month", "2026-11-15T12:00:00+01:00"),
    ],
)
def test_add_interval_on_the_berlin_calendar(moment, interval, expected):
    result = add_interval(at(moment), interval, BERLIN)
    assert result.isoformat() == expected
    assert result == at(expected)


def test_add_interval_uses_the_billing_timezones_calendar():
    # 31 Jan 23:30 UTC is 1 Feb 00:30 in Berlin: one month later is 1 Mar 00:30 there, 28 Feb 23:30 UTC.
    moment = at("2026-01-31T23:30:00+00:00")
    assert add_interval(moment, "month", BERLIN).isoformat() == "2026-03-01T00:30:00+01:00"
    assert add_interval(moment, "month", ZoneInfo("UTC")).isoformat() == "2026-02-28T23:30:00+00:00"


def yearly_to_monthly(year: int) -> Change:
    """A yearly subscription (1 Jun – 1 Jun) changed to monthly on 31 Jan at noon."""
    return example_a(
        period_start=datetime(year - 1, 6, 1, tzinfo=BERLIN),
        period_end=datetime(year, 6, 1, tzinfo=BERLIN).astimezone(UTC),
        change_at=at(f"{year}-01-31T12:00:00+01:00"),
        current=Item(unit_amount=D("600.00"), interval="year"),
        target=Item(unit_amount=D("60.00"), interval="month"),
        tax=None,
    )


def test_interval_change_on_31_january_ends_on_28_february():
    result = prorate(yearly_to_monthly(2026))
    # 31 Jan … 31 May 2026 = 1 + 28 + 31 + 30 + 31 = 121 of 365 days; −R(600 × 121/365) = −R(198.904…)
    assert (result.remaining, result.total_units) == (121, 365)
    assert amounts(result) == [("credit", D("-198.90")), ("charge", D("60.00"))]
    assert result.period_start.isoformat() == "2026-01-31T12:00:00+01:00"
    assert result.period_end.isoformat() == "2026-02-28T12:00:00+01:00"


def test_interval_change_on_31_january_of_a_leap_year_ends_on_29_february():
    result = prorate(yearly_to_monthly(2028))
    # 31 Jan … 31 May 2028 = 1 + 29 + 31 + 30 + 31 = 122 of 366 days; −R(600 × 122/366) = −200.00
    assert (result.remaining, result.total_units) == (122, 366)
    assert amounts(result) == [("credit", D("-200.00")), ("charge", D("60.00"))]
    assert result.period_end.isoformat() == "2028-02-29T12:00:00+01:00"


@pytest.mark.parametrize(
    ("year", "period_end"),
    [(2025, "2026-02-28T09:00:00+01:00"), (2027, "2028-02-29T09:00:00+01:00")],
)
def test_monthly_to_quarterly_on_30_november(year, period_end):
    result = prorate(example_a(
        period_start=datetime(year, 11, 1, tzinfo=BERLIN),
        period_end=datetime(year, 12, 1, tzinfo=BERLIN),
        change_at=datetime(year, 11, 30, 9, tzinfo=BERLIN),
        current=Item(unit_amount=D("30.00"), interval="month"),
        target=Item(unit_amount=D("80.00"), interval="quarter"),
        tax=None,
    ))
    assert (result.remaining, result.total_units) == (1, 30)
    assert amounts(result) == [("credit", D("-1.00")), ("charge", D("80.00"))]  # −R(30 × 1/30)
    assert result.period_start.isoformat() == f"{year}-11-30T09:00:00+01:00"
    assert result.period_end.isoformat() == period_end


def test_interval_change_charges_the_full_target_less_discount():
    result = prorate(example_a(
        target=Item(unit_amount=D("500.00"), quantity=5, interval="year", discount_percent=D("15")),
        tax=None,
    ))
    assert amounts(result) == [("credit", D("-77.42")), ("charge", D("2125.00"))]  # R(2500 × 0.85)


# --- credit and charge modes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("credit", "charge", "lines", "subtotal"),
    [
        ("prorated", "prorated", [("credit", "-77.42"), ("charge", "129.03")], "51.61"),
        ("full", "prorated", [("credit", "-150.00"), ("charge", "129.03")], "-20.97"),
        ("none", "prorated", [("charge", "129.03")], "129.03"),
        ("prorated", "full", [("credit", "-77.42"), ("charge", "250.00")], "172.58"),
        ("prorated", "none", [("credit", "-77.42")], "-77.42"),
        ("full", "full", [("credit", "-150.00"), ("charge", "250.00")], "100.00"),
        ("none", "none", [], "0.00"),
    ],
)
def test_credit_and_charge_modes(credit, charge, lines, subtotal):
    result = prorate(example_a(credit=credit, charge=charge, tax=None))
    assert [(kind, exact(amount)) for kind, amount in amounts(result)] == lines
    assert exact(result.subtotal) == subtotal
    assert exact(result.total) == subtotal
    assert [line.mode for line in result.lines] == [mode for mode in (credit, charge) if mode != "none"]


# --- refused input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("currency", {"currency": "EUX"}),
        ("currency", {"currency": "eur"}),
        ("timezone", {"timezone": "Mars/Olympus_Mons"}),
        ("timezone", {"timezone": "Europe"}),  # a directory of the zone database, not a zone
        ("timezone", {"timezone": ""}),
        ("granularity", {"granularity": "hour"}),
        ("period_start", {"period_start": datetime(2026, 1, 1)}),
        ("change_at", {"change_at": datetime(2026, 1, 16, 12)}),
        ("period_end", {"period_end": at("2026-01-01T00:00:00+01:00")}),  # empty
        ("period_end", {"period_end": at("2025-12-01T00:00:00+01:00")}),  # inverted
        ("period_end", {"period_start": at("2026-01-01T01:00:00+01:00"), "period_end": at("2026-01-01T05:00:00+01:00"),
                        "change_at": at("2026-01-01T02:00:00+01:00")}),  # no calendar day in Berlin
        ("change_at", {"change_at": at("2025-12-31T23:59:59+01:00")}),
        ("change_at", {"change_at": at("2026-02-01T00:00:00+01:00")}),  # period_end is exclusive
        ("change_at", {"change_at": at("2026-03-01T00:00:00+01:00")}),
        ("current.unit_amount", {"current": Item(unit_amount=D("-0.01"))}),
        ("current.unit_amount", {"current": Item(unit_amount=D("NaN"))}),
        ("target.unit_amount", {"target": Item(unit_amount=D("-50.00"))}),
        ("target.unit_amount", {"target": Item(unit_amount=D("Infinity"))}),
        ("current.quantity", {"current": Item(unit_amount=D("1"), quantity=-1)}),
        ("target.quantity", {"target": Item(unit_amount=D("1"), quantity=True)}),
        ("current.interval", {"current": Item(unit_amount=D("1"), interval="week")}),
        ("target.discount_percent", {"target": Item(unit_amount=D("1"), discount_percent=D("100.01"))}),
        ("current.discount_percent", {"current": Item(unit_amount=D("1"), discount_percent=D("-1"))}),
        ("tax.rate", {"tax": Tax(rate=D("-0.01"))}),
        ("tax.rate", {"tax": Tax(rate=D("1.01"))}),
        ("customer_balance", {"customer_balance": D("-0.01")}),
        ("credit", {"credit": "half"}),
        ("charge", {"charge": "double"}),
    ],
)
def test_refused_input_names_the_field(field, overrides):
    with pytest.raises(ProrationInputError) as info:
        prorate(example_a(**overrides))
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)


# --- properties ----------------------------------------------------------------------------

TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe")
INTERVAL_MONTHS = {"month": 1, "quarter": 3, "year": 12}
DIGITS = {"EUR": 2, "JPY": 0, "KWD": 3}  # ISO 4217 minor units, restated here for the reference
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def ref_round(value: Fraction, digits: int) -> Fraction:
    """R: half away from zero to `digits` places."""
    whole, rest = divmod(abs(value) * 10**digits, 1)
    if rest >= Fraction(1, 2):
        whole += 1
    return Fraction(whole if value >= 0 else -whole, 10**digits)


def ref_add_months(local: datetime, months: int) -> datetime:
    """Calendar month arithmetic, clamping the day to the target month's last day."""
    index = local.year * 12 + local.month - 1 + months
    year, month = index // 12, index % 12 + 1
    first_of_next = date(year + month // 12, month % 12 + 1, 1)
    return local.replace(year=year, month=month, day=min(local.day, (first_of_next - timedelta(days=1)).day))


def ref_prorate(change: Change) -> dict:
    """PRORATION.md read literally, on Fractions. Independent of billing.proration on purpose."""
    tz = ZoneInfo(change.timezone)
    digits = DIGITS[change.currency]
    start, end, moment = (value.astimezone(UTC) for value in (change.period_start, change.period_end, change.change_at))
    if change.granularity == "day":
        end_day = end.astimezone(tz).date().toordinal()
        factor = Fraction(end_day - moment.astimezone(tz).date().toordinal(), end_day - start.astimezone(tz).date().toordinal())
    else:
        factor = Fraction((end - moment) // timedelta(microseconds=1), (end - start) // timedelta(microseconds=1))

    def line(item: Item, share: Fraction) -> Fraction:
        discount = 1 - Fraction(item.discount_percent) / 100
        return ref_round(Fraction(item.unit_amount) * item.quantity * share * discount, digits)

    lines = []
    if change.credit != "none":
        credit = line(change.current, factor if change.credit == "prorated" else Fraction(1))
        if credit:
            lines.append(("credit", -credit))
    new_period = (change.period_start, change.period_end)
    if change.current.interval != change.target.interval:
        lines.append(("charge", line(change.target, Fraction(1))))
        local = moment.astimezone(tz)
        new_period = (local, ref_add_months(local, INTERVAL_MONTHS[change.target.interval]))
    elif change.charge != "none":
        lines.append(("charge", line(change.target, factor if change.charge == "prorated" else Fraction(1))))

    subtotal = sum((amount for _, amount in lines), Fraction(0))
    tax = Fraction(0)
    if change.tax is not None:
        rate = Fraction(change.tax.rate)
        tax = ref_round(subtotal * rate / (1 + rate) if change.tax.inclusive else subtotal * rate, digits)
    total = subtotal if (change.tax is not None and change.tax.inclusive) else subtotal + tax
    balance = Fraction(change.customer_balance)
    if total >= 0:
        applied = min(balance, total)
        due, after = total - applied, balance - applied
    else:
        applied, due, after = Fraction(0), Fraction(0), balance - total
    return {
        "factor": factor, "lines": lines, "subtotal": subtotal, "tax": tax, "total": total,
        "balance_applied": applied, "amount_due": due, "balance_after": after, "period": new_period,
    }


# Strategies are built once: building them inside the composite costs more than the engine itself.
UNIT_AMOUNTS = st.builds(lambda n, places: Decimal(n).scaleb(-places), st.integers(0, 10**7), st.integers(0, 4))
DISCOUNTS = st.one_of(st.just(Decimal(0)), st.builds(lambda n: Decimal(n).scaleb(-2), st.integers(0, 10_000)))
ITEMS = {
    interval: st.builds(Item, unit_amount=UNIT_AMOUNTS, quantity=st.integers(0, 500), interval=st.just(interval),
                        discount_percent=DISCOUNTS)
    for interval in INTERVAL_MONTHS
}
MODES = st.sampled_from(["prorated", "prorated", "full", "none"])
CURRENCIES = st.sampled_from(["EUR", "JPY", "KWD"])
TIMEZONE_NAMES = st.sampled_from(TIMEZONES)
GRANULARITIES = st.sampled_from(["day", "second"])
INTERVALS = st.sampled_from(list(INTERVAL_MONTHS))
SHOWN_AS = st.sampled_from(["utc", "zone", "offset"])


TAX_RATES = st.one_of(
    st.sampled_from([Decimal("0"), Decimal("0.07"), Decimal("0.19"), Decimal("0.2"), Decimal("0.255"), Decimal("1")]),
    st.builds(lambda n: Decimal(n).scaleb(-4), st.integers(0, 10_000)),
)
TAXES = st.one_of(st.none(), st.builds(Tax, rate=TAX_RATES, inclusive=st.booleans()))
BALANCES = {
    currency: st.one_of(st.just(Decimal(0)), st.builds(lambda n, d=digits: Decimal(n).scaleb(-d), st.integers(0, 10**9)))
    for currency, digits in DIGITS.items()
}


def shown_as(moment: datetime, tz: ZoneInfo, how: str) -> datetime:
    """The same instant as a caller might pass it: in UTC, in the billing zone, or at a fixed offset."""
    if how == "utc":
        return moment
    local = moment.astimezone(tz)
    return local if how == "zone" else local.astimezone(timezone(local.utcoffset()))


@st.composite
def changes(draw, granularity: str | None = None, same_item: bool = False, modes: bool = True) -> Change:
    currency = draw(CURRENCIES)
    tz_name = draw(TIMEZONE_NAMES)
    tz = ZoneInfo(tz_name)
    granularity = granularity or draw(GRANULARITIES)
    current_interval = draw(INTERVALS)
    start = EPOCH + timedelta(seconds=draw(st.integers(0, 6 * 366 * 86_400)))
    if draw(st.booleans()):  # a real billing period: one interval on the local calendar
        end = ref_add_months(start.astimezone(tz), INTERVAL_MONTHS[current_interval]).astimezone(UTC)
    else:
        end = start + timedelta(seconds=draw(st.integers(1, 400 * 86_400)))
    if granularity == "day":
        assume(end.astimezone(tz).date() > start.astimezone(tz).date())
    length = int((end - start).total_seconds())
    moment = start + timedelta(seconds=0 if draw(st.integers(0, 9)) == 0 else draw(st.integers(0, length - 1)))
    assume(moment < end)
    how = draw(SHOWN_AS)
    current = draw(ITEMS[current_interval])
    if same_item:
        target = current
    else:
        target_interval = current_interval if draw(st.booleans()) else draw(INTERVALS)
        target = draw(ITEMS[target_interval])
    credit = draw(MODES) if modes else "prorated"
    charge = draw(MODES) if modes else "prorated"
    if current.interval != target.interval:
        charge = "prorated"  # PRORATION.md: an interval change always charges the full new period
    return Change(
        currency=currency,
        timezone=tz_name,
        granularity=granularity,
        period_start=shown_as(start, tz, how),
        period_end=shown_as(end, tz, how),
        change_at=shown_as(moment, tz, how),
        current=current,
        target=target,
        tax=draw(TAXES),
        customer_balance=draw(BALANCES[currency]),
        credit=credit,
        charge=charge,
    )


@settings(max_examples=300, deadline=None)
@given(change=changes())
def test_engine_agrees_with_the_reference(change):
    result = prorate(change)
    expected = ref_prorate(change)

    assert result.factor == expected["factor"]
    assert [(line.kind, Fraction(line.amount)) for line in result.lines] == expected["lines"]
    for name in ("subtotal", "tax", "total", "balance_applied", "amount_due", "balance_after"):
        assert Fraction(getattr(result, name)) == expected[name], name
    new_start, new_end = expected["period"]
    assert result.interval_changed == (change.current.interval != change.target.interval)
    if result.interval_changed:
        # [change_at, change_at + 1 target interval) on the billing calendar, keeping the time of day.
        assert str(result.period_start.tzinfo) == str(result.period_end.tzinfo) == change.timezone
        assert result.period_start.replace(tzinfo=None) == new_start.replace(tzinfo=None)
        assert result.period_end.replace(tzinfo=None) == new_end.replace(tzinfo=None)
    else:
        assert result.period_start.astimezone(UTC) == new_start.astimezone(UTC)
        assert result.period_end.astimezone(UTC) == new_end.astimezone(UTC)


@settings(max_examples=200, deadline=None)
@given(change=changes(same_item=True, modes=False))
def test_same_item_to_same_item_nets_to_exactly_zero(change):
    result = prorate(change)
    assert result.subtotal == 0
    assert result.tax == 0
    assert result.total == 0
    assert result.amount_due == 0
    assert result.balance_after == change.customer_balance


@settings(max_examples=200, deadline=None)
@given(change=changes())
def test_every_amount_has_exactly_the_currency_exponent(change):
    result = prorate(change)
    exponent = -DIGITS[change.currency]
    values = [line.amount for line in result.lines] + [
        result.subtotal, result.tax, result.total, result.balance_applied, result.amount_due, result.balance_after,
    ]
    assert [value.as_tuple().exponent for value in values] == [exponent] * len(values)


@settings(max_examples=250, deadline=None)
@given(change=changes())
def test_balance_invariants(change):
    result = prorate(change)
    balance = change.customer_balance
    assert result.amount_due >= 0
    assert result.balance_after >= 0
    assert 0 <= result.balance_applied <= balance
    if result.total >= 0:
        assert result.amount_due + result.balance_applied == result.total
        assert result.balance_after == balance - result.balance_applied
        assert result.balance_applied == min(balance, result.total)
    else:
        assert (result.amount_due, result.balance_applied) == (0, 0)
        assert result.balance_after == balance - result.total


@settings(max_examples=250, deadline=None)
@given(change=changes())
def test_lines_and_totals_are_consistent(change):
    result = prorate(change)
    assert result.subtotal == sum(line.amount for line in result.lines)
    assert all(line.amount < 0 for line in result.lines if line.kind == "credit")
    assert all(line.amount >= 0 for line in result.lines if line.kind == "charge")
    assert [line.kind for line in result.lines] == sorted((line.kind for line in result.lines), reverse=True)
    # Tax carries the subtotal's sign, and an inclusive tax is part of the subtotal.
    assert result.tax * result.subtotal >= 0
    assert abs(result.tax) <= abs(result.subtotal)
    if change.tax is not None and change.tax.inclusive:
        assert result.total == result.subtotal
    else:
        assert result.total == result.subtotal + result.tax
    assert 0 <= result.factor <= 1


@settings(max_examples=250, deadline=None)
@given(change=changes())
def test_credit_never_exceeds_the_full_period(change):
    result = prorate(change)
    full = period_amount(change.current, change.currency)
    for line in result.lines:
        if line.kind == "credit":
            assert 0 < -line.amount <= full
    if change.current.interval == change.target.interval:
        for line in result.lines:
            if line.kind == "charge":
                assert line.amount <= period_amount(change.target, change.currency)


@settings(max_examples=200, deadline=None)
@given(change=changes(granularity="day", modes=False), seconds_into_the_day=st.integers(0, 86_399))
def test_change_on_the_first_day_credits_the_full_period(change, seconds_into_the_day):
    tz = ZoneInfo(change.timezone)
    first_day = change.period_start.astimezone(tz).date()
    moment = change.period_start.astimezone(UTC) + timedelta(seconds=seconds_into_the_day)
    assume(moment.astimezone(tz).date() == first_day and moment < change.period_end)
    result = prorate(replace(change, change_at=moment))

    assert result.factor == 1
    full = period_amount(change.current, change.currency)
    assert [line.amount for line in result.lines if line.kind == "credit"] == ([-full] if full else [])
    if change.current.interval == change.target.interval:
        assert [line.amount for line in result.lines if line.kind == "charge"] == [period_amount(change.target, change.currency)]


@settings(max_examples=200, deadline=None)
@given(change=changes(modes=False), later=st.integers(1, 40 * 86_400))
def test_a_later_change_never_credits_more(change, later):
    after = change.change_at.astimezone(UTC) + timedelta(seconds=later)  # elapsed time, not wall-clock
    assume(after < change.period_end)
    early, late = prorate(change), prorate(replace(change, change_at=after))

    def credit(result: Result) -> Decimal:
        return sum((-line.amount for line in result.lines if line.kind == "credit"), Decimal(0))

    assert late.factor <= early.factor
    assert credit(late) <= credit(early)
