"""Volume tiers in the proration engine: graduated and volume pricing, at band edges, prorated and discounted.

Every expected figure is derived by hand next to it (docs/plan-changes.md, "Volume tiers"), never by calling
the engine. The property tests compare the engine with a seat-by-seat reference written here.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.proration import (
    Change,
    Item,
    ProrationInputError,
    Tax,
    Tier,
    item_bands,
    period_amount,
    prorate,
    tiered_amount,
)

D = Decimal
# 1–10 seats at 10.00, 11 or more at 8.00
TWO_BANDS = (Tier(10, D("10.00")), Tier(None, D("8.00")))
# 1–10 at 10.00, 11–50 at 8.00, 51 or more at 6.00
THREE_BANDS = (Tier(10, D("10.00")), Tier(50, D("8.00")), Tier(None, D("6.00")))


def seats(quantity: int, mode: str, tiers=TWO_BANDS, **fields) -> Item:
    return Item(unit_amount=D(0), quantity=quantity, tiers_mode=mode, tiers=tiers, name="Team", **fields)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def change(current: Item, target: Item, **overrides) -> Change:
    """Worked example A's period: 1 Jan – 1 Feb 2026 in Berlin (31 days), change on 16 Jan: factor 16/31."""
    fields = dict(
        currency="EUR", timezone="Europe/Berlin", granularity="day",
        period_start=at("2026-01-01T00:00:00+01:00"), period_end=at("2026-02-01T00:00:00+01:00"),
        change_at=at("2026-01-16T12:00:00+01:00"), current=current, target=target,
    )
    fields.update(overrides)
    return Change(**fields)


def lines(result) -> list[tuple[str, str]]:
    return [(line.kind, str(line.amount)) for line in result.lines]


# --- the period amount, both ways ------------------------------------------------------------------------


@pytest.mark.parametrize(("quantity", "graduated", "volume"), [
    (1, "10.00", "10.00"),     # 1 × 10.00 both ways
    (10, "100.00", "100.00"),  # the last seat of band 1: 10 × 10.00 both ways
    (11, "108.00", "88.00"),   # graduated 10 × 10.00 + 1 × 8.00; volume 11 × 8.00
    (25, "220.00", "200.00"),  # graduated 10 × 10.00 + 15 × 8.00; volume 25 × 8.00
])
def test_two_bands_at_their_edges(quantity, graduated, volume):
    assert str(tiered_amount(seats(quantity, "graduated"))) == graduated
    assert str(tiered_amount(seats(quantity, "volume"))) == volume


@pytest.mark.parametrize(("quantity", "graduated", "volume"), [
    (50, "420.00", "400.00"),  # 10 × 10 + 40 × 8 = 420; 50 × 8 = 400
    (51, "426.00", "306.00"),  # 10 × 10 + 40 × 8 + 1 × 6 = 426; 51 × 6 = 306
    (60, "480.00", "360.00"),  # 10 × 10 + 40 × 8 + 10 × 6 = 480; 60 × 6 = 360
])
def test_three_bands_at_their_edges(quantity, graduated, volume):
    assert str(tiered_amount(seats(quantity, "graduated", THREE_BANDS))) == graduated
    assert str(tiered_amount(seats(quantity, "volume", THREE_BANDS))) == volume


def test_graduated_bands_name_the_seats_billed_in_each_band():
    bands = item_bands(seats(25, "graduated", THREE_BANDS))
    assert [(b.first, b.last, b.quantity, str(b.unit_amount), str(b.amount), b.tier_first, b.tier_last)
            for b in bands] == [
        (1, 10, 10, "10.00", "100.00", 1, 10),
        (11, 25, 15, "8.00", "120.00", 11, 50),  # band 11–50 billed for seats 11–25; band 51+ not reached
    ]


def test_volume_bands_bill_every_seat_in_the_band_the_quantity_falls_in():
    bands = item_bands(seats(25, "volume", THREE_BANDS))
    assert [(b.first, b.last, b.quantity, str(b.unit_amount), str(b.amount), b.tier_first, b.tier_last)
            for b in bands] == [(1, 25, 25, "8.00", "200.00", 11, 50)]


