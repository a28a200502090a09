"""Money and the one rounding rule R of shared/PRORATION.md: half away from zero, to the ISO 4217 minor unit."""

from __future__ import annotations

import operator
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.money import (
    CurrencyMismatch,
    Money,
    UnknownCurrency,
    format_amount,
    is_currency,
    minor_unit,
    round_exact,
    round_ratio,
)

D = Decimal


# --- currencies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "digits"),
    [("EUR", 2), ("USD", 2), ("GBP", 2), ("CHF", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("BHD", 3)],
)
def test_minor_unit_per_iso_4217(currency, digits):
    assert minor_unit(currency) == digits
    assert is_currency(currency)


@pytest.mark.parametrize("code", ["XYZ", "eur", "EURO", "", "EU"])
def test_unknown_currency_raises(code):
    assert not is_currency(code)
    with pytest.raises(UnknownCurrency):
        minor_unit(code)
    with pytest.raises(UnknownCurrency):
        Money(D("1.00"), code)
    with pytest.raises(UnknownCurrency):
        format_amount(D("1.00"), code)
    with pytest.raises(UnknownCurrency):
        Money.from_minor_units(100, code)


# --- Money arithmetic -----------------------------------------------------------------


def test_adding_two_currencies_raises():
    with pytest.raises(CurrencyMismatch):
        Money(D("1.00"), "EUR") + Money(D("1.00"), "USD")


def test_subtracting_and_comparing_two_currencies_raises():
    eur, usd = Money(D("1.00"), "EUR"), Money(D("1.00"), "USD")
    with pytest.raises(CurrencyMismatch):
        eur - usd
    with pytest.raises(CurrencyMismatch):
        operator.lt(eur, usd)
    with pytest.raises(CurrencyMismatch):
        operator.le(eur, usd)


def test_money_only_combines_with_money():
    with pytest.raises(TypeError):
        Money(D("1.00"), "EUR") + D("1.00")


def test_amount_must_be_a_decimal_never_a_float():
    with pytest.raises(TypeError):
        Money(1.5, "EUR")
    with pytest.raises(TypeError):
        Money(2, "JPY")


def test_same_currency_arithmetic_is_exact():
    total = Money(D("0.10"), "EUR") + Money(D("0.20"), "EUR")
    assert total == Money(D("0.30"), "EUR")
    assert str(total.amount) == "0.30"
    assert Money(D("5.00"), "EUR") - Money(D("7.25"), "EUR") == Money(D("-2.25"), "EUR")
    assert -Money(D("3.50"), "EUR") == Money(D("-3.50"), "EUR")
    assert Money(D("1.00"), "EUR") < Money(D("1.01"), "EUR")
    assert Money(D("1.00"), "EUR") <= Money(D("1.00"), "EUR")
    assert not Money(D("1.01"), "EUR") <= Money(D("1.00"), "EUR")


def test_zero_has_the_minor_unit_exponent():
    assert str(Money.zero("EUR").amount) == "0.00"
    assert str(Money.zero("JPY").amount) == "0"
    assert str(Money.zero("KWD").amount) == "0.000"


def test_of_parses_strings_exactly():
    assert Money.of("61.42", "EUR").amount == D("61.42")
    assert Money.of(1500, "JPY").amount == D(1500)


# --- rounding: half away from zero ----------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.125", "EUR", "0.13"),
        ("-0.125", "EUR", "-0.13"),
        ("0.124", "EUR", "0.12"),
        ("-0.124", "EUR", "-0.12"),
        ("0.135", "EUR", "0.14"),  # half-even would give 0.14 too; 0.125 is the discriminating case
        ("0.005", "EUR", "0.01"),
        ("-0.005", "EUR", "-0.01"),
        ("0.0049999", "EUR", "0.00"),
        ("2.5", "JPY", "3"),
        ("-2.5", "JPY", "-3"),
        ("0.5", "JPY", "1"),
        ("1.4999", "JPY", "1"),
        ("12.3445", "KWD", "12.345"),
        ("-12.3445", "KWD", "-12.345"),
        ("0.0005", "BHD", "0.001"),
    ],
)
def test_rounded_is_half_away_from_zero(amount, currency, expected):
    rounded = Money(D(amount), currency).rounded()
    assert str(rounded.amount) == expected
    assert rounded.currency == currency


@pytest.mark.parametrize(
    ("numerator", "denominator", "digits", "expected"),
    [
        (1, 8, 2, "0.13"),  # 0.125
        (-1, 8, 2, "-0.13"),
        (1, -8, 2, "-0.13"),  # the sign may sit on the denominator
        (-1, -8, 2, "0.13"),
        (5, 2, 0, "3"),
        (-5, 2, 0, "-3"),
        (3871, 50, 2, "77.42"),
        (2400, 31, 2, "77.42"),  # 150 × 16/31 = 77.419…
        (4000, 31, 2, "129.03"),  # 250 × 16/31 = 129.032…
        (1, 3, 3, "0.333"),
        (2, 3, 3, "0.667"),
        (-2, 3, 3, "-0.667"),
        (0, 7, 2, "0.00"),
        (1, 1000, 2, "0.00"),
        (-1, 1000, 2, "0.00"),  # no negative zero
    ],
)
def test_round_ratio(numerator, denominator, digits, expected):
    assert str(round_ratio(numerator, denominator, digits)) == expected


