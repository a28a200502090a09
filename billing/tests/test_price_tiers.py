"""Tiered prices in the catalog: validation of the mode and the bands, and the admin that edits them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse

from billing.models import Price, PriceTier
from billing.services.quotes import quote_create
from billing.tests.factories import (
    MID_JANUARY,
    PlanFactory,
    PriceFactory,
    UserFactory,
    subscription_setup,
    tiered_price,
)

pytestmark = pytest.mark.django_db
D = Decimal


def bands(*rows) -> list[PriceTier]:
    return [PriceTier(up_to=up_to, unit_amount=D(unit)) for up_to, unit in rows]


def messages(error: ValidationError) -> list[str]:
    return error.value.messages


# --- the model --------------------------------------------------------------------------------------------


def test_tiers_are_for_per_seat_prices_only():
    price = PriceFactory.build(pricing=Price.Pricing.FLAT, min_quantity=1, max_quantity=1, tiers_mode="graduated")
    with pytest.raises(ValidationError) as error:
        price.clean()
    assert list(error.value.message_dict) == ["tiers_mode"]
    assert "per-seat prices only" in error.value.message_dict["tiers_mode"][0]


def test_a_flat_tiered_price_is_refused_by_the_database_too():
    plan = PlanFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Price.objects.create(plan=plan, currency="EUR", interval="month", unit_amount=D(9), pricing="flat",
                             min_quantity=1, max_quantity=1, tiers_mode="volume")


def test_a_good_set_of_bands_passes():
    price = PriceFactory.build(tiers_mode="volume", unit_amount=D("10.00"))
    price.clean()
    price.clean_tiers(bands((10, "10.00"), (50, "8.00"), (None, "6.00")))  # raises nothing


@pytest.mark.parametrize(("mode", "rows", "message"), [
    ("none", [(None, "10.00")], "Bands are only for a tiered price: choose graduated or volume tiers, or delete "
                                "the bands."),
    ("graduated", [], "A graduated price needs its bands: add them, the last one with an empty 'up to' "
                      "(open-ended)."),
    ("volume", [(10, "10.00"), (50, "8.00")], "The last band must be open-ended (leave its 'up to' empty): with the "
                                              "last band ending at 50 seats, larger seat counts would have no price."),
    ("graduated", [(10, "10.00"), (None, "8.00"), (None, "6.00")], "Exactly one band is open-ended (empty 'up to'); "
                                                                   "2 are."),
    ("graduated", [(10, "10.00"), (10, "8.00"), (None, "6.00")], "Two bands end at 10 seats: bands may not overlap."),
    ("volume", [(10, "10.00"), (5, "8.00"), (None, "6.00")], "Bands must be in ascending order: the band up to 5 "
                                                             "seats comes after the band up to 10."),
    ("graduated", [(10, "12.00"), (None, "8.00")], "For a tiered price the unit amount is what the first seat costs: "
                                                   "set it to 12, the first band's unit amount (it is 10)."),
])
def test_bad_bands_are_refused_with_a_clear_message(mode, rows, message):
    price = PriceFactory.build(tiers_mode=mode, unit_amount=D("10.00"))
    with pytest.raises(ValidationError) as error:
        price.clean_tiers(bands(*rows))
    assert messages(error) == [message]


def test_a_band_checks_its_own_fields():
    price = tiered_price(plan=PlanFactory())
    band = PriceTier(price=price, up_to=0, unit_amount=D("-1"), flat_amount=D("-2"))
    with pytest.raises(ValidationError) as error:
        band.full_clean()
    assert set(error.value.message_dict) == {"up_to", "unit_amount", "flat_amount"}
    flat = PriceFactory(pricing="flat", min_quantity=1, max_quantity=1)
    with pytest.raises(ValidationError, match="Only per-seat prices have bands."):
        PriceTier(price=flat, up_to=None, unit_amount=D(5)).full_clean()


def test_bands_come_in_ascending_order_with_the_open_band_last():
    price = tiered_price(plan=PlanFactory(), bands=((None, "6.00"), (50, "8.00"), (10, "10.00")))
    assert [tier.up_to for tier in price.tiers.all()] == [10, 50, None]


# --- the admin ----------------------------------------------------------------------------------------------


@pytest.fixture
def staff(client):
    client.force_login(UserFactory(username="staff-admin", is_staff=True, is_superuser=True))
    return client


def price_form(price: Price, *, mode: str, unit_amount: str, rows=(), existing=()) -> dict:
    """The Price change form as the admin posts it, with its bands inline: rows are (up_to, unit, flat)."""
    data = {"plan": price.plan_id, "currency": price.currency, "interval": price.interval, "unit_amount": unit_amount,
            "pricing": "per_seat", "min_quantity": 1, "max_quantity": "", "tax_behavior": "exclusive",
            "tiers_mode": mode, "is_active": "on",
            "tiers-TOTAL_FORMS": len(existing) + len(rows), "tiers-INITIAL_FORMS": len(existing)}
    for index, tier in enumerate(existing):
        data |= {f"tiers-{index}-id": tier.pk, f"tiers-{index}-price": price.pk,
                 f"tiers-{index}-up_to": tier.up_to or "", f"tiers-{index}-unit_amount": tier.unit_amount,
                 f"tiers-{index}-flat_amount": tier.flat_amount}
    for index, (up_to, unit, flat) in enumerate(rows, start=len(existing)):
        data |= {f"tiers-{index}-up_to": up_to if up_to is not None else "", f"tiers-{index}-unit_amount": unit,
                 f"tiers-{index}-flat_amount": flat}
    return data


def test_staff_make_a_price_graduated_with_its_bands_in_one_save(staff):
    price = PriceFactory(unit_amount=D("10.00"))
    url = reverse("admin:billing_price_change", args=[price.pk])
    # Rows in any order: the bands are taken by where they end.
    response = staff.post(url, price_form(price, mode="graduated", unit_amount="10.00",
                                          rows=[(None, "8.00", "5.00"), (10, "10.00", "0")]))
    assert response.status_code == 302
    price.refresh_from_db()
    assert price.tiers_mode == "graduated"
    assert [(t.up_to, str(t.unit_amount), str(t.flat_amount)) for t in price.tiers.all()] == [
        (10, "10.0000", "0.0000"), (None, "8.0000", "5.0000")]


def test_staff_see_why_bands_are_refused_and_nothing_is_saved(staff):
    price = PriceFactory(unit_amount=D("10.00"))
    url = reverse("admin:billing_price_change", args=[price.pk])
    response = staff.post(url, price_form(price, mode="volume", unit_amount="10.00",
                                          rows=[(10, "10.00", "0"), (50, "8.00", "0")]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "The last band must be open-ended (leave its &#x27;up to&#x27; empty)" in page
    price.refresh_from_db()
    assert price.tiers_mode == "none" and not price.tiers.exists()
    response = staff.post(url, price_form(price, mode="graduated", unit_amount="10.00"))
    assert "A graduated price needs its bands" in response.content.decode()
    assert Price.objects.get(pk=price.pk).tiers_mode == "none"


def test_the_price_page_explains_both_modes_with_an_example(staff):
    price = tiered_price(plan=PlanFactory())
    page = staff.get(reverse("admin:billing_price_change", args=[price.pk])).content.decode()
    assert "graduated = 10 × 10.00 + 15 × 8.00 = 220.00; volume = 25 × 8.00 = 200.00" in page
    assert "Volume tier bands" in page
    assert "10, 50, (empty) make the bands 1–10, 11–50 and 51 or more" in page


def test_tiers_are_frozen_once_the_price_is_in_use(staff):
    s = subscription_setup()
    team = tiered_price(plan=PlanFactory(product=s.product, code="team", name="Team", rank=4))
    quote_create(subscription=s.subscription, to_price=team, quantity=25, now=MID_JANUARY, actor=s.owner)
    url = reverse("admin:billing_price_change", args=[team.pk])
    existing = list(team.tiers.all())
    response = staff.post(url, price_form(team, mode="volume", unit_amount="1.00", existing=existing,
                                          rows=[(5, "1.00", "0")]))
    assert response.status_code == 302  # the other fields save; the terms and the bands stay as they were
    team.refresh_from_db()
    assert (team.tiers_mode, str(team.unit_amount)) == ("graduated", "10.0000")
    assert [(t.up_to, str(t.unit_amount)) for t in team.tiers.all()] == [(10, "10.0000"), (None, "8.0000")]
    page = staff.get(url).content.decode()
    assert 'name="tiers-0-up_to"' not in page  # shown read-only
