"""Which VAT applies to a sale: pure domain rules, no Django (EU VAT, Council Directive 2006/112/EC).

B2C, and B2B inside the seller's own country, pay the customer country's rate. B2B with a VAT ID that
is valid (format and check digits, python-stdnum) for another EU member state than the seller's is
reverse-charged: 0 %, and the invoice carries the legal mention (Article 196). Outside the EU: the rate
configured for that country, if any.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from stdnum.eu import vat as eu_vat

EU_MEMBER_STATES = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
)
REVERSE_CHARGE_MENTION = (
    "Reverse charge: VAT to be accounted for by the recipient "
    "(Article 196, Council Directive 2006/112/EC)."
)
OUTSIDE_EU_MENTION = "Place of supply outside the EU: no EU VAT charged."


@dataclass(frozen=True, slots=True)
class TaxDecision:
    rate: Decimal | None  # None: no tax applies
    reverse_charge: bool = False
    mention: str = ""


def vat_id_country(vat_id: str) -> str | None:
    """The member state a VAT ID belongs to, if it is well formed with valid check digits; else None."""
    if not vat_id:
        return None
    try:
        compact = eu_vat.validate(vat_id)
    except Exception:  # stdnum raises its own ValidationError subclasses for each kind of wrong
        return None
    prefix = compact[:2].upper()
    return "GR" if prefix == "EL" else ("GB" if prefix == "XI" else prefix)


def vat_id_valid_for(vat_id: str, country: str) -> bool:
    return vat_id_country(vat_id) == country


def tax_decision(*, seller_country: str, buyer_country: str, buyer_vat_id: str,
                 country_rate: Decimal | None) -> TaxDecision:
    """The VAT treatment of one sale, from the seller's and the buyer's countries and the buyer's VAT ID."""
    if (seller_country in EU_MEMBER_STATES and buyer_country in EU_MEMBER_STATES
            and buyer_country != seller_country and vat_id_valid_for(buyer_vat_id, buyer_country)):
        return TaxDecision(rate=Decimal(0), reverse_charge=True, mention=REVERSE_CHARGE_MENTION)
    if buyer_country not in EU_MEMBER_STATES and seller_country in EU_MEMBER_STATES:
        return TaxDecision(rate=country_rate, mention="" if country_rate else OUTSIDE_EU_MENTION)
    return TaxDecision(rate=country_rate)


def document_mention(*, rate: Decimal | None, reverse_charge: bool, seller_country: str, buyer_country: str) -> str:
    """The legal mention a document carries for the tax treatment that was charged."""
    if reverse_charge:
        return REVERSE_CHARGE_MENTION
    if not rate and seller_country in EU_MEMBER_STATES and buyer_country not in EU_MEMBER_STATES:
        return OUTSIDE_EU_MENTION
    return ""


def missing_rate(*, seller_country: str, buyer_country: str, decision: TaxDecision) -> bool:
    """An EU sale that should carry VAT but has no rate on file: it must not go out untaxed."""
    return (seller_country in EU_MEMBER_STATES and buyer_country in EU_MEMBER_STATES
            and decision.rate is None and not decision.reverse_charge)
