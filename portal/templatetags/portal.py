"""Formatting for the portal: money in the customer's currency and the reader's locale (Babel)."""

from __future__ import annotations

from django import template

from billing.templatetags.billing_format import (
    bands_text,
    failure_text,
    line_text,
    money,
    negative,
    number,
    percent,
    price_tiers,
)

register = template.Library()
for _filter in (money, number, percent, negative, line_text, failure_text, bands_text, price_tiers):
    register.filter(_filter.__name__, _filter)


@register.filter
def get_item(mapping: dict, key):
    return mapping.get(key)


@register.simple_tag
def feature_value(values: dict, plan_id: int, feature_id: int):
    return values.get((plan_id, feature_id))




@register.filter
def interval_word(interval: str) -> str:
    """month / quarter / year in the reader's language, for sentences such as "per month"."""
    from django.utils.translation import gettext

    return {"month": gettext("month"), "quarter": gettext("quarter"), "year": gettext("year")}.get(interval, interval)