def test_flat_fees_count_once_per_band_reached_graduated_or_for_the_one_band_volume():
    tiers = (Tier(10, D("10.00"), D("20.00")), Tier(None, D("8.00"), D("5.00")))
    # graduated 10: 10 × 10 + 20 = 120 (band 2 not reached: no fee); 11: 120 + 1 × 8 + 5 = 133
    assert [str(tiered_amount(seats(q, "graduated", tiers))) for q in (10, 11)] == ["120.00", "133.00"]
    # volume 10: 10 × 10 + 20 = 120; 11: 11 × 8 + 5 = 93 (band 1's fee no longer applies)
    assert [str(tiered_amount(seats(q, "volume", tiers))) for q in (10, 11)] == ["120.00", "93.00"]


def test_no_seats_cost_nothing_and_reach_no_band():
    tiers = (Tier(10, D("10.00"), D("20.00")), Tier(None, D("8.00")))
    for mode in ("graduated", "volume"):
        assert item_bands(seats(0, mode, tiers)) == ()
        assert tiered_amount(seats(0, mode, tiers)) == 0


def test_the_band_sum_is_rounded_once_not_band_by_band():
    tiers = (Tier(1, D("2.345")), Tier(None, D("2.345")))
    item = seats(2, "graduated", tiers)
    assert str(tiered_amount(item)) == "4.690"  # 2.345 + 2.345, exact
    assert str(period_amount(item, "EUR")) == "4.69"  # R(4.690); band by band it would be 2.35 + 2.35 = 4.70


# --- proration lines: R(tiered amount × factor × (1 − discount/100)) ------------------------------------------


def test_a_graduated_target_prorated_and_discounted():
    result = prorate(change(Item(D("30.00"), 5), seats(25, "graduated", discount_percent=D(10)),
                            tax=Tax(D("0.19"))))
    # credit −R(5 × 30.00 × 16/31) = −R(77.419…) = −77.42
    # charge R(220.00 × 16/31 × 0.9) = R(3168/31) = R(102.193…) = 102.19
    assert lines(result) == [("credit", "-77.42"), ("charge", "102.19")]
    assert str(result.subtotal) == "24.77"
    assert str(result.tax) == "4.71"  # R(24.77 × 0.19) = R(4.7063)
    assert str(result.total) == "29.48"


def test_a_volume_target_prorated_and_discounted():
    result = prorate(change(Item(D("30.00"), 5), seats(25, "volume", discount_percent=D(10))))
    # charge R(200.00 × 16/31 × 0.9) = R(2880/31) = R(92.903…) = 92.90
    assert lines(result) == [("credit", "-77.42"), ("charge", "92.90")]


def test_the_factor_applies_to_the_exact_band_sum():
    tiers = (Tier(10, D("9.995")), Tier(None, D("7.995")))
    result = prorate(change(Item(D(0), 1), seats(25, "graduated", tiers)))
    # 10 × 9.995 + 15 × 7.995 = 99.950 + 119.925 = 219.875 (not rounded to 219.88 first)
    # R(219.875 × 16/31) = R(3518/31) = R(113.483…) = 113.48; from 219.88 it would be R(113.486…) = 113.49
    assert lines(result) == [("charge", "113.48")]
    assert str(result.lines[0].tiered_amount) == "219.875"


def test_a_tiered_current_item_is_credited_from_its_bands():
    result = prorate(change(seats(25, "graduated"), Item(D("10.00"), 25)))
    # credit −R(220.00 × 16/31) = −R(113.548…) = −113.55; charge R(250.00 × 16/31) = R(129.032…) = 129.03
    assert lines(result) == [("credit", "-113.55"), ("charge", "129.03")]
    credit = result.lines[0]
    assert credit.tiers_mode == "graduated" and str(credit.tiered_amount) == "220.00"
    assert [(b.first, b.last, str(b.amount)) for b in credit.bands] == [(1, 10, "100.00"), (11, 25, "120.00")]
    assert result.lines[1].bands == () and result.lines[1].tiers_mode == "none"


def test_seats_added_on_a_volume_price_crossing_a_band_edge():
    result = prorate(change(seats(10, "volume"), seats(11, "volume")))
    # credit −R(100.00 × 16/31) = −R(51.612…) = −51.61; charge R(88.00 × 16/31) = R(45.419…) = 45.42
    assert lines(result) == [("credit", "-51.61"), ("charge", "45.42")]


