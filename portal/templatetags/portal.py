"""Formatting for the portal: money in the customer's currency and the reader's locale (Babel)."""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency, format_decimal
from django import template
from django.utils.translation import get_language, to_locale

register = template.Library()


def _locale() -> str:
    return to_locale(get_language() or "en")


@register.filter
def money(amount: Decimal | str | None, currency: str) -> str:
    """€1,234.56 / 1.234,56 € / ¥1,000 / KWD 1.500: the currency's own digits, the reader's conventions."""
    if amount is None or amount == "":
        return ""
    return format_currency(Decimal(amount), currency, locale=_locale())


@register.filter
def number(value) -> str:
    return format_decimal(value, locale=_locale())


@register.filter
def get_item(mapping: dict, key):
    return mapping.get(key)


@register.simple_tag
def feature_value(values: dict, plan_id: int, feature_id: int):
    return values.get((plan_id, feature_id))


@register.filter
def percent(rate) -> str:
    """A tax rate (0.19) as the reader writes percentages (19 %, 19 %)."""
    from babel.numbers import format_percent

    return format_percent(Decimal(rate), locale=_locale(), decimal_quantization=False)
