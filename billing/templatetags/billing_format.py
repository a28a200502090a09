"""Money, numbers and rates as the reader writes them (Babel): used by invoices and the portal alike."""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency, format_decimal, format_percent
from django import template
from django.utils.translation import get_language, to_locale

register = template.Library()


def current_locale() -> str:
    return to_locale(get_language() or "en")


@register.filter
def money(amount: Decimal | str | None, currency: str) -> str:
    """€1,234.56 / 1.234,56 € / ¥1,000 / KWD 1.500: the currency's own digits, the reader's conventions."""
    if amount is None or amount == "":
        return ""
    return format_currency(Decimal(amount), currency, locale=current_locale())


@register.filter
def number(value) -> str:
    return format_decimal(value, locale=current_locale())


@register.filter
def percent(rate) -> str:
    """A rate (0.19) as the reader writes percentages (19%, 19 %)."""
    return format_percent(Decimal(rate), locale=current_locale(), decimal_quantization=False)


@register.filter
def negative(amount):
    """The amount with its sign flipped, so money() writes the locale's own minus sign."""
    return -Decimal(amount)


@register.filter
def line_text(line: dict) -> str:
    """A quote line's description in the reader's language.

    English shows the engine's own words (PRORATION.md's format) verbatim; other languages rebuild the
    same facts, from the line's structured data, through gettext.
    """
    from babel.dates import format_date
    from django.utils.dateparse import parse_datetime
    from django.utils.translation import gettext, ngettext

    language = get_language() or "en"
    if language.startswith("en") or not line.get("start"):
        return line["description"]
    locale = current_locale()
    start, end = parse_datetime(line["start"]), parse_datetime(line["end"])
    same_year = start.year == end.year
    first = format_date(start, "d. MMM" if same_year else "d. MMM y", locale=locale)
    span = f"{first} – {format_date(end, 'd. MMM y', locale=locale)}"
    values = {"plan": line.get("item_name") or "", "quantity": line["quantity"], "span": span}
    remaining, total = line["remaining"], line["total_units"]
    if line["kind"] == "credit":
        text = gettext("Unused time on %(plan)s × %(quantity)s, %(span)s") % values
    elif line.get("mode") == "full" and remaining == total == "1":
        months = (end.year - start.year) * 12 + end.month - start.month
        adjective = {1: gettext("monthly"), 3: gettext("quarterly"), 12: gettext("yearly")}.get(months, "")
        return gettext("New billing period for %(plan)s × %(quantity)s, %(span)s (%(adjective)s)") % {
            **values, "adjective": adjective}
    else:
        text = gettext("Remaining time on %(plan)s × %(quantity)s, %(span)s") % values
    if line.get("mode") == "full":
        return f"{text} ({gettext('full period')})"
    count = int(Decimal(total))
    unit = ngettext("%(remaining)s of %(total)s day", "%(remaining)s of %(total)s days", count) if \
        line["unit"] == "day" else ngettext("%(remaining)s of %(total)s second", "%(remaining)s of %(total)s seconds",
                                            count)
    return f"{text} ({unit % {'remaining': remaining, 'total': total}})"


def unit_money(amount: Decimal | str, currency: str) -> str:
    """A unit price or an exact band amount: the currency's digits, more only when the amount has them (€9.995).
    Never rounded, so the reader can multiply it out."""
    return format_currency(Decimal(amount), currency, locale=current_locale(), decimal_quantization=False)


def _with_flat_fee(text: str, flat_amount: Decimal | str, currency: str) -> str:
    from django.utils.translation import gettext

    if not Decimal(flat_amount):
        return text
    return gettext("%(band)s + %(flat)s flat fee") % {"band": text, "flat": unit_money(flat_amount, currency)}


