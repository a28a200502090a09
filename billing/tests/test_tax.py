"""EU VAT decisions: B2C at the customer's rate, reverse charge for valid foreign EU VAT IDs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.tax import REVERSE_CHARGE_MENTION, tax_decision, vat_id_country, vat_id_valid_for

FR_RATE = Decimal("0.20")


@pytest.mark.parametrize(
    ("vat_id", "country"),
    [("DE136695976", "DE"), ("FR40303265045", "FR"), ("NL004495445B01", "NL"), ("EL094259216", "GR"),
     ("ATU13585627", "AT"), ("fr 40 303 265 045", "FR")],
)
def test_valid_vat_ids_and_their_country(vat_id, country):
    assert vat_id_country(vat_id) == country and vat_id_valid_for(vat_id, country)


@pytest.mark.parametrize("vat_id", ["", "DE123", "DE136695977", "FR00303265045", "XX123456789", "not a vat id"])
def test_invalid_vat_ids(vat_id):
    assert vat_id_country(vat_id) is None


def test_b2c_in_another_eu_country_pays_that_countrys_rate():
    decision = tax_decision(seller_country="DE", buyer_country="FR", buyer_vat_id="", country_rate=FR_RATE)
    assert (decision.rate, decision.reverse_charge, decision.mention) == (FR_RATE, False, "")


def test_b2b_with_a_valid_foreign_eu_vat_id_is_reverse_charged():
    decision = tax_decision(seller_country="DE", buyer_country="FR", buyer_vat_id="FR40303265045",
                            country_rate=FR_RATE)
    assert decision.rate == 0 and decision.reverse_charge and decision.mention == REVERSE_CHARGE_MENTION
    assert "Article 196" in decision.mention


def test_b2b_in_the_sellers_own_country_pays_domestic_vat():
    decision = tax_decision(seller_country="DE", buyer_country="DE", buyer_vat_id="DE136695976",
                            country_rate=Decimal("0.19"))
    assert decision.rate == Decimal("0.19") and not decision.reverse_charge


@pytest.mark.parametrize("vat_id", ["FR00303265045", "DE136695976", "FR4030326504"])
def test_an_invalid_or_mismatched_vat_id_pays_vat(vat_id):
    decision = tax_decision(seller_country="DE", buyer_country="FR", buyer_vat_id=vat_id, country_rate=FR_RATE)
    assert decision.rate == FR_RATE and not decision.reverse_charge


def test_outside_the_eu_uses_the_configured_rate_or_none():
    assert tax_decision(seller_country="DE", buyer_country="US", buyer_vat_id="", country_rate=None).rate is None
    assert tax_decision(seller_country="DE", buyer_country="JP", buyer_vat_id="", country_rate=Decimal("0.10")).rate \
        == Decimal("0.10")