def test_round_ratio_refuses_a_zero_denominator():
    with pytest.raises(ZeroDivisionError):
        round_ratio(1, 0, 2)


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        (Fraction(1, 8), "EUR", "0.13"),
        (Fraction(-1, 8), "EUR", "-0.13"),
        (Fraction(5, 2), "JPY", "3"),
        (Fraction(-5, 2), "JPY", "-3"),
        (Fraction(2, 3), "KWD", "0.667"),
        (7, "EUR", "7.00"),
        (D("0.125"), "EUR", "0.13"),
        (D("-0.125"), "EUR", "-0.13"),
        (D("2.5"), "JPY", "3"),
    ],
)
def test_round_exact(value, currency, expected):
    assert str(round_exact(value, currency)) == expected


def _reference_round(value: Fraction, digits: int) -> Fraction:
    """Half away from zero, written independently: floor(|x|·10^d + 1/2) with the sign put back."""
    scaled = abs(value) * 10**digits + Fraction(1, 2)
    magnitude = scaled.numerator // scaled.denominator
    return Fraction(magnitude if value >= 0 else -magnitude, 10**digits)


@settings(max_examples=300, deadline=None)
@given(
    numerator=st.integers(min_value=-(10**12), max_value=10**12),
    denominator=st.integers(min_value=1, max_value=10**6),
    currency=st.sampled_from(["EUR", "JPY", "KWD"]),
)
def test_round_ratio_matches_a_reference(numerator, denominator, currency):
    digits = minor_unit(currency)
    rounded = round_ratio(numerator, denominator, digits)
    assert Fraction(rounded) == _reference_round(Fraction(numerator, denominator), digits)
    assert rounded.as_tuple().exponent == -digits
    # Symmetric around zero: R(−x) = −R(x).
    assert round_ratio(-numerator, denominator, digits) == -rounded


# --- minor units at the gateway boundary ----------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "units"),
    [
        ("61.42", "EUR", 6142),
        ("-61.42", "EUR", -6142),
        ("0.00", "EUR", 0),
        ("61.4", "EUR", 6140),
        ("1500", "JPY", 1500),
        ("12.345", "KWD", 12345),
        ("0.001", "BHD", 1),
        ("1E+3", "USD", 100000),
    ],
)
def test_to_minor_units(amount, currency, units):
    assert Money(D(amount), currency).to_minor_units() == units


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("61.425", "EUR"), ("0.001", "USD"), ("1500.5", "JPY"), ("12.3456", "KWD")],
)
def test_to_minor_units_refuses_extra_digits(amount, currency):
    with pytest.raises(ValueError):
        Money(D(amount), currency).to_minor_units()


@pytest.mark.parametrize(
    ("units", "currency", "amount"),
    [(6142, "EUR", "61.42"), (-5, "EUR", "-0.05"), (1500, "JPY", "1500"), (12345, "KWD", "12.345"), (0, "KWD", "0.000")],
)
def test_from_minor_units(units, currency, amount):
    money = Money.from_minor_units(units, currency)
    assert str(money.amount) == amount
    assert money.currency == currency


@settings(max_examples=200, deadline=None)
@given(
    units=st.integers(min_value=-(10**15), max_value=10**15),
    currency=st.sampled_from(["EUR", "USD", "JPY", "KRW", "KWD", "BHD"]),
)
def test_minor_units_round_trip(units, currency):
    money = Money.from_minor_units(units, currency)
    assert money.amount.as_tuple().exponent == -minor_unit(currency)
    assert money.to_minor_units() == units
    assert Money.from_minor_units(money.to_minor_units(), currency) == money


# --- formatting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        ("61.42", "EUR", "61.42"),
        ("61.4", "EUR", "61.40"),
        ("61", "EUR", "61.00"),
        ("-77.42", "EUR", "-77.42"),
        ("0", "EUR", "0.00"),
        ("1500", "JPY", "1500"),
        ("1500.00", "JPY", "1500"),
        ("1E+3", "JPY", "1000"),
        ("-750", "JPY", "-750"),
        ("12.345", "KWD", "12.345"),
        ("12.3", "KWD", "12.300"),
        ("0", "KWD", "0.000"),
        ("0.125", "EUR", "0.13"),
        ("-0.125", "EUR", "-0.13"),
        ("2.5", "JPY", "3"),
        ("1234567.89", "USD", "1234567.89"),
    ],
)
def test_format_amount_has_exactly_the_minor_unit_digits(amount, currency, text):
    assert format_amount(D(amount), currency) == text


def test_str_names_the_currency():
    assert str(Money(D("61.42"), "EUR")) == "61.42 EUR"
    assert str(Money(D("1500"), "JPY")) == "1500 JPY"
    assert str(Money(D("12.3"), "KWD")) == "12.300 KWD"


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [("9.9950", "EUR", "9.995"), ("50.0000", "EUR", "50.00"), ("500", "EUR", "500.00"), ("100.5000", "JPY", "100.5"),
     ("1000", "JPY", "1000"), ("1.2", "KWD", "1.200"), ("0.0001", "USD", "0.0001")],
)
def test_unit_prices_show_every_digit_they_have_and_at_least_the_minor_unit(amount, currency, shown):
    from billing.money import format_unit_amount

    assert format_unit_amount(Decimal(amount), currency) == shown
