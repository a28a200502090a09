"""Tiered prices through quoting, the API and invoicing: every line of a tiered item carries its bands, and an
issued invoice keeps the band text it was issued with.

The subscription is the factories' Basic × 5 at 30.00 (EUR, Berlin, 1 Jan – 1 Feb 2026), changed on 16 Jan:
factor 16/31, VAT 19 % on top. Team's bands: 1–10 seats at 10.00, 11 or more at 8.00.
"""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from babel.numbers import format_currency
from django.urls import reverse
from django.utils import translation
from pypdf import PdfReader
from rest_framework.test import APIClient

from billing.models import ChangeRule, Customer, Invoice, PriceTier, Subscription
from billing.serializers import QuoteSerializer, quote_json
from billing.services.invoice_pdfs import invoice_pdf_render
from billing.services.plan_changes import quote_accept
from billing.services.quotes import change_direction, quote_create, quote_price
from billing.templatetags.billing_format import bands_text
from billing.tests.factories import MID_JANUARY, PlanFactory, live_subscription_setup, subscription_setup, tiered_price

pytestmark = pytest.mark.django_db

GRADUATED_25_BANDS = [
    {"from": 1, "to": 10, "quantity": 10, "unit_amount": "10.00", "flat_amount": "0.00", "amount": "100.00",
     "tier_from": 1, "tier_to": 10},
    {"from": 11, "to": 25, "quantity": 15, "unit_amount": "8.00", "flat_amount": "0.00", "amount": "120.00",
     "tier_from": 11, "tier_to": None},
]


def with_team(s, mode: str = "graduated", **kwargs):
    """A Team plan above Business (rank 4: changing to it is an upgrade, now and prorated)."""
    plan = PlanFactory(product=s.product, code=f"team-{mode}", name="Team", rank=4 if mode == "graduated" else 5)
    return tiered_price(plan=plan, mode=mode, **kwargs)


def amounts(quote) -> list[str]:
    return [line["amount"] for line in quote.lines]


def test_a_graduated_quote_carries_its_bands():
    s = subscription_setup()
    team = with_team(s)
    q = quote_price(subscription=s.subscription, to_price=team, quantity=25, now=MID_JANUARY)
    # credit −R(5 × 30.00 × 16/31) = −77.42; charge R((10 × 10.00 + 15 × 8.00) × 16/31) = R(113.548…) = 113.55
    assert amounts(q) == ["-77.42", "113.55"]
    credit, charge = q.lines
    assert "bands" not in credit and "tiers_mode" not in credit  # Basic is not tiered
    assert (charge["tiers_mode"], charge["tiered_amount"], charge["bands"]) == ("graduated", "220.00",
                                                                                 GRADUATED_25_BANDS)
    assert charge["description"] == "Remaining time on Analytics Team × 25, 16 Jan – 1 Feb 2026 (16 of 31 days)"
    # subtotal 36.13; tax R(36.13 × 0.19) = R(6.8647) = 6.86; total 42.99
    assert (q.subtotal, q.tax, q.total) == (Decimal("36.13"), Decimal("6.86"), Decimal("42.99"))
    # then each period: 220.00 + R(220.00 × 0.19) = 220.00 + 41.80 = 261.80
    assert (q.next_period_amount, q.next_period_tax) == (Decimal("261.80"), Decimal("41.80"))


def test_a_volume_quote_carries_its_one_band():
    s = subscription_setup()
    team = with_team(s, "volume")
    q = quote_price(subscription=s.subscription, to_price=team, quantity=25, now=MID_JANUARY)
    # charge R(25 × 8.00 × 16/31) = R(103.225…) = 103.23; subtotal 25.81; tax R(4.9039) = 4.90; total 30.71
    assert amounts(q) == ["-77.42", "103.23"]
    assert (q.subtotal, q.tax, q.total) == (Decimal("25.81"), Decimal("4.90"), Decimal("30.71"))
    assert q.lines[1]["bands"] == [{"from": 1, "to": 25, "quantity": 25, "unit_amount": "8.00", "flat_amount": "0.00",
                                    "amount": "200.00", "tier_from": 11, "tier_to": None}]
    assert q.next_period_amount == Decimal("238.00")  # 200.00 + R(200.00 × 0.19)