@register.filter
def bands_text(line: dict, currency: str) -> str:
    """How a tiered line's period amount is made up, band by band, in the reader's language:
    "Seats 1–10: 10 × €10.00; 11–25: 15 × €8.00 (€220.00 for a full period)". Empty for other lines."""
    from django.utils.translation import gettext

    bands = line.get("bands") or []
    if not bands:
        return ""
    parts = []
    for band in bands:
        seats = number(band["from"]) if band["from"] == band["to"] else f"{number(band['from'])}–{number(band['to'])}"
        text = gettext("%(seats)s: %(quantity)s × %(unit)s") % {
            "seats": seats, "quantity": number(band["quantity"]), "unit": unit_money(band["unit_amount"], currency)}
        parts.append(_with_flat_fee(text, band["flat_amount"], currency))
    band = bands[0]
    if line.get("tiers_mode") != "volume":
        text = gettext("Seats %(bands)s") % {"bands": "; ".join(parts)}
    elif band["tier_to"] is None:
        text = gettext("Seats %(bands)s, the volume price from %(first)s seats") % {
            "bands": parts[0], "first": number(band["tier_from"])}
    else:
        text = gettext("Seats %(bands)s, the volume price for %(first)s–%(last)s seats") % {
            "bands": parts[0], "first": number(band["tier_from"]), "last": number(band["tier_to"])}
    return gettext("%(bands)s (%(total)s for a full period)") % {
        "bands": text, "total": unit_money(line["tiered_amount"], currency)}


@register.filter
def price_tiers(price) -> str:
    """A tiered price's bands as the plans page states them; empty for an untiered price."""
    from django.utils.translation import gettext

    if not price.is_tiered:
        return ""
    parts, first = [], 1
    for tier in price.tiers.all():
        if tier.up_to is None:
            seats = gettext("%(first)s seats or more") % {"first": number(first)}
        else:
            seats = gettext("%(first)s–%(last)s seats") % {"first": number(first), "last": number(tier.up_to)}
            first = tier.up_to + 1
        text = gettext("%(seats)s at %(unit)s each") % {"seats": seats,
                                                         "unit": unit_money(tier.unit_amount, price.currency)}
        parts.append(_with_flat_fee(text, tier.flat_amount, price.currency))
    if price.tiers_mode == "volume":
        return gettext("Volume price, all seats at the price of the band reached: %(bands)s") % {
            "bands": "; ".join(parts)}
    return gettext("Graduated price, each band at its own price: %(bands)s") % {"bands": "; ".join(parts)}


@register.filter
def failure_text(change) -> str:
    """Why a payment failed, in the reader's language (the gateway's own words only as a last resort)."""
    from django.utils.translation import gettext

    known = {
        "card_declined": gettext("Your card was declined."),
        "insufficient_funds": gettext("Your card has insufficient funds."),
        "expired_card": gettext("Your card has expired."),
        "authentication_failed": gettext("The payment was not authenticated."),
        "payment_not_taken": gettext("The payment provider never received the payment; nothing was charged."),
        "canceled": gettext("The payment was canceled."),
        "authentication_required": gettext("Your bank asks you to confirm this payment."),
        "no_payment_method": gettext("No payment method is saved for this account."),
        # a change held for approval (billing.services.approvals)
        "approval_rejected": gettext("It was not approved."),
        "approval_expired": gettext("It was not decided in time."),
        "subscription_changed": gettext("The subscription changed while the change waited for approval."),
        "period_ended": gettext("The billing period the change was priced for has ended."),
        "balance_changed": gettext("The account balance changed while the change waited for approval."),
        "tax_changed": gettext("The tax that applies changed while the change waited for approval."),
        "invoice_unpaid": gettext("A renewal invoice of this subscription is unpaid."),
        "subscription_not_active": gettext("The subscription is no longer active."),
        "amount_changed": gettext("Its price changed after it was approved."),
    }
    if isinstance(change, dict):  # an email's context
        code, message = change.get("failure_code", ""), change.get("failure_message", "")
    else:
        code, message = change.failure_code, change.failure_message
    return known.get(code) or message or gettext("The payment was declined.")


@register.filter
def date_in(value: str, timezone_name: str) -> str:
    """An ISO 8601 instant (as stored in an email's context) as a date on the reader's calendar."""
    from zoneinfo import ZoneInfo

    from babel.dates import format_date
    from django.utils.dateparse import parse_datetime

    moment = parse_datetime(value)
    if moment is None:
        return ""
    return format_date(moment.astimezone(ZoneInfo(timezone_name or "UTC")).date(), "long", locale=current_locale())