def test_an_interval_change_charges_the_full_tiered_period_less_the_discount():
    yearly = (Tier(10, D("100.00")), Tier(None, D("80.00")))
    result = prorate(change(Item(D("30.00"), 5), seats(25, "volume", yearly, interval="year",
                                                         discount_percent=D(10))))
    # charge R(25 × 80.00 × 0.9) = 1800.00, the full new year
    assert lines(result) == [("credit", "-77.42"), ("charge", "1800.00")]


def test_jpy_has_no_minor_unit():
    tiers = (Tier(10, D(1000)), Tier(None, D(800)))
    jpy = dict(currency="JPY", timezone="Asia/Tokyo", granularity="second",
               period_start=at("2026-03-01T00:00:00+09:00"), period_end=at("2026-03-01T02:30:00+09:00"),
               change_at=at("2026-03-01T01:40:00+09:00"))  # 9000 s long, 3000 s left: factor 1/3
    result = prorate(change(Item(D(1000), 3), seats(13, "graduated", tiers), **jpy))
    # credit −R(3000 / 3) = −1000; charge R((10 × 1000 + 3 × 800) / 3) = R(12400/3) = R(4133.3…) = 4133
    assert lines(result) == [("credit", "-1000"), ("charge", "4133")]
    result = prorate(change(Item(D(1000), 3), seats(13, "volume", tiers), **jpy))
    # charge R(13 × 800 / 3) = R(10400/3) = R(3466.6…) = 3467
    assert lines(result) == [("credit", "-1000"), ("charge", "3467")]
    result = prorate(change(Item(D(1000), 3), seats(13, "graduated", tiers, discount_percent=D(15)), **jpy))
    # charge R(12400 / 3 × 0.85) = R(10540/3) = R(3513.3…) = 3513
    assert lines(result)[1] == ("charge", "3513")


def test_kwd_has_three_decimals():
    tiers = (Tier(5, D("12.500")), Tier(None, D("9.750")))
    kwd = dict(currency="KWD")
    result = prorate(change(Item(D("0"), 1), seats(8, "graduated", tiers), **kwd))
    # 5 × 12.500 + 3 × 9.750 = 91.750; R(91.750 × 16/31) = R(1468/31) = R(47.3548…) = 47.355
    assert lines(result) == [("charge", "47.355")]
    result = prorate(change(Item(D("0"), 1), seats(8, "volume", tiers), **kwd))
    # 8 × 9.750 = 78.000; R(78 × 16/31) = R(1248/31) = R(40.2580…) = 40.258
    assert lines(result) == [("charge", "40.258")]
    result = prorate(change(Item(D("0"), 1), seats(8, "graduated", tiers, discount_percent=D("2.5")), **kwd))
    # R(91.750 × 16/31 × 0.975) = R(1431.3/31) = R(46.1709…) = 46.171
    assert lines(result) == [("charge", "46.171")]


# --- bad tiers are refused, naming the field ---------------------------------------------------------------


@pytest.mark.parametrize(("item", "field"), [
    (seats(5, "graduated", ()), "target.tiers"),
    (seats(5, "stepped"), "target.tiers_mode"),
    (Item(D("10.00"), 5, tiers=TWO_BANDS), "target.tiers"),  # tiers without a tiers mode
    (seats(5, "volume", (Tier(10, D(10)), Tier(10, D(8)), Tier(None, D(6)))), "target.tiers[1].up_to"),  # overlap
    (seats(5, "volume", (Tier(20, D(10)), Tier(10, D(8)), Tier(None, D(6)))), "target.tiers[1].up_to"),  # descending
    (seats(5, "graduated", (Tier(10, D(10)), Tier(20, D(8)))), "target.tiers[1].up_to"),  # no open-ended band
    (seats(5, "graduated", (Tier(None, D(10)), Tier(20, D(8)))), "target.tiers[0].up_to"),  # open band not last
    (seats(5, "graduated", (Tier(0, D(10)), Tier(None, D(8)))), "target.tiers[0].up_to"),
    (seats(5, "graduated", (Tier(10, D(-1)), Tier(None, D(8)))), "target.tiers[0].unit_amount"),
    (seats(5, "graduated", (Tier(10, D(1)), Tier(None, D(8), D(-5)))), "target.tiers[1].flat_amount"),
])
def test_bad_tiers_are_refused_naming_the_field(item, field):
    with pytest.raises(ProrationInputError) as error:
        prorate(change(Item(D("10.00"), 5), item))
    assert error.value.field == field


