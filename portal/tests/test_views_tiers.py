"""The portal with a tiered price: bands stated on the plans page, under each line of the review and change pages,
and on the overview, in English and German. Team's bands: 1–10 seats at 10.00, 11 or more at 8.00 a month."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from babel.numbers import format_currency
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from billing.models import Quote, Subscription
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_price
from billing.tests.factories import PlanFactory, live_subscription_setup, tiered_price

pytestmark = pytest.mark.django_db

GRADUATED_25 = "Seats 1–10: 10 × €10.00; 11–25: 15 × €8.00 (€220.00 for a full period)"


def eur(amount, locale: str = "en") -> str:
    return format_currency(Decimal(amount), "EUR", locale=locale)


@pytest.fixture
def setup(client):
    s = live_subscription_setup()  # the portal prices "now"
    s.team = PlanFactory(product=s.product, code="team", name="Team", rank=4)
    s.team_month = tiered_price(plan=s.team)
    s.team_year = tiered_price(plan=s.team, interval="year", bands=((10, "100.00"), (None, "80.00")))
    client.force_login(s.owner)
    return s


def review_page(client, s, seats: int = 25) -> tuple[Quote, str]:
    response = client.post(reverse("portal:review-create", args=[s.customer.pk, s.subscription.pk]),
                           {"plan": s.team.pk, "interval": "month", "seats": seats})
    quote = Quote.objects.order_by("-pk").first()
    assert response.status_code == 302 and quote is not None and quote.to_price == s.team_month
    return quote, client.get(response.url).content.decode()


def bands_notes(page: str) -> list[str]:
    return re.findall(r'<div class="note bands">(.*?)</div>', page)


def test_the_review_page_states_the_bands_under_the_tiered_line(client, setup):
    quote, page = review_page(client, setup)
    assert bands_notes(page) == [GRADUATED_25]  # under the charge only: the credit is for untiered Basic
    charge = quote.lines[1]
    row = re.search(r"<tr><td>Remaining time on Analytics Team × 25.*?</tr>", page, re.S).group(0)
    assert GRADUATED_25 in row and eur(charge["amount"]) in row


def test_the_review_page_states_the_bands_in_german(client, setup):
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "de"
    _quote, page = review_page(client, setup)
    assert bands_notes(page) == [f"Nutzerplätze 1–10: 10 × {eur(10, 'de')}; 11–25: 15 × {eur(8, 'de')} "
                                 f"({eur(220, 'de')} für einen vollen Abrechnungszeitraum)"]


def test_the_change_page_keeps_the_bands_of_what_was_charged(client, setup):
    quote, _page = review_page(client, setup)
    change = quote_accept(quote=quote, actor=setup.owner, now=timezone.now())
    assert change.status == "applied"
    page = client.get(reverse("portal:change", args=[setup.customer.pk, change.pk])).content.decode()
    assert bands_notes(page) == [GRADUATED_25]


def test_the_plans_page_states_the_bands_and_prices_them(client, setup):
    page = client.get(reverse("portal:plans", args=[setup.customer.pk, setup.subscription.pk]),
                      {f"seats_{setup.team.pk}": 25}).content.decode()
    assert ("Graduated price, each band at its own price: 1–10 seats at €10.00 each; 11 seats or more at €8.00 "
            "each / month") in page
    quote = quote_price(subscription=Subscription.objects.get(pk=setup.subscription.pk), to_price=setup.team_month,
                        quantity=25, now=timezone.now())
    assert f'data-testid="due-{setup.team.pk}">{eur(quote.amount_due)}<' in page
    # Annual saves 12 × 220.00 − (10 × 100.00 + 15 × 80.00) = 2640.00 − 2200.00 = 440.00 a year, 16.7 %
    assert "annual saves €440.00 (16.7%) a year" in page


def test_the_overview_states_a_tiered_subscriptions_bands_and_renewal(client, setup):
    Subscription.objects.filter(pk=setup.subscription.pk).update(price=setup.team_month, quantity=25)
    page = client.get(reverse("portal:overview", args=[setup.customer.pk])).content.decode()
    assert "Graduated price, each band at its own price: 1–10 seats at €10.00 each; 11 seats or more at €8.00 each" \
        in page
    assert "per seat × 25" not in page
    # next renewal: 220.00 + R(220.00 × 0.19) = 261.80
    assert eur("261.80") in page