@pytest.mark.parametrize(("mode", "seats", "charge"), [
    ("graduated", 10, "51.61"),  # R(10 × 10.00 × 16/31) = R(51.612…)
    ("graduated", 11, "55.74"),  # R((100.00 + 8.00) × 16/31) = R(55.741…)
    ("volume", 10, "51.61"),     # R(10 × 10.00 × 16/31)
    ("volume", 11, "45.42"),     # R(11 × 8.00 × 16/31) = R(45.419…): the 11th seat lowers every seat's price
])
def test_quotes_at_the_band_edge(mode, seats, charge):
    s = subscription_setup()
    q = quote_price(subscription=s.subscription, to_price=with_team(s, mode), quantity=seats, now=MID_JANUARY)
    assert amounts(q) == ["-77.42", charge]


def test_a_discounted_subscription_prorates_the_band_sum_less_the_discount():
    s = subscription_setup()
    Subscription.objects.filter(pk=s.subscription.pk).update(discount_percent=Decimal(10))
    q = quote_price(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=with_team(s), quantity=25,
                    now=MID_JANUARY)
    # credit −R(150 × 16/31 × 0.9) = −R(69.677…) = −69.68; charge R(220 × 16/31 × 0.9) = R(102.193…) = 102.19
    assert amounts(q) == ["-69.68", "102.19"]


def test_leaving_a_tiered_price_credits_its_bands():
    s = subscription_setup()
    team = with_team(s)
    Subscription.objects.filter(pk=s.subscription.pk).update(price=team, quantity=25)
    ChangeRule.objects.filter(name="Downgrades").update(timing="now", charge="prorated", credit="prorated")
    q = quote_price(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=s.basic_month,
                    quantity=25, now=MID_JANUARY)
    # credit −R(220.00 × 16/31) = −R(113.548…) = −113.55; charge R(25 × 30.00 × 16/31) = R(387.096…) = 387.10
    assert amounts(q) == ["-113.55", "387.10"]
    assert q.lines[0]["bands"] == GRADUATED_25_BANDS and "bands" not in q.lines[1]


def test_direction_within_a_price_follows_the_band_sum_not_the_seat_count():
    s = subscription_setup()
    volume, graduated = with_team(s, "volume"), with_team(s, "graduated")
    # volume: 10 seats cost 100.00 a month, 11 seats 88.00: less value per day, so a downgrade
    assert change_direction(from_price=volume, from_quantity=10, to_price=volume, to_quantity=11) == "downgrade"
    # graduated: 100.00 → 108.00, an upgrade
    assert change_direction(from_price=graduated, from_quantity=10, to_price=graduated, to_quantity=11) == "upgrade"


# --- the API ----------------------------------------------------------------------------------------------


def test_the_api_shows_the_bands_of_quote_lines_and_of_catalog_prices():
    s = live_subscription_setup()
    team = with_team(s)
    client = APIClient()
    client.force_authenticate(s.owner)
    response = client.post(reverse("api-quote-create", args=[s.subscription.pk]), {"price": team.pk, "quantity": 25},
                           format="json")
    assert response.status_code == 201, response.json()
    credit, charge = response.json()["lines"]
    assert (credit["tiers_mode"], credit["bands"]) == ("none", [])
    assert (charge["tiers_mode"], charge["bands"]) == ("graduated", GRADUATED_25_BANDS)
    products = client.get(reverse("api-plans"), {"currency": "eur", "product": "analytics"}).json()
    prices = {price["id"]: price for plan in products[0]["plans"] for price in plan["prices"]}
    assert (prices[team.pk]["tiers_mode"], prices[team.pk]["unit_amount"]) == ("graduated", "10.00")
    assert prices[team.pk]["tiers"] == [{"up_to": 10, "unit_amount": "10.00", "flat_amount": "0.00"},
                                        {"up_to": None, "unit_amount": "8.00", "flat_amount": "0.00"}]
    assert (prices[s.pro_month.pk]["tiers_mode"], prices[s.pro_month.pk]["tiers"]) == ("none", [])


def test_quote_json_matches_the_documented_serializer_for_tiered_lines():
    s = subscription_setup()
    q = quote_create(subscription=s.subscription, to_price=with_team(s, "volume"), quantity=25, now=MID_JANUARY,
                     actor=s.owner)
    data = quote_json(q, now=MID_JANUARY)
    assert data == dict(QuoteSerializer(q, context={"now": MID_JANUARY}).data)
    assert data["lines"][1]["bands"][0]["tier_from"] == 11


# --- the band text, and invoices ------------------------------------------------------------------------------


def eur(amount: str, locale: str = "en") -> str:
    return format_currency(Decimal(amount), "EUR", locale=locale)


