"""The proration engine: shared/PRORATION.md, exactly.

Pure domain code: imports nothing from Django, touches no database and no clock.
Every prorated amount in Crossgrade comes from `prorate()`; quotes, the calculator
(`manage.py prorate`) and tests all call it. Amounts are computed as exact integer
ratios and rounded once, half away from zero, by `money.round_ratio`.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal, Inexact, InvalidOperation, localcontext
from fractions import Fraction
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billing.money import format_amount, format_unit_amount, is_currency, minor_unit, round_exact, round_ratio

Interval = Literal["month", "quarter", "year"]
Granularity = Literal["day", "second"]
Mode = Literal["prorated", "full", "none"]

INTERVAL_MONTHS: dict[str, int] = {"month": 1, "quarter": 3, "year": 12}
INTERVAL_ADJECTIVE: dict[str, str] = {"month": "monthly", "quarter": "quarterly", "year": "yearly"}
MODES = ("prorated", "full", "none")
TIERS_MODES = ("none", "graduated", "volume")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_HUNDRED = 100
# Bounds that keep every figure far inside Decimal's default 28-digit precision.
MAX_AMOUNT = Decimal(10) ** 15
MAX_QUANTITY = 10**9
# Band sums are exact: every operand has at most 30 digits, so 120 digits never round (the Inexact trap proves it).
_EXACT = Context(prec=120, traps=[Inexact, InvalidOperation])


class ProrationInputError(ValueError):
    """Bad input; `field` names the offending field (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Tier:
    """One band of a tiered per-seat price: seats up to `up_to` inclusive (None: the open-ended last band)."""

    up_to: int | None
    unit_amount: Decimal
    flat_amount: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Item:
    """One subscription item: a price at a quantity, less an optional discount.

    A tiered item (`tiers_mode` "graduated" or "volume") is priced by its `tiers`, ascending, the last one
    open-ended; its `unit_amount` is not used.
    """

    unit_amount: Decimal
    quantity: int = 1
    interval: str = "month"
    discount_percent: Decimal = Decimal(0)
    name: str = ""
    tiers_mode: str = "none"
    tiers: tuple[Tier, ...] = ()


@dataclass(frozen=True, slots=True)
class Band:
    """The seats of an item billed in one tier band: seats `first`…`last` at `unit_amount`, plus the band's
    flat fee. `tier_first`…`tier_last` is the band as the price defines it (`tier_last` None: open-ended)."""

    first: int
    last: int
    quantity: int
    unit_amount: Decimal
    flat_amount: Decimal
    amount: Decimal  # quantity × unit_amount + flat_amount, exact
    tier_first: int
    tier_last: int | None


@dataclass(frozen=True, slots=True)
class Tax:
    rate: Decimal
    inclusive: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    currency: str
    period_start: datetime
    period_end: datetime
    change_at: datetime
    current: Item
    target: Item
    timezone: str = "UTC"
    granularity: str = "day"
    tax: Tax | None = None
    customer_balance: Decimal = Decimal(0)
    credit: str = "prorated"
    charge: str = "prorated"


@dataclass(frozen=True, slots=True)
class Line:
    kind: Literal["credit", "charge"]
    description: str
    amount: Decimal
    # Structured facts behind the description, so other surfaces can re-render it.
    item_name: str = ""
    quantity: int = 0
    start: datetime | None = None
    end: datetime | None = None
    remaining: int | Decimal = 0
    total_units: int | Decimal = 0
    unit: str = "day"
    mode: str = "prorated"
    # A tiered item's bands and their exact sum, the amount the line's factor and discount apply to.
    tiers_mode: str = "none"
    bands: tuple[Band, ...] = ()
    tiered_amount: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Totals:
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    balance_applied: Decimal
    amount_due: Decimal
    balance_after: Decimal


@dataclass(frozen=True, slots=True)
class Result:
    currency: str
    remaining: int | Decimal
    total_units: int | Decimal
    unit: str
    factor: Fraction
    lines: tuple[Line, ...]
    totals: Totals
    period_start: datetime
    period_end: datetime
    interval_changed: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    # Flat access to the totals, for readability at call sites.
    @property
    def subtotal(self) -> Decimal:
        return self.totals.subtotal

    @property
    def tax(self) -> Decimal:
        return self.totals.tax

    @property
    def total(self) -> Decimal:
        return self.totals.total

    @property
    def amount_due(self) -> Decimal:
        return self.totals.amount_due

    @property
    def balance_applied(self) -> Decimal:
        return self.totals.balance_applied

    @property
    def balance_after(self) -> Decimal:
        return self.totals.balance_after


# --- calendar -------------------------------------------------------------------------


def add_interval(moment: datetime, interval: str, tz: ZoneInfo) -> datetime:
    """`moment` plus one billing interval on the calendar of `tz`, keeping the time of day.

    A day of month that the target month lacks becomes its last day (31 Jan + 1 month = 28 Feb).
    """
    local = moment.astimezone(tz)
    months = INTERVAL_MONTHS[interval]
    year, month0 = divmod(local.month - 1 + months, 12)
    year += local.year
    day = min(local.day, calendar.monthrange(year, month0 + 1)[1])
    return local.replace(year=year, month=month0 + 1, day=day, fold=0)


def _date_label(d: date, with_year: bool) -> str:
    label = f"{d.day} {_MONTHS[d.month - 1]}"
    return f"{label} {d.year}" if with_year else label


def _moment_label(moment: datetime, granularity: str, with_year: bool) -> str:
    label = _date_label(moment.date(), with_year)
    return f"{label} {moment:%H:%M}" if granularity == "second" else label


def range_label(start: datetime, end: datetime, granularity: str = "day") -> str:
    """"16 Jan – 1 Feb 2026"; both years when they differ. Times of day in second granularity."""
    same_year = start.year == end.year
    return (
        f"{_moment_label(start, granularity, not same_year)} – "
        f"{_moment_label(end, granularity, True)}"
    )


# --- arithmetic ---------------------------------------------------------------------


def _ratio(value: Decimal) -> tuple[int, int]:
    return value.as_integer_ratio()


def item_bands(item: Item) -> tuple[Band, ...]:
    """The bands a tiered item's quantity is billed in; () for an untiered item or no seats.

    Graduated: each band's seats at that band's price, plus the flat fee of every band reached.
    Volume: all seats at the price of the band the quantity falls in, plus that band's flat fee.
    """
    quantity = item.quantity
    if item.tiers_mode == "none" or quantity <= 0:
        return ()
    bands: list[Band] = []
    tier_first = 1
    with localcontext(_EXACT):
        for tier in item.tiers:
            reaches = tier.up_to is None or quantity <= tier.up_to
            if item.tiers_mode == "graduated":
                last = quantity if reaches else tier.up_to
                count = last - tier_first + 1
                bands.append(Band(tier_first, last, count, tier.unit_amount, tier.flat_amount,
                                  tier.unit_amount * count + tier.flat_amount, tier_first, tier.up_to))
            elif reaches:  # volume
                bands.append(Band(1, quantity, quantity, tier.unit_amount, tier.flat_amount,
                                  tier.unit_amount * quantity + tier.flat_amount, tier_first, tier.up_to))
            if reaches:
                break
            tier_first = tier.up_to + 1
    return tuple(bands)


def tiered_amount(item: Item) -> Decimal:
    """What one whole period of the item costs before discount, exact (unrounded): `unit_amount × quantity`,
    or for a tiered item the sum of its bands."""
    with localcontext(_EXACT):
        if item.tiers_mode == "none":
            return item.unit_amount * item.quantity
        return sum((band.amount for band in item_bands(item)), Decimal(0))


def item_amount(item: Item, currency: str, numerator: int = 1, denominator: int = 1) -> Decimal:
    """R(unit_amount × quantity × numerator/denominator × (1 − discount_percent/100)); a tiered item's
    exact band sum stands in for unit_amount × quantity."""
    c, d = _ratio(_HUNDRED - item.discount_percent)
    if item.tiers_mode != "none":
        a, b = _ratio(tiered_amount(item))
        return round_ratio(a * numerator * c, b * denominator * _HUNDRED * d, minor_unit(currency))
    a, b = _ratio(item.unit_amount)
    return round_ratio(
        a * item.quantity * numerator * c, b * denominator * _HUNDRED * d, minor_unit(currency)
    )


def period_amount(item: Item, currency: str) -> Decimal:
    """What one whole billing period of `item` costs, before tax."""
    return item_amount(item, currency)


def tax_amount(subtotal: Decimal, tax: Tax | None, currency: str) -> Decimal:
    """Tax once on the document subtotal (EN 16931 BR-CO-17), carrying the subtotal's sign."""
    digits = minor_unit(currency)
    if tax is None:
        return Decimal(0).scaleb(-digits)
    s_num, s_den = _ratio(subtotal)
    r_num, r_den = _ratio(tax.rate)
    if tax.inclusive:
        # subtotal × rate / (1 + rate) = s_num·r_num / (s_den·(r_den + r_num))
        return round_ratio(s_num * r_num, s_den * (r_den + r_num), digits)
    return round_ratio(s_num * r_num, s_den * r_den, digits)


def totals_for(subtotal: Decimal, tax: Tax | None, balance: Decimal, currency: str) -> Totals:
    """Tax, total and the customer balance applied, per the Totals section of PRORATION.md."""
    tax_value = tax_amount(subtotal, tax, currency)
    total = subtotal if (tax is not None and tax.inclusive) else subtotal + tax_value
    zero = Decimal(0).scaleb(-minor_unit(currency))
    if total >= 0:
        applied = min(balance, total) + zero  # + zero: the minor-unit exponent even for a balance of Decimal(0)
        return Totals(subtotal, tax_value, total, applied, total - applied, balance - applied)
    return Totals(subtotal, tax_value, total, zero, zero, balance - total)


# --- the engine ---------------------------------------------------------------------


def _units(change: Change, tz: ZoneInfo) -> tuple[int, int, str]:
    if change.granularity == "day":
        end_date = change.period_end.astimezone(tz).date()
        remaining = (end_date - change.change_at.astimezone(tz).date()).days
        total = (end_date - change.period_start.astimezone(tz).date()).days
        return remaining, total, "day"
    # In UTC: Python subtracts two datetimes sharing one tzinfo by wall clock, ignoring a DST change between.
    start, end, at = (value.astimezone(UTC) for value in (change.period_start, change.period_end, change.change_at))
    micro = timedelta(microseconds=1)
    remaining_us = (end - at) // micro
    total_us = (end - start) // micro
    return remaining_us, total_us, "second"


def _seconds(microseconds: int) -> int | Decimal:
    """Whole seconds as an int; a fractional count (sub-second input) as an exact Decimal."""
    whole, rest = divmod(microseconds, 1_000_000)
    return whole if not rest else Decimal(microseconds).scaleb(-6)


def _tier_facts(item: Item) -> dict[str, Any]:
    """A line's tier fields: its item's bands and their exact sum (nothing for an untiered item)."""
    if item.tiers_mode == "none":
        return {}
    return {"tiers_mode": item.tiers_mode, "bands": item_bands(item), "tiered_amount": tiered_amount(item)}


def _describe(prefix: str, item: Item, span: str, detail: str) -> str:
    name = item.name or ("the current plan" if prefix == "Unused time on" else "the new plan")
    text = f"{prefix} {name} × {item.quantity}, {span}"
    if detail:
        text += f" ({detail})"
    if item.discount_percent:
        text += f", less {item.discount_percent.normalize():f}% discount"
    return text


def validate(change: Change) -> ZoneInfo:
    """Refuse input the rules cannot price; returns the billing timezone."""
    if not is_currency(change.currency):
        raise ProrationInputError("currency", f"unknown ISO 4217 currency {change.currency!r}")
    try:
        tz = ZoneInfo(change.timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):  # OSError: a directory such as "Europe"
        raise ProrationInputError("timezone", f"unknown IANA timezone {change.timezone!r}") from None
    if change.granularity not in ("day", "second"):
        raise ProrationInputError("granularity", "must be 'day' or 'second'")
    for name in ("period_start", "period_end", "change_at"):
        value = getattr(change, name)
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ProrationInputError(name, "must be a datetime with a UTC offset")
    # Compared as instants (in UTC): datetimes sharing one tzinfo would be compared by wall clock.
    start, end, at = (getattr(change, name).astimezone(UTC) for name in ("period_start", "period_end", "change_at"))
    if end <= start:
        raise ProrationInputError("period_end", "the period is empty or inverted (period_end ≤ period_start)")
    if not start <= at < end:
        raise ProrationInputError("change_at", "must be within the period: period_start ≤ change_at < period_end")
    if change.granularity == "day":
        if change.period_end.astimezone(tz).date() <= change.period_start.astimezone(tz).date():
            raise ProrationInputError("period_end", "the period spans no calendar day in the billing timezone")
    for which in ("current", "target"):
        item: Item = getattr(change, which)
        _validate_item(item, which)
    if change.tax is not None and not (0 <= change.tax.rate <= 1):
        raise ProrationInputError("tax.rate", "must be between 0 and 1")
    if not change.customer_balance.is_finite() or change.customer_balance < 0:
        raise ProrationInputError("customer_balance", "must not be negative")
    if change.customer_balance >= MAX_AMOUNT:
        raise ProrationInputError("customer_balance", f"must be less than {MAX_AMOUNT:,}")
    if round_exact(change.customer_balance, change.currency) != change.customer_balance:
        raise ProrationInputError(
            "customer_balance", f"has more decimal places than {change.currency} allows ({minor_unit(change.currency)})"
        )
    for name in ("credit", "charge"):
        if getattr(change, name) not in MODES:
            raise ProrationInputError(name, "must be 'prorated', 'full' or 'none'")
    return tz


def _validate_item(item: Item, which: str) -> None:
    if not item.unit_amount.is_finite() or item.unit_amount < 0:
        raise ProrationInputError(f"{which}.unit_amount", "must be a non-negative amount")
    if item.unit_amount >= MAX_AMOUNT:
        raise ProrationInputError(f"{which}.unit_amount", f"must be less than {MAX_AMOUNT:,}")
    if isinstance(item.quantity, bool) or not isinstance(item.quantity, int) or item.quantity < 0:
        raise ProrationInputError(f"{which}.quantity", "must be a non-negative whole number")
    if item.quantity > MAX_QUANTITY:
        raise ProrationInputError(f"{which}.quantity", f"must be at most {MAX_QUANTITY:,}")
    if not isinstance(item.interval, str) or item.interval not in INTERVAL_MONTHS:
        raise ProrationInputError(f"{which}.interval", "must be 'month', 'quarter' or 'year'")
    if not item.discount_percent.is_finite() or not (0 <= item.discount_percent <= 100):
        raise ProrationInputError(f"{which}.discount_percent", "must be between 0 and 100")
    if not isinstance(item.tiers_mode, str) or item.tiers_mode not in TIERS_MODES:
        raise ProrationInputError(f"{which}.tiers_mode", "must be 'none', 'graduated' or 'volume'")
    if item.tiers_mode == "none":
        if item.tiers:
            raise ProrationInputError(f"{which}.tiers", "only a tiered item has tiers: set tiers_mode to "
                                                        "'graduated' or 'volume'")
        return
    _validate_tiers(item.tiers, f"{which}.tiers")


def _validate_tiers(tiers: tuple[Tier, ...], path: str) -> None:
    """Bands ascending by `up_to`, without overlaps, the last (and only the last) open-ended: every seat
    count falls in exactly one band."""
    if not tiers:
        raise ProrationInputError(path, "a tiered item needs at least one band, the last open-ended (up_to null)")
    previous = 0
    for index, tier in enumerate(tiers):
        here = f"{path}[{index}]"
        last = index == len(tiers) - 1
        if tier.up_to is None:
            if not last:
                raise ProrationInputError(f"{here}.up_to", "only the last band is open-ended (up_to null)")
        else:
            if isinstance(tier.up_to, bool) or not isinstance(tier.up_to, int):
                raise ProrationInputError(f"{here}.up_to", "must be a whole number of seats, or null for the last band")
            if tier.up_to <= previous:
                raise ProrationInputError(
                    f"{here}.up_to", f"must be greater than the previous band's up_to ({previous}): bands are "
                                     "ascending and do not overlap" if previous else "must be at least 1")
            if tier.up_to > MAX_QUANTITY:
                raise ProrationInputError(f"{here}.up_to", f"must be at most {MAX_QUANTITY:,}")
            if last:
                raise ProrationInputError(f"{here}.up_to", "the last band must be open-ended (up_to null), so "
                                                           "every seat count has a price")
            previous = tier.up_to
        for name in ("unit_amount", "flat_amount"):
            value = getattr(tier, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ProrationInputError(f"{here}.{name}", "must be a non-negative amount")
            if value >= MAX_AMOUNT:
                raise ProrationInputError(f"{here}.{name}", f"must be less than {MAX_AMOUNT:,}")


def prorate(change: Change) -> Result:
    """Price one mid-period change: credit for unused time, charge for the target, totals."""
    tz = validate(change)
    currency = change.currency
    remaining, total_units, unit = _units(change, tz)
    factor = Fraction(remaining, total_units)
    if unit == "second":
        remaining, total_units = _seconds(remaining), _seconds(total_units)
    change_local = change.change_at.astimezone(tz)
    period_start = change.period_start.astimezone(tz)
    period_end = change.period_end.astimezone(tz)
    span = range_label(change_local, period_end, change.granularity)
    detail = f"{remaining} of {total_units} {unit}s"
    lines: list[Line] = []

    if change.credit != "none":
        num, den = (factor.numerator, factor.denominator) if change.credit == "prorated" else (1, 1)
        credit = item_amount(change.current, currency, num, den)
        if credit:
            lines.append(Line(
                "credit",
                _describe("Unused time on", change.current, span, detail if change.credit == "prorated" else "full period"),
                -credit,
                change.current.name, change.current.quantity, change_local, period_end,
                remaining, total_units, unit, change.credit, **_tier_facts(change.current),
            ))

    interval_changed = change.current.interval != change.target.interval
    if interval_changed:
        # PRORATION.md: the anchor resets and the full new period is charged ("full" and "prorated" alike);
        # a rule's charge mode "none" charges nothing now.
        new_start = change_local
        new_end = add_interval(change_local, change.target.interval, tz)
        if change.charge != "none":
            lines.append(Line(
                "charge",
                _describe("New billing period for", change.target,
                          range_label(new_start, new_end, change.granularity),
                          INTERVAL_ADJECTIVE[change.target.interval]),
                item_amount(change.target, currency),
                change.target.name, change.target.quantity, new_start, new_end, 1, 1, unit, "full",
                **_tier_facts(change.target),
            ))
    else:
        new_start, new_end = period_start, period_end
        if change.charge != "none":
            num, den = (factor.numerator, factor.denominator) if change.charge == "prorated" else (1, 1)
            lines.append(Line(
                "charge",
                _describe("Remaining time on", change.target, span,
                          detail if change.charge == "prorated" else "full period"),
                item_amount(change.target, currency, num, den),
                change.target.name, change.target.quantity, change_local, period_end,
                remaining, total_units, unit, change.charge, **_tier_facts(change.target),
            ))

    subtotal = sum((line.amount for line in lines), Decimal(0).scaleb(-minor_unit(currency)))
    totals = totals_for(subtotal, change.tax, change.customer_balance, currency)
    return Result(
        currency=currency, remaining=remaining, total_units=total_units, unit=unit,
        factor=factor, lines=tuple(lines), totals=totals,
        period_start=new_start, period_end=new_end, interval_changed=interval_changed,
    )


# --- JSON in and out (the calculator's contract) -------------------------------------


def _field(data: dict[str, Any], key: str, path: str, default: Any = ...) -> Any:
    if key in data and data[key] is not None:
        return data[key]
    if default is ...:
        raise ProrationInputError(path, "is required")
    return default


def _decimal(value: Any, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ProrationInputError(path, "must be a decimal number (a string such as \"30.00\")")
    try:
        result = Decimal(value)
    except (InvalidOperation, ValueError):
        raise ProrationInputError(path, f"{value!r} is not a decimal number") from None
    if not result.is_finite():
        raise ProrationInputError(path, "must be a finite number")
    sign, digits, exponent = result.as_tuple()
    if len(digits) > 30 or not -18 <= exponent <= 30:
        raise ProrationInputError(path, "has too many digits (at most 30, and at most 18 after the point)")
    return result


def _datetime(value: Any, path: str, tz: ZoneInfo | None) -> datetime:
    if not isinstance(value, str):
        raise ProrationInputError(path, "must be an ISO 8601 date-time string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ProrationInputError(path, f"{value!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        if tz is None:
            raise ProrationInputError(path, "must include a UTC offset")
        moment = moment.replace(tzinfo=tz)  # a local time in the billing timezone
    return moment


def _item(data: Any, path: str) -> Item:
    if not isinstance(data, dict):
        raise ProrationInputError(path, "must be an object")
    quantity = _field(data, "quantity", f"{path}.quantity", 1)
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        if isinstance(quantity, Decimal) and quantity == quantity.to_integral_value():
            quantity = int(quantity)
        else:
            raise ProrationInputError(f"{path}.quantity", "must be a whole number")
    interval = _field(data, "interval", f"{path}.interval", "month")
    name = _field(data, "name", f"{path}.name", "")
    if not isinstance(name, str):
        raise ProrationInputError(f"{path}.name", "must be a string")
    tiers_mode = _field(data, "tiers_mode", f"{path}.tiers_mode", "none")
    if not isinstance(tiers_mode, str) or tiers_mode not in TIERS_MODES:
        raise ProrationInputError(f"{path}.tiers_mode", "must be 'none', 'graduated' or 'volume'")
    tiers: tuple[Tier, ...] = ()
    if tiers_mode == "none":
        if data.get("tiers") is not None:
            raise ProrationInputError(f"{path}.tiers", "only a tiered item has tiers: set tiers_mode to "
                                                       "'graduated' or 'volume'")
        unit_amount = _decimal(_field(data, "unit_amount", f"{path}.unit_amount"), f"{path}.unit_amount")
    else:
        if data.get("unit_amount") is not None:
            raise ProrationInputError(f"{path}.unit_amount", "a tiered item is priced by its tiers; leave "
                                                             "unit_amount out")
        raw_tiers = _field(data, "tiers", f"{path}.tiers")
        if not isinstance(raw_tiers, list):
            raise ProrationInputError(f"{path}.tiers", "must be a list of bands such as "
                                                       '{"up_to": 10, "unit_amount": "10.00"}')
        tiers = tuple(_tier(raw, f"{path}.tiers[{index}]") for index, raw in enumerate(raw_tiers))
        unit_amount = Decimal(0)
    item = Item(
        unit_amount=unit_amount,
        quantity=quantity,
        interval=interval,
        discount_percent=_decimal(_field(data, "discount_percent", f"{path}.discount_percent", "0"),
                                  f"{path}.discount_percent"),
        name=name,
        tiers_mode=tiers_mode,
        tiers=tiers,
    )
    _validate_item(item, path)
    return item


def _tier(data: Any, path: str) -> Tier:
    if not isinstance(data, dict):
        raise ProrationInputError(path, 'must be an object such as {"up_to": 10, "unit_amount": "10.00"}')
    if "up_to" not in data:
        raise ProrationInputError(f"{path}.up_to", "is required (null for the open-ended last band)")
    up_to = data["up_to"]
    if isinstance(up_to, Decimal) and up_to.is_finite() and up_to == up_to.to_integral_value():
        up_to = int(up_to)
    if up_to is not None and (isinstance(up_to, bool) or not isinstance(up_to, int)):
        raise ProrationInputError(f"{path}.up_to", "must be a whole number of seats, or null for the last band")
    return Tier(
        up_to=up_to,
        unit_amount=_decimal(_field(data, "unit_amount", f"{path}.unit_amount"), f"{path}.unit_amount"),
        flat_amount=_decimal(_field(data, "flat_amount", f"{path}.flat_amount", "0"), f"{path}.flat_amount"),
    )


def change_from_json(data: Any) -> Change:
    """Parse the calculator's input object (PRORATION.md, "The calculator")."""
    if not isinstance(data, dict):
        raise ProrationInputError("input", "must be a JSON object")
    currency = _field(data, "currency", "currency")
    if not isinstance(currency, str) or not is_currency(currency):
        raise ProrationInputError("currency", f"unknown ISO 4217 currency {currency!r}")
    tz_name = _field(data, "timezone", "timezone", "UTC")
    try:
        tz = ZoneInfo(tz_name) if isinstance(tz_name, str) else None
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "Europe"
        tz = None
    if tz is None:
        raise ProrationInputError("timezone", f"unknown IANA timezone {tz_name!r}")
    tax = None
    tax_data = data.get("tax")
    if tax_data is not None:
        if not isinstance(tax_data, dict):
            raise ProrationInputError("tax", "must be an object with rate and inclusive")
        inclusive = tax_data.get("inclusive", False)
        if not isinstance(inclusive, bool):
            raise ProrationInputError("tax.inclusive", "must be true or false")
        tax = Tax(rate=_decimal(_field(tax_data, "rate", "tax.rate"), "tax.rate"), inclusive=inclusive)
    change = Change(
        currency=currency,
        timezone=tz_name,
        granularity=_field(data, "granularity", "granularity", "day"),
        period_start=_datetime(_field(data, "period_start", "period_start"), "period_start", tz),
        period_end=_datetime(_field(data, "period_end", "period_end"), "period_end", tz),
        change_at=_datetime(_field(data, "change_at", "change_at"), "change_at", tz),
        current=_item(_field(data, "current", "current"), "current"),
        target=_item(_field(data, "target", "target"), "target"),
        tax=tax,
        customer_balance=_decimal(_field(data, "customer_balance", "customer_balance", "0"), "customer_balance"),
        credit=_field(data, "credit", "credit", "prorated"),
        charge=_field(data, "charge", "charge", "prorated"),
    )
    validate(change)
    return change


def result_to_json(result: Result) -> dict[str, Any]:
    """The calculator's output object; amounts as strings with the currency's minor-unit digits."""
    cur = result.currency

    def amount(value: Decimal) -> str:
        return format_amount(value, cur)

    return {
        "currency": cur,
        "remaining": _json_number(result.remaining),
        "total_units": _json_number(result.total_units),
        "unit": result.unit,
        "lines": [
            {"kind": line.kind, "description": line.description, "amount": amount(line.amount),
             **tier_facts_json(line, cur)}
            for line in result.lines
        ],
        "subtotal": amount(result.subtotal),
        "tax": amount(result.tax),
        "total": amount(result.total),
        "balance_applied": amount(result.balance_applied),
        "amount_due": amount(result.amount_due),
        "balance_after": amount(result.balance_after),
        "period_start": result.period_start.isoformat(),
        "period_end": result.period_end.isoformat(),
    }


def tier_facts_json(line: Line, currency: str) -> dict[str, Any]:
    """A tiered line's `tiers_mode`, `tiered_amount` and `bands` as JSON; nothing for an untiered line.

    Band amounts are exact, never rounded: the currency's minor-unit digits, more only when a unit price has
    them. Quotes store exactly this, so the calculator, the portal, the API and invoices explain alike.
    """
    if line.tiers_mode == "none":
        return {}
    with localcontext(_EXACT):  # quantizing to at least the digits a band has: never rounds, even past 28 digits
        return _tier_facts_json(line, currency)


def _tier_facts_json(line: Line, currency: str) -> dict[str, Any]:
    return {
        "tiers_mode": line.tiers_mode,
        "tiered_amount": format_unit_amount(line.tiered_amount, currency),
        "bands": [
            {"from": band.first, "to": band.last, "quantity": band.quantity,
             "unit_amount": format_unit_amount(band.unit_amount, currency),
             "flat_amount": format_unit_amount(band.flat_amount, currency),
             "amount": format_unit_amount(band.amount, currency),
             "tier_from": band.tier_first, "tier_to": band.tier_last}
            for band in line.bands
        ],
    }


def _json_number(value: int | Decimal) -> int | str:
    return value if isinstance(value, int) else str(value)