# --- properties: the engine against a seat-by-seat reference ------------------------------------------------


@st.composite
def tier_sets(draw):
    edges = sorted(draw(st.sets(st.integers(1, 60), min_size=0, max_size=4)))
    cents = st.integers(0, 5_000)
    tiers = [Tier(edge, D(draw(cents)).scaleb(-2), D(draw(st.sampled_from([0, 0, 250]))).scaleb(-2))
             for edge in edges]
    return (*tiers, Tier(None, D(draw(cents)).scaleb(-2), D(draw(st.sampled_from([0, 100]))).scaleb(-2)))


def band_of(tiers, seat: int) -> int:
    return next(i for i, tier in enumerate(tiers) if tier.up_to is None or seat <= tier.up_to)


def reference(tiers, quantity: int, mode: str) -> Fraction:
    if quantity == 0:
        return Fraction(0)
    if mode == "volume":
        tier = tiers[band_of(tiers, quantity)]
        return quantity * Fraction(tier.unit_amount) + Fraction(tier.flat_amount)
    reached = {band_of(tiers, seat) for seat in range(1, quantity + 1)}
    return (sum(Fraction(tiers[band_of(tiers, seat)].unit_amount) for seat in range(1, quantity + 1))
            + sum(Fraction(tiers[i].flat_amount) for i in reached))


@settings(max_examples=200, deadline=None)
@given(tiers=tier_sets(), quantity=st.integers(0, 120), mode=st.sampled_from(["graduated", "volume"]))
def test_tiered_amount_matches_pricing_seat_by_seat(tiers, quantity, mode):
    item = seats(quantity, mode, tiers)
    assert Fraction(tiered_amount(item)) == reference(tiers, quantity, mode)
    bands = item_bands(item)
    assert sum(band.quantity for band in bands) == quantity
    assert sum((band.amount for band in bands), D(0)) == tiered_amount(item)


@settings(max_examples=100, deadline=None)
@given(tiers=tier_sets(), quantity=st.integers(1, 120), mode=st.sampled_from(["graduated", "volume"]),
       discount=st.integers(0, 100))
def test_a_prorated_tiered_charge_is_the_reference_rounded_once(tiers, quantity, mode, discount):
    result = prorate(change(Item(D(0), 1), seats(quantity, mode, tiers, discount_percent=D(discount))))
    exact = reference(tiers, quantity, mode) * Fraction(16, 31) * Fraction(100 - discount, 100)
    expected = D(int(exact * 100 + Fraction(1, 2))).scaleb(-2)  # half up: amounts here are never negative
    assert [line.amount for line in result.lines if line.kind == "charge"] == [expected]


def test_band_json_keeps_exact_amounts_with_the_currencys_digits():
    from billing.proration import tier_facts_json

    stored = (Tier(10, D("9.9950"), D("0.0000")), Tier(None, D("8.0000"), D("5.0000")))  # as the database holds them
    line = prorate(change(Item(D(0), 1), seats(12, "graduated", stored))).lines[0]
    # 10 × 9.995 = 99.950; 2 × 8 + 5 = 21.000; together 120.950, shown with no more digits than they need
    assert tier_facts_json(line, "EUR") == {
        "tiers_mode": "graduated", "tiered_amount": "120.95",
        "bands": [{"from": 1, "to": 10, "quantity": 10, "unit_amount": "9.995", "flat_amount": "0.00",
                   "amount": "99.95", "tier_from": 1, "tier_to": 10},
                  {"from": 11, "to": 12, "quantity": 2, "unit_amount": "8.00", "flat_amount": "5.00",
                   "amount": "21.00", "tier_from": 11, "tier_to": None}],
    }
    assert tier_facts_json(prorate(change(Item(D(0), 1), Item(D(5), 2))).lines[0], "EUR") == {}