@pytest.mark.parametrize(("mode", "bands", "seats", "text"), [
    ("graduated", ((10, "10.00"), (None, "8.00")), 25,
     "Seats 1–10: 10 × €10.00; 11–25: 15 × €8.00 (€220.00 for a full period)"),
    ("graduated", ((10, "10.00", "20.00"), (None, "8.00", "5.00")), 25,  # 100 + 20 + 120 + 5 = 245
     "Seats 1–10: 10 × €10.00 + €20.00 flat fee; 11–25: 15 × €8.00 + €5.00 flat fee (€245.00 for a full period)"),
    ("volume", ((10, "10.00"), (None, "8.00")), 25,
     "Seats 1–25: 25 × €8.00, the volume price from 11 seats (€200.00 for a full period)"),
    ("volume", ((10, "10.00"), (50, "8.00"), (None, "6.00")), 1,
     "Seats 1: 1 × €10.00, the volume price for 1–10 seats (€10.00 for a full period)"),
    ("graduated", ((1000, "0.995"), (None, "0.50")), 1200,  # 995.000 + 100.00 = 1095.00
     "Seats 1–1,000: 1,000 × €0.995; 1,001–1,200: 200 × €0.50 (€1,095.00 for a full period)"),
])
def test_band_text_in_english(mode, bands, seats, text):
    s = subscription_setup()
    q = quote_price(subscription=s.subscription, to_price=with_team(s, mode, bands=bands), quantity=seats,
                    now=MID_JANUARY)
    with translation.override("en"):
        assert bands_text(q.lines[1], "EUR") == text
        assert bands_text(q.lines[0], "EUR") == ""  # an untiered line


def test_band_text_in_german():
    s = subscription_setup()
    graduated = quote_price(subscription=s.subscription, to_price=with_team(s), quantity=25, now=MID_JANUARY)
    volume = quote_price(subscription=s.subscription, to_price=with_team(s, "volume"), quantity=25, now=MID_JANUARY)
    with translation.override("de"):
        assert bands_text(graduated.lines[1], "EUR") == (
            f"Nutzerplätze 1–10: 10 × {eur('10', 'de')}; 11–25: 15 × {eur('8', 'de')} "
            f"({eur('220', 'de')} für einen vollen Abrechnungszeitraum)")
        assert bands_text(volume.lines[1], "EUR") == (
            f"Nutzerplätze 1–25: 25 × {eur('8', 'de')}, Mengenpreis ab 11 Nutzerplätzen "
            f"({eur('200', 'de')} für einen vollen Abrechnungszeitraum)")


def accept(s, price, quantity: int):
    q = quote_create(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=price, quantity=quantity,
                     now=MID_JANUARY, actor=s.owner)
    return Invoice.objects.get(plan_change=quote_accept(quote=q, actor=s.owner, now=MID_JANUARY))


def test_the_invoice_copies_the_band_text_at_issue_and_keeps_it():
    s = subscription_setup()
    team = with_team(s)
    invoice = accept(s, team, 25)
    assert invoice.total == Decimal("42.99")
    assert [(line.amount, line.detail) for line in invoice.lines.all()] == [
        (Decimal("-77.42"), ""),
        (Decimal("113.55"), "Seats 1–10: 10 × €10.00; 11–25: 15 × €8.00 (€220.00 for a full period)"),
    ]
    # The catalog and the customer change afterwards; the issued invoice does not.
    PriceTier.objects.filter(price=team).update(unit_amount=Decimal("1.00"))
    Customer.objects.filter(pk=s.customer.pk).update(language="de")
    invoice = Invoice.objects.get(pk=invoice.pk)
    assert invoice.lines.get(position=2).detail == \
        "Seats 1–10: 10 × €10.00; 11–25: 15 × €8.00 (€220.00 for a full period)"
    invoice = invoice_pdf_render(invoice_id=invoice.pk)
    with invoice.pdf.open("rb") as handle:
        text = " ".join("\n".join(page.extract_text() for page in PdfReader(io.BytesIO(handle.read())).pages).split())
    assert "Seats 1–10: 10 × €10.00; 11–25: 15 × €8.00 (€220.00 for a full period)" in text


def test_a_german_customers_invoice_states_the_bands_in_german():
    s = subscription_setup()
    Customer.objects.filter(pk=s.customer.pk).update(language="de")
    invoice = accept(s, with_team(s, "volume"), 25)
    assert invoice.lines.get(position=2).detail == (
        f"Nutzerplätze 1–25: 25 × {eur('8', 'de')}, Mengenpreis ab 11 Nutzerplätzen "
        f"({eur('200', 'de')} für einen vollen Abrechnungszeitraum)")
