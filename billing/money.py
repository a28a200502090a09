"""Money: a Decimal amount with its ISO 4217 currency, and the one rounding rule.

Pure domain code: imports nothing from Django. Rounding happens only where
shared/PRORATION.md and the invoicing rules say, half away from zero, to the
currency's minor unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

# ISO 4217 active codes whose minor unit is not 2 digits.
_MINOR_UNITS_EXCEPTIONS: dict[str, int] = {
    # zero digits
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0,
    # three digits
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # four digits
    "CLF": 4, "UYW": 4,
}

# ISO 4217 active currency codes with a two-digit minor unit.
_TWO_DIGIT_CODES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN
    BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS
    KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN
    MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD
    SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS
    UAH USD USN UYU UZS VES VED WST XCD XCG YER ZAR ZMW ZWG
    """.split()
)

CURRENCIES: frozenset[str] = _TWO_DIGIT_CODES | frozenset(_MINOR_UNITS_EXCEPTIONS)


class UnknownCurrency(ValueError):
    pass


class CurrencyMismatch(ValueError):
    pass


def minor_unit(currency: str) -> int:
    """Digits after the decimal point in `currency` (ISO 4217)."""
    if currency in _MINOR_UNITS_EXCEPTIONS:
        return _MINOR_UNITS_EXCEPTIONS[currency]
    if currency in _TWO_DIGIT_CODES:
        return 2
    raise UnknownCurrency(f"unknown currency {currency!r}")


def is_currency(code: str) -> bool:
    return code in CURRENCIES


def _quantum(digits: int) -> Decimal:
    return Decimal(1).scaleb(-digits)


def round_ratio(numerator: int, denominator: int, digits: int) -> Decimal:
    """R(numerator / denominator): half away from zero to `digits` places, exactly.

    Integer arithmetic only, so the result never depends on a Decimal context's precision.
    """
    if denominator == 0:
        raise ZeroDivisionError("round_ratio with a zero denominator")
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    scaled = abs(numerator) * 10**digits
    quotient, remainder = divmod(scaled, denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    sign = -1 if numerator < 0 else 1
    return Decimal(sign * quotient).scaleb(-digits) if quotient else Decimal(0).scaleb(-digits)


def round_exact(value: Decimal | Fraction | int, currency: str) -> Decimal:
    """R(value) for the currency: half away from zero to its minor unit."""
    if isinstance(value, Decimal):
        return value.quantize(_quantum(minor_unit(currency)), rounding=ROUND_HALF_UP)
    frac = Fraction(value)
    return round_ratio(frac.numerator, frac.denominator, minor_unit(currency))


def format_amount(amount: Decimal, currency: str) -> str:
    """The amount as a string with exactly the currency's minor-unit digits ("61.42", "1500")."""
    return str(amount.quantize(_quantum(minor_unit(currency)), rounding=ROUND_HALF_UP))


def format_unit_amount(amount: Decimal, currency: str) -> str:
    """A unit price: the currency's minor-unit digits, and more only when the price has them ("9.995").

    Unit prices are never rounded for display: a customer multiplies them by seats to re-derive a charge.
    """
    places = max(minor_unit(currency), -amount.normalize().as_tuple().exponent)
    return str(amount.quantize(_quantum(places)))


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal):
            raise TypeError("Money.amount must be a Decimal")
        minor_unit(self.currency)  # raises UnknownCurrency

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0).scaleb(-minor_unit(currency)), currency)

    @classmethod
    def of(cls, amount: str | int | Decimal, currency: str) -> Money:
        return cls(Decimal(amount), currency)

    def _check(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._check(other)
        return self.amount <= other.amount

    def rounded(self) -> Money:
        return Money(round_exact(self.amount, self.currency), self.currency)

    def to_minor_units(self) -> int:
        """Integer minor units, for the payment gateway boundary only."""
        digits = minor_unit(self.currency)
        scaled = self.amount.scaleb(digits)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{self} has more digits than {self.currency} allows")
        return int(scaled)

    @classmethod
    def from_minor_units(cls, units: int, currency: str) -> Money:
        return cls(Decimal(units).scaleb(-minor_unit(currency)), currency)

    def __str__(self) -> str:
        return f"{format_amount(self.amount, self.currency)} {self.currency}"
