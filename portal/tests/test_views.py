"""The portal's pages through the Django test client: every page, every error path, roles and other accounts.

Amounts are never hard-coded: they are compared with what billing's own pricing computes
(`quote_price`, the stored quote, `subscription_next_renewal`), formatted with Babel as the page does.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import urlparse

import pytest
from babel.numbers import format_currency, format_percent
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from billing.errors import ChangeRefused
from billing.models import (
    BalanceEntry,
    ChangeRule,
    IdempotencyKey,
    LocalPayment,
    Membership,
    PlanChange,
    PlanFeature,
    Price,
    Quote,
    Subscription,
)
from billing.payments.local import local_payment_authenticate
from billing.selectors import subscription_next_renewal
from billing.services.idempotency import request_fingerprint
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create, quote_price
from billing.tests.factories import (
    CustomerFactory,
    MembershipFactory,
    PlanFactory,
    PriceFactory,
    ProductFactory,
    live_subscription_setup,
)

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests"  # the factories' password


@pytest.fixture(autouse=True)
def _private_cache(settings):
    """Sign-in failures are counted in the cache; a cache of this process only, so other runs cannot clear it."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                   "LOCATION": "portal-view-tests"}}
    yield
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def setup():
    return live_subscription_setup()  # the portal prices "now"


@pytest.fixture
def outsider():
    """The owner of another customer."""
    return MembershipFactory(customer=CustomerFactory(), role=Membership.Role.OWNER).user


def logged_in(client, user):
    client.force_login(user)
    return client


def html(response) -> str:
    return response.content.decode()


def eur(amount, locale: str = "en") -> str:
    return format_currency(Decimal(amount), "EUR", locale=locale)


def subscription(s) -> Subscription:
    return Subscription.objects.select_related("customer", "price__plan__product").get(pk=s.subscription.pk)


def url(name: str, *args) -> str:
    return reverse(f"portal:{name}", args=args)


def plans_url(s) -> str:
    return url("plans", s.customer.pk, s.subscription.pk)


def price_url(s, plan) -> str:
    return url("plan-price", s.customer.pk, s.subscription.pk, plan.pk)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def request_review(client, s, *, plan=None, interval="month", seats=5, **extra):
    data = {"plan": (plan or s.pro).pk, "interval": interval, "seats": seats} | extra
    return client.post(url("review-create", s.customer.pk, s.subscription.pk), data)


def quote_via_portal(client, s, **kwargs) -> Quote:
    response = request_review(client, s, **kwargs)
    quote = Quote.objects.order_by("-pk").first()
    assert quote is not None, messages_of(client.get(plans_url(s)))
    assert response.status_code == 302 and response.url == url("review", s.customer.pk, quote.pk)
    return quote


def token_of(client, s, quote) -> str:
    page = html(client.get(url("review", s.customer.pk, quote.pk)))
    match = re.search(r'name="token" value="([^"]+)"', page)
    assert match, "the review page has no confirm form"
    return match.group(1)


def confirm(client, s, quote, token: str | None = None):
    token = token if token is not None else token_of(client, s, quote)
    return client.post(url("confirm", s.customer.pk, quote.pk), {"token": token})


def state(s) -> tuple:
    """What a refused or failed change must leave exactly as it was."""
    sub = Subscription.objects.get(pk=s.subscription.pk)
    return (sub.price_id, sub.quantity, sub.version, sub.status,
            LocalPayment.objects.filter(status="succeeded").count(),
            PlanChange.objects.filter(status="applied").count())


def price_box(page: str, plan) -> str:
    match = re.search(rf'<div class="price-box" id="price-{plan.pk}".*?</div>\s*(?=</td>|</section>|$)', page, re.S)
    assert match, f"no price box for {plan}"
    return match.group(0)


# --- sign in, sign out, home ------------------------------------------------------------------------


def test_sign_in_with_good_credentials_lands_on_the_overview(client, setup):
    response = client.post(url("login"), {"username": setup.owner.username, "password": PASSWORD}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == url("overview", setup.customer.pk)
    assert client.session[SESSION_KEY] == str(setup.owner.pk)


def test_sign_in_with_bad_credentials_shows_a_clear_message(client, setup):
    response = client.post(url("login"), {"username": setup.owner.username, "password": "wrong"})
    assert response.status_code == 200
    assert "That username and password do not match. Check both and try again." in html(response)
    assert SESSION_KEY not in client.session


def test_sign_in_is_refused_after_five_failures_even_with_the_right_password(client, setup):
    for _ in range(5):
        response = client.post(url("login"), {"username": setup.owner.username, "password": "wrong"})
        assert "Too many failed sign-in attempts" not in html(response)
    response = client.post(url("login"), {"username": setup.owner.username, "password": PASSWORD})
    assert response.status_code == 200
    assert "Too many failed sign-in attempts. Wait 15 minutes, then try again." in html(response)
    assert SESSION_KEY not in client.session


def test_failures_for_one_username_do_not_lock_out_another(client, setup):
    for _ in range(5):
        client.post(url("login"), {"username": setup.owner.username, "password": "wrong"})
    response = client.post(url("login"), {"username": setup.member.username, "password": PASSWORD})
    assert response.status_code == 302
    assert client.session[SESSION_KEY] == str(setup.member.pk)


def test_sign_out_is_a_post(client, setup):
    logged_in(client, setup.owner)
    assert client.get(url("logout")).status_code == 405
    assert SESSION_KEY in client.session
    response = client.post(url("logout"))
    assert response.status_code == 302 and response.url == url("login")
    assert SESSION_KEY not in client.session


def test_home_for_anonymous_visitors_is_the_landing_page(client):
    response = client.get(url("home"))
    assert response.status_code == 200
    assert url("login") in html(response)
    assert "portal/home.html" in [t.name for t in response.templates]


def test_home_sends_a_user_with_one_account_to_its_overview(client, setup):
    response = logged_in(client, setup.member).get(url("home"))
    assert response.status_code == 302 and response.url == url("overview", setup.customer.pk)


def test_home_lets_a_user_with_two_accounts_choose(client, setup):
    other = CustomerFactory(name="Zeta GmbH")
    MembershipFactory(customer=other, user=setup.owner, role=Membership.Role.MEMBER)
    response = logged_in(client, setup.owner).get(url("home"))
    assert response.status_code == 200
    page = html(response)
    assert url("overview", setup.customer.pk) in page and url("overview", other.pk) in page
    assert "Zeta GmbH" in page and setup.customer.name in page


def test_portal_pages_need_a_signed_in_user(client, setup):
    response = client.get(url("overview", setup.customer.pk))
    assert response.status_code == 302 and response.url.startswith(url("login"))


# --- overview -----------------------------------------------------------------------------------------


def test_overview_for_an_owner_shows_plan_renewal_balance_and_features(client, setup):
    BalanceEntry.objects.create(customer=setup.customer, currency="EUR", amount=Decimal("12.34"),
                                kind=BalanceEntry.Kind.ADJUSTMENT, description="Goodwill", created_at=timezone.now())
    response = logged_in(client, setup.owner).get(url("overview", setup.customer.pk))
    assert response.status_code == 200
    page = html(response)
    assert "Analytics: Basic" in page
    assert eur(setup.basic_month.unit_amount) in page
    renewal = subscription_next_renewal(subscription=subscription(setup))
    assert eur(renewal.total) in page
    assert eur("12.34") in page  # the credit balance
    assert '<li class="yes">Storage: 10 GB</li>' in page
    assert '<li class="no">SSO</li>' in page
    assert "Visa ending 4242" in page
    assert url("plans", setup.customer.pk, setup.subscription.pk) in page
    assert "Downgrade or cancel" in page and url("cancel", setup.customer.pk, setup.subscription.pk) in page
    assert "plan changes are made by the account" not in page


def test_overview_for_a_member_is_read_only_and_names_who_can_change(client, setup):
    response = logged_in(client, setup.member).get(url("overview", setup.customer.pk))
    assert response.status_code == 200
    page = html(response)
    note = re.search(r'<p class="msg info">(.*?)</p>', page, re.S)
    assert note and "plan changes are made by the account" in note.group(1)
    assert setup.owner.username in note.group(1) and setup.billing_admin.username in note.group(1)
    assert setup.member.username not in note.group(1)
    assert "Downgrade or cancel" not in page
    assert "Compare plans" in page and "Change plan or seats" not in page


def test_overview_shows_a_scheduled_change_with_its_cancel_form(client, setup):
    quote = quote_create(subscription=subscription(setup), to_price=setup.basic_month, quantity=3,
                         now=timezone.now(), actor=setup.owner)
    change = quote_accept(quote=quote, actor=setup.owner, now=timezone.now())
    assert change.status == "scheduled"
    page = html(logged_in(client, setup.owner).get(url("overview", setup.customer.pk)))
    assert "Scheduled: Basic with 3 seat(s) from" in page
    assert f'action="{url("change-cancel", setup.customer.pk, change.pk)}"' in page
    assert "Cancel this change" in page
    # The renewal is at the scheduled terms.
    renewal = subscription_next_renewal(subscription=subscription(setup), scheduled=change)
    assert renewal.quantity == 3 and eur(renewal.total) in page


def test_overview_hides_the_cancel_form_of_a_scheduled_change_from_members(client, setup):
    quote = quote_create(subscription=subscription(setup), to_price=setup.basic_month, quantity=3,
                         now=timezone.now(), actor=setup.owner)
    change = quote_accept(quote=quote, actor=setup.owner, now=timezone.now())
    page = html(logged_in(client, setup.member).get(url("overview", setup.customer.pk)))
    assert "Scheduled: Basic with 3 seat(s) from" in page
    assert url("change-cancel", setup.customer.pk, change.pk) not in page


# --- plans page -------------------------------------------------------------------------------------


def _row(page: str, feature: str) -> str:
    match = re.search(rf'<th scope="row">{feature}</th>(.*?)</tr>', page, re.S)
    assert match, f"no row for {feature}"
    return match.group(1)


def test_plans_page_compares_every_tier_with_its_features(client, setup):
    response = logged_in(client, setup.owner).get(plans_url(setup))
    assert response.status_code == 200
    page = html(response)
    heads = re.findall(r'<th scope="col" class="(current)?">\s*(\w+)', page)
    assert [name for _, name in heads] == ["Basic", "Pro", "Business"]
    assert [bool(current) for current, _ in heads] == [True, False, False]  # the current plan marked
    storage = re.findall(r"(10 GB|100 GB|Unlimited)", _row(page, "Storage"))
    assert storage == ["10 GB", "100 GB", "Unlimited"]
    sso = re.findall(r'<span class="(yes|no)">', _row(page, "SSO"))
    assert sso == ["no", "yes", "yes"]
    assert "Your current plan" in price_box(page, setup.basic)
    for price in (setup.basic_month, setup.pro_month, setup.business_month):
        assert eur(price.unit_amount) in page


def test_plans_page_prices_each_plan_with_what_quote_price_computes(client, setup):
    page = html(logged_in(client, setup.owner).get(plans_url(setup)))
    expected = quote_price(subscription=subscription(setup), to_price=setup.pro_month, quantity=5, now=timezone.now())
    box = price_box(page, setup.pro)
    assert f'data-testid="due-{setup.pro.pk}">{eur(expected.amount_due)}<' in box
    assert eur(expected.next_period_amount) in box
    assert "Choose Pro" in box


def test_annual_toggle_shows_annual_prices_and_the_saving(client, setup):
    response = logged_in(client, setup.owner).get(plans_url(setup), {"interval": "year"})
    assert response.status_code == 200
    page = html(response)
    assert eur(setup.pro_year.unit_amount) in page
    seats = setup.subscription.quantity
    twelve_months = setup.pro_month.unit_amount * 12 * seats
    saving = twelve_months - setup.pro_year.unit_amount * seats
    fraction = (saving / twelve_months).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
    shown = format_percent(fraction, locale="en", decimal_quantization=False)
    assert f"you save {eur(saving)} ({shown}) a year against monthly" in page
    # Business has no annual price: said so, no button.
    business = price_box(page, setup.business)
    assert "Not available with this billing interval in your currency." in business and "Choose" not in business
    pro_year_quote = quote_price(subscription=subscription(setup), to_price=setup.pro_year, quantity=seats,
                                 now=timezone.now())
    assert eur(pro_year_quote.amount_due) in price_box(page, setup.pro)
    assert 'name="interval" value="year"' in page


def test_monthly_view_advertises_the_annual_saving(client, setup):
    page = html(logged_in(client, setup.owner).get(plans_url(setup), {"interval": "month"}))
    seats = setup.subscription.quantity
    twelve_months = setup.basic_month.unit_amount * 12 * seats
    saving = twelve_months - Price.objects.get(plan=setup.basic, interval="year").unit_amount * seats
    fraction = (saving / twelve_months).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
    shown = format_percent(fraction, locale="en", decimal_quantization=False)
    assert f"annual saves {eur(saving)} ({shown}) a year" in page


def test_other_products_are_offered_as_crossgrades_with_gains_and_losses(client, setup):
    reports = PlanFactory(product=ProductFactory(code="reports", name="Reports", sort_order=5), code="team",
                          name="Team", rank=1)
    team_month = PriceFactory(plan=reports, unit_amount=Decimal("20.00"))
    PlanFeature.objects.create(plan=reports, feature=setup.feature_storage, limit_value=5)
    PlanFeature.objects.create(plan=reports, feature=setup.feature_sso)
    page = html(logged_in(client, setup.owner).get(plans_url(setup)))
    section = re.search(rf'<section class="card" aria-labelledby="x-{reports.pk}">.*?</section>', page, re.S)
    assert section, "no cross-grade card for Reports Team"
    card = section.group(0)
    assert "Reports Team" in card
    assert "<strong>You gain:</strong> SSO" in card
    assert "<strong>You lose:</strong> Storage: 5 GB" in card
    expected = quote_price(subscription=subscription(setup), to_price=team_month, quantity=5, now=timezone.now())
    assert expected.direction == "crossgrade"
    assert eur(expected.amount_due) in card and "Choose Team" in card


def test_seats_in_the_query_reprice_that_plan(client, setup):
    response = logged_in(client, setup.owner).get(plans_url(setup), {"interval": "month", f"seats_{setup.pro.pk}": 8})
    page = html(response)
    assert re.search(rf'id="seats-{setup.pro.pk}" name="seats" value="8"', page)
    expected = quote_price(subscription=subscription(setup), to_price=setup.pro_month, quantity=8, now=timezone.now())
    box = price_box(page, setup.pro)
    assert eur(expected.amount_due) in box
    assert 'name="seats" value="8"' in box  # the Choose form carries the seats
    # Other plans keep the subscription's seat count.
    five = quote_price(subscription=subscription(setup), to_price=setup.business_month, quantity=5, now=timezone.now())
    assert eur(five.amount_due) in price_box(page, setup.business)


def test_plans_refused_by_a_rule_show_the_reason_instead_of_a_button(client, setup):
    ChangeRule.objects.create(position=10, name="Business by sales only", to_plan=setup.business, allowed=False,
                              refusal_reason="Business is sold by our sales team; write to sales@example.com.")
    page = html(logged_in(client, setup.owner).get(plans_url(setup)))
    box = price_box(page, setup.business)
    assert "Business is sold by our sales team; write to sales@example.com." in box
    assert "Choose Business" not in box and "<form" not in box
    assert "Choose Pro" in price_box(page, setup.pro)


def test_a_member_sees_prices_but_no_choose_buttons(client, setup):
    page = html(logged_in(client, setup.member).get(plans_url(setup)))
    assert "changes are made by the account" in page
    expected = quote_price(subscription=subscription(setup), to_price=setup.pro_month, quantity=5, now=timezone.now())
    assert eur(expected.amount_due) in page
    assert "Choose " not in page
    assert url("review-create", setup.customer.pk, setup.subscription.pk) not in page
    assert "Downgrade or cancel" not in page


@pytest.mark.parametrize("interval", ["fortnight", ""])
def test_plans_page_with_an_unknown_interval_shows_the_subscriptions_own(client, setup, interval):
    response = logged_in(client, setup.owner).get(plans_url(setup), {"interval": interval})
    assert response.status_code == 200
    page = html(response)
    assert "Your current plan" in price_box(page, setup.basic) and "Choose Pro" in page


def test_the_quarterly_toggle_says_which_plans_are_not_sold_quarterly(client, setup):
    PriceFactory(plan=setup.business, interval="quarter", unit_amount=Decimal("250.00"), min_quantity=3)
    logged_in(client, setup.owner)
    assert "Quarterly" in html(client.get(plans_url(setup)))  # the toggle offers it
    response = client.get(plans_url(setup), {"interval": "quarter"})
    assert response.status_code == 200
    page = html(response)
    for plan in (setup.basic, setup.pro):
        assert "Not available with this billing interval in your currency." in price_box(page, plan)
    assert "Choose Business" in price_box(page, setup.business)


def test_plans_page_of_a_period_that_has_ended_shows_the_refusal_not_a_500(client, setup):
    now = timezone.now()
    Subscription.objects.filter(pk=setup.subscription.pk).update(
        current_period_start=now - timedelta(days=40), current_period_end=now - timedelta(days=10))
    response = logged_in(client, setup.owner).get(plans_url(setup))
    assert response.status_code == 200
    assert "The current billing period has ended" in html(response)
    assert "Choose " not in html(response)


def test_plans_page_of_an_ended_subscription_redirects_to_the_overview(client, setup):
    Subscription.objects.filter(pk=setup.subscription.pk).update(status=Subscription.Status.CANCELLED)
    response = logged_in(client, setup.owner).get(plans_url(setup), follow=True)
    assert response.redirect_chain[0] == (url("overview", setup.customer.pk), 302)
    assert "This subscription has ended." in messages_of(response)


def test_plans_grid_alone_for_htmx_interval_switch(client, setup):
    response = logged_in(client, setup.owner).get(plans_url(setup), {"interval": "year"},
                                                  HTTP_HX_REQUEST="true", HTTP_HX_TARGET="plans-grid")
    assert response.status_code == 200
    page = html(response).strip()
    assert page.startswith('<div id="plans-grid">') and "<html" not in page
    assert eur(setup.pro_year.unit_amount) in page


# --- the live price partial -----------------------------------------------------------------------------


def test_price_partial_returns_only_the_price_box_with_the_quoted_amount(client, setup):
    response = logged_in(client, setup.owner).get(price_url(setup, setup.pro), {"interval": "month", "seats": 7},
                                                  HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    page = html(response).strip()
    assert page.startswith(f'<div class="price-box" id="price-{setup.pro.pk}"') and "<html" not in page
    expected = quote_price(subscription=subscription(setup), to_price=setup.pro_month, quantity=7, now=timezone.now())
    assert f'data-testid="due-{setup.pro.pk}">{eur(expected.amount_due)}<' in page
    assert eur(expected.next_period_amount) in page
    assert 'name="seats" value="7"' in page and "Choose Pro" in page


def test_price_partial_for_annual_prices_the_annual_price(client, setup):
    response = logged_in(client, setup.owner).get(price_url(setup, setup.pro), {"interval": "year", "seats": 6},
                                                  HTTP_HX_REQUEST="true")
    expected = quote_price(subscription=subscription(setup), to_price=setup.pro_year, quantity=6, now=timezone.now())
    assert eur(expected.amount_due) in html(response)
    assert 'name="interval" value="year"' in html(response)


def test_price_partial_with_out_of_range_seats_shows_the_refusal(client, setup):
    too_many = setup.pro_month.max_quantity + 10
    response = logged_in(client, setup.owner).get(price_url(setup, setup.pro),
                                                  {"interval": "month", "seats": too_many}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    with pytest.raises(ChangeRefused) as refused:
        quote_price(subscription=subscription(setup), to_price=setup.pro_month, quantity=too_many, now=timezone.now())
    assert refused.value.code == "quantity_out_of_range"
    assert escape(refused.value.detail) in html(response)
    assert "Choose Pro" not in html(response)


def test_price_partial_with_seats_below_the_minimum_shows_the_refusal(client, setup):
    # Business needs at least 3 seats.
    response = logged_in(client, setup.owner).get(price_url(setup, setup.business),
                                                  {"interval": "month", "seats": 2}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    with pytest.raises(ChangeRefused) as refused:
        quote_price(subscription=subscription(setup), to_price=setup.business_month, quantity=2, now=timezone.now())
    assert escape(refused.value.detail) in html(response)


@pytest.mark.parametrize(("seats", "message"), [
    ("abc", "Enter the number of seats as a whole number."),
    ("0", "Choose at least one seat."),
    ("-3", "Choose at least one seat."),
    ("99999999", "That is more seats than any plan offers."),
])
def test_price_partial_with_invalid_seats_says_so(client, setup, seats, message):
    response = logged_in(client, setup.owner).get(price_url(setup, setup.pro), {"interval": "month", "seats": seats},
                                                  HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert message in html(response)
    assert 'role="alert"' in html(response)


def test_price_partial_without_htmx_redirects_to_the_full_plans_page(client, setup):
    response = logged_in(client, setup.owner).get(price_url(setup, setup.pro), {"interval": "year", "seats": 8})
    assert response.status_code == 302
    target = urlparse(response.url)
    assert target.path == plans_url(setup)
    assert dict(pair.split("=") for pair in target.query.split("&")) == {"interval": "year",
                                                                          f"seats_{setup.pro.pk}": "8"}
    page = html(client.get(response.url))
    expected = quote_price(subscription=subscription(setup), to_price=setup.pro_year, quantity=8, now=timezone.now())
    assert eur(expected.amount_due) in price_box(page, setup.pro)


def test_no_javascript_seat_form_with_out_of_range_seats_says_so(client, setup):
    """The seat form without htmx goes to the full plans page: the refusal must show there too."""
    too_many = setup.pro_month.max_quantity + 10
    response = logged_in(client, setup.owner).get(price_url(setup, setup.pro), {"interval": "month", "seats": too_many},
                                                  follow=True)
    assert response.status_code == 200
    with pytest.raises(ChangeRefused) as refused:
        quote_price(subscription=subscription(setup), to_price=setup.pro_month, quantity=too_many, now=timezone.now())
    assert escape(refused.value.detail) in price_box(html(response), setup.pro)


def test_no_javascript_seat_form_with_invalid_seats_says_so(client, setup):
    response = logged_in(client, setup.owner).get(price_url(setup, setup.pro), {"interval": "month", "seats": "abc"},
                                                  follow=True)
    assert response.status_code == 200
    assert "Enter the number of seats as a whole number." in html(response)


def test_price_partial_for_an_unknown_plan_is_404(client, setup):
    response = logged_in(client, setup.owner).get(
        url("plan-price", setup.customer.pk, setup.subscription.pk, 999_999), {"seats": 5}, HTTP_HX_REQUEST="true")
    assert response.status_code == 404


# --- review ------------------------------------------------------------------------------------------


def test_review_create_quotes_the_change_and_shows_its_lines(client, setup):
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup, seats=6)
    assert (quote.to_price_id, quote.to_quantity, quote.direction, quote.created_by_id) == (
        setup.pro_month.pk, 6, "upgrade", setup.owner.pk)
    again = quote_price(subscription=subscription(setup), to_price=setup.pro_month, quantity=6, now=quote.created_at)
    assert again.amount_due == quote.amount_due and again.lines == quote.lines
    response = client.get(url("review", setup.customer.pk, quote.pk))
    assert response.status_code == 200
    page = html(response)
    assert [line["kind"] for line in quote.lines] == ["credit", "charge"]
    for line in quote.lines:
        assert escape(line["description"]) in page
        assert eur(line["amount"]) in page
    assert eur(quote.tax) in page and eur(quote.total) in page
    assert f'data-testid="amount-due">{eur(quote.amount_due)}<' in page
    assert f"Confirm and pay {eur(quote.amount_due)}" in page
    assert eur(quote.next_period_amount) in page
    assert "Tax (19%)" in page
    assert "This price is held for you until" in page


def test_billing_admins_can_request_a_review(client, setup):
    logged_in(client, setup.billing_admin)
    quote = quote_via_portal(client, setup)
    assert quote.created_by_id == setup.billing_admin.pk


@pytest.mark.parametrize(("data", "message"), [
    ({"seats": 0}, "Choose at least one seat."),
    ({"seats": "many"}, "Enter the number of seats as a whole number."),
    ({"interval": "fortnight"}, "Select a valid choice. fortnight is not one of the available choices."),
    ({"plan": ""}, "This field is required."),
])
def test_review_create_with_invalid_input_goes_back_with_a_message(client, setup, data, message):
    logged_in(client, setup.owner)
    response = client.post(url("review-create", setup.customer.pk, setup.subscription.pk),
                           {"plan": setup.pro.pk, "interval": "month", "seats": 5} | data)
    assert response.status_code == 302 and response.url == plans_url(setup)
    assert message in messages_of(client.get(response.url))
    assert not Quote.objects.exists()


def test_review_create_for_an_interval_the_plan_is_not_sold_in(client, setup):
    logged_in(client, setup.owner)
    response = request_review(client, setup, plan=setup.business, interval="year")
    assert response.status_code == 302 and response.url == plans_url(setup)
    assert "That plan is not sold with this billing interval in your currency." in messages_of(client.get(response.url))
    assert not Quote.objects.exists()


def test_review_create_refused_by_the_rules_goes_back_with_the_reason(client, setup):
    logged_in(client, setup.owner)
    response = request_review(client, setup, seats=setup.pro_month.max_quantity + 1)
    assert response.status_code == 302 and response.url == plans_url(setup)
    with pytest.raises(ChangeRefused) as refused:
        quote_price(subscription=subscription(setup), to_price=setup.pro_month,
                    quantity=setup.pro_month.max_quantity + 1, now=timezone.now())
    assert refused.value.detail in messages_of(client.get(response.url))
    assert not Quote.objects.exists()


def test_review_create_for_the_current_terms_is_refused_with_a_message(client, setup):
    logged_in(client, setup.owner)
    response = request_review(client, setup, plan=setup.basic, seats=5)
    assert response.url == plans_url(setup)
    assert any("You are already on" in m for m in messages_of(client.get(response.url)))
    assert not Quote.objects.exists()


def test_review_create_needs_a_post(client, setup):
    response = logged_in(client, setup.owner).get(url("review-create", setup.customer.pk, setup.subscription.pk))
    assert response.status_code == 405


def test_cancellation_goes_through_the_same_review(client, setup):
    logged_in(client, setup.owner)
    cancel_page = html(client.get(url("cancel", setup.customer.pk, setup.subscription.pk)))
    assert 'name="cancel" value="1"' in cancel_page  # no exit reasons set up: straight to the review
    response = client.post(url("review-create", setup.customer.pk, setup.subscription.pk), {"cancel": "1"})
    quote = Quote.objects.get()
    assert response.url == url("review", setup.customer.pk, quote.pk)
    assert quote.direction == "cancel" and quote.timing == "period_end" and quote.amount_due == 0
    page = html(client.get(response.url))
    assert "Review your cancellation" in page and "Confirm cancellation" in page
    response = confirm(client, setup, quote)
    change = PlanChange.objects.get()
    assert response.url == url("change", setup.customer.pk, change.pk)
    assert change.status == "scheduled" and change.direction == "cancel"
    page = html(client.get(response.url))
    assert "Your subscription ends on" in page and "Keep my subscription" in page
    assert Subscription.objects.get(pk=setup.subscription.pk).status == Subscription.Status.ACTIVE


def test_the_cancel_page_for_a_member_has_no_form(client, setup):
    response = logged_in(client, setup.member).get(url("cancel", setup.customer.pk, setup.subscription.pk))
    assert response.status_code == 200
    page = html(response)
    assert "Review cancellation" not in page and setup.owner.username in page


def test_review_page_for_a_member_has_no_confirm_form(client, setup):
    quote = quote_create(subscription=subscription(setup), to_price=setup.pro_month, quantity=5, now=timezone.now(),
                         actor=setup.owner)
    page = html(logged_in(client, setup.member).get(url("review", setup.customer.pk, quote.pk)))
    assert eur(quote.amount_due) in page
    assert 'name="token"' not in page and url("confirm", setup.customer.pk, quote.pk) not in page
    assert "Only the account" in page and setup.owner.username in page


def test_review_page_of_an_expired_quote_says_so_and_offers_no_confirm(client, setup):
    quote = quote_create(subscription=subscription(setup), to_price=setup.pro_month, quantity=5, now=timezone.now(),
                         actor=setup.owner)
    Quote.objects.filter(pk=quote.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    page = html(logged_in(client, setup.owner).get(url("review", setup.customer.pk, quote.pk)))
    assert "has expired" in page and 'name="token"' not in page
    assert plans_url(setup) in page


# --- confirm and pay ----------------------------------------------------------------------------------


def test_confirm_charges_the_quote_applies_it_and_shows_what_is_unlocked(client, setup):
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    response = confirm(client, setup, quote)
    change = PlanChange.objects.get()
    assert response.status_code == 302 and response.url == url("change", setup.customer.pk, change.pk)
    assert change.status == "applied" and change.amount_due == quote.amount_due
    payment = LocalPayment.objects.get()
    assert payment.status == "succeeded" and payment.amount_minor == int(quote.amount_due * 100)
    sub = Subscription.objects.get(pk=setup.subscription.pk)
    assert (sub.price_id, sub.quantity, sub.version) == (setup.pro_month.pk, 5, 2)
    page = html(client.get(response.url))
    assert "You are on Pro now" in page
    assert f'data-testid="amount-paid">{eur(quote.amount_due)}<' in page
    assert change.payment_reference in page
    unlocked = re.findall(r'<li class="yes new">([^<]*)', page)
    assert sorted(name.strip() for name in unlocked) == ["SSO", "Storage: 100 GB"]


def test_a_second_post_of_the_same_form_charges_once_and_shows_the_same_change(client, setup):
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    token = token_of(client, setup, quote)
    first = confirm(client, setup, quote, token)
    second = confirm(client, setup, quote, token)
    assert first.status_code == second.status_code == 302
    assert first.url == second.url
    assert LocalPayment.objects.count() == 1 and PlanChange.objects.count() == 1
    assert Subscription.objects.get(pk=setup.subscription.pk).version == 2
    assert messages_of(client.get(second.url)) == []


def test_confirming_an_accepted_quote_again_from_a_fresh_page_charges_once(client, setup):
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    first = confirm(client, setup, quote, "token-one")
    again = confirm(client, setup, quote, "token-two")
    assert again.url == first.url
    assert LocalPayment.objects.count() == 1 and PlanChange.objects.count() == 1
    page = html(client.get(url("review", setup.customer.pk, quote.pk)))
    assert "You already confirmed this change." in page and 'name="token"' not in page


def test_the_whole_journey_works_as_plain_posts_with_csrf_enforced(setup):
    client = Client(enforce_csrf_checks=True)
    client.force_login(setup.owner)

    def form_data(page: str, action: str) -> dict:
        form = re.search(rf'<form method="post" action="{re.escape(action)}".*?</form>', page, re.S)
        assert form, f"no form posting to {action}"
        return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0)))

    plans = html(client.get(plans_url(setup), {f"seats_{setup.pro.pk}": 6}))
    choose = url("review-create", setup.customer.pk, setup.subscription.pk)
    box = price_box(plans, setup.pro)
    data = form_data(box, choose)
    assert data["seats"] == "6" and data["plan"] == str(setup.pro.pk) and "csrfmiddlewaretoken" in data
    response = client.post(choose, data)
    quote = Quote.objects.get()
    assert response.url == url("review", setup.customer.pk, quote.pk) and quote.to_quantity == 6
    review = html(client.get(response.url))
    response = client.post(url("confirm", setup.customer.pk, quote.pk),
                           form_data(review, url("confirm", setup.customer.pk, quote.pk)))
    change = PlanChange.objects.get()
    assert response.url == url("change", setup.customer.pk, change.pk) and change.status == "applied"
    assert client.post(url("confirm", setup.customer.pk, quote.pk), {"token": "no-csrf"}).status_code == 403


def test_a_second_click_while_the_first_is_being_charged_waits_and_charges_nothing_more(client, setup, monkeypatch):
    from portal import views

    monkeypatch.setattr(views, "DOUBLE_SUBMIT_WAIT_SECONDS", 0.3)
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    # The first click's claim on the token, still unanswered.
    IdempotencyKey.objects.create(user=setup.owner, key="portal:tok", created_at=timezone.now(),
                                  request_hash=request_fingerprint("quote_accept", quote.pk))
    response = confirm(client, setup, quote, "tok")
    assert response.url == url("review", setup.customer.pk, quote.pk)
    assert "Your payment is still being processed." in messages_of(client.get(response.url))
    assert not PlanChange.objects.exists() and not LocalPayment.objects.exists()


def test_a_change_needing_approval_nobody_can_give_is_refused_with_a_message(client, setup):
    """With an approval policy it is submitted for approval instead (portal/tests/test_views_approvals.py)."""
    ChangeRule.objects.create(position=10, name="Business needs approval", to_plan=setup.business,
                              requires_approval=True)
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup, plan=setup.business)
    before = state(setup)
    response = confirm(client, setup, quote)
    assert response.url == url("review", setup.customer.pk, quote.pk)
    assert ("This change needs approval, but no approver is set up for it; contact support."
            in messages_of(client.get(response.url)))
    assert state(setup) == before and not PlanChange.objects.exists() and not LocalPayment.objects.exists()


def test_confirm_without_a_payment_method_says_to_add_one(client, setup):
    setup.customer.payment_methods.all().delete()
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    assert "none saved" in html(client.get(url("overview", setup.customer.pk)))
    response = confirm(client, setup, quote)
    assert response.url == url("review", setup.customer.pk, quote.pk)
    assert "Add a payment method before making this change." in messages_of(client.get(response.url))
    assert not PlanChange.objects.exists() and not LocalPayment.objects.exists()


def test_the_same_token_for_another_quote_is_refused_with_a_message(client, setup):
    logged_in(client, setup.owner)
    first = quote_via_portal(client, setup)
    second = quote_via_portal(client, setup, plan=setup.business)
    confirm(client, setup, first, "shared")
    response = confirm(client, setup, second, "shared")
    assert response.url == url("review", setup.customer.pk, second.pk)
    assert messages_of(client.get(response.url))
    assert PlanChange.objects.count() == 1 and LocalPayment.objects.count() == 1


def test_confirm_without_a_token_asks_to_review_again(client, setup):
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    response = client.post(url("confirm", setup.customer.pk, quote.pk), {})
    assert response.url == url("review", setup.customer.pk, quote.pk)
    assert "This form has expired; review the change again and confirm." in messages_of(client.get(response.url))
    assert not PlanChange.objects.exists() and not LocalPayment.objects.exists()


def test_an_expired_quote_is_not_charged(client, setup):
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    token = token_of(client, setup, quote)
    Quote.objects.filter(pk=quote.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    before = state(setup)
    response = confirm(client, setup, quote, token)
    assert response.status_code == 302 and response.url == plans_url(setup)
    assert "This quote has expired; request a new one." in messages_of(client.get(response.url))
    assert state(setup) == before
    assert not PlanChange.objects.exists() and not LocalPayment.objects.exists()


def test_a_quote_for_a_subscription_that_changed_meanwhile_is_not_charged(client, setup):
    logged_in(client, setup.owner)
    first = quote_via_portal(client, setup)
    second = quote_via_portal(client, setup, plan=setup.business)
    second_token = token_of(client, setup, second)
    confirm(client, setup, first)
    before = state(setup)
    response = confirm(client, setup, second, second_token)
    assert response.status_code == 302 and response.url == plans_url(setup)
    assert ("The subscription changed since this quote was made; request a new quote."
            in messages_of(client.get(response.url)))
    assert state(setup) == before
    assert LocalPayment.objects.count() == 1 and PlanChange.objects.count() == 1
    assert Subscription.objects.get(pk=setup.subscription.pk).price_id == setup.pro_month.pk


def test_a_declined_card_says_why_and_changes_nothing(client, setup):
    setup.customer.payment_methods.update(reference="pm_card_chargeDeclined")
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    before = state(setup)
    response = confirm(client, setup, quote)
    change = PlanChange.objects.get()
    assert response.url == url("change", setup.customer.pk, change.pk)
    assert change.status == "failed" and change.failure_code == "card_declined"
    assert state(setup) == before
    assert Subscription.objects.get(pk=setup.subscription.pk).version == 1
    page = html(client.get(response.url))
    assert "The payment did not go through" in page
    assert "Your card was declined." in page and "Nothing has changed and nothing was charged." in page
    assert url("review", setup.customer.pk, quote.pk) in page  # try again with the same quote
    assert "You are on" not in page


def test_a_payment_needing_authentication_shows_the_payment_step(client, setup):
    setup.customer.payment_methods.update(reference="pm_card_authenticationRequired")
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    before = state(setup)
    response = confirm(client, setup, quote)
    change = PlanChange.objects.get()
    assert response.url == url("change", setup.customer.pk, change.pk)
    assert change.status == "requires_action"
    page = html(client.get(response.url))
    assert "Confirm your payment" in page and eur(quote.amount_due) in page
    gateway_path = reverse("local-gateway-authenticate", args=[change.payment_reference])
    assert change.next_action_url.endswith(gateway_path)
    assert f'href="{change.next_action_url}"' in page
    assert state(setup) == before


def test_authenticating_at_the_gateway_returns_to_the_portal_and_applies_the_change(client, setup):
    setup.customer.payment_methods.update(reference="pm_card_authenticationRequired")
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    confirm(client, setup, quote)
    change = PlanChange.objects.get()
    gateway = client.post(urlparse(change.next_action_url).path, {"answer": "approve"})
    assert gateway.status_code == 302
    return_url = settings.SITE_URL.rstrip("/") + url("complete-pending", setup.customer.pk, quote.pk)
    assert gateway.url == return_url
    back = client.get(urlparse(gateway.url).path)
    assert back.status_code == 302 and back.url == url("change", setup.customer.pk, change.pk)
    change.refresh_from_db()
    assert change.status == "applied"
    sub = Subscription.objects.get(pk=setup.subscription.pk)
    assert (sub.price_id, sub.version) == (setup.pro_month.pk, 2)
    assert list(LocalPayment.objects.values_list("status", "amount_minor")) == [
        ("succeeded", int(quote.amount_due * 100))]
    page = html(client.get(back.url))
    assert "You are on Pro now" in page and f'data-testid="amount-paid">{eur(quote.amount_due)}<' in page


def test_i_have_confirmed_it_completes_the_change(client, setup):
    """The customer authenticated but the gateway's notice has not arrived: the button asks the gateway."""
    setup.customer.payment_methods.update(reference="pm_card_authenticationRequired")
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    confirm(client, setup, quote)
    change = PlanChange.objects.get()
    local_payment_authenticate(reference=change.payment_reference, approve=True)
    assert PlanChange.objects.get().status == "requires_action"
    response = client.post(url("complete", setup.customer.pk, change.pk))
    assert response.url == url("change", setup.customer.pk, change.pk)
    assert PlanChange.objects.get().status == "applied"
    assert Subscription.objects.get(pk=setup.subscription.pk).price_id == setup.pro_month.pk


def test_failing_authentication_at_the_gateway_changes_nothing(client, setup):
    setup.customer.payment_methods.update(reference="pm_card_authenticationRequired")
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    before = state(setup)
    confirm(client, setup, quote)
    change = PlanChange.objects.get()
    gateway = client.post(urlparse(change.next_action_url).path, {"answer": "fail"})
    back = client.get(urlparse(gateway.url).path)
    page = html(client.get(back.url))
    assert PlanChange.objects.get().status == "failed"
    assert "The payment was not authenticated." in page
    assert state(setup) == before


def test_cancelling_a_change_waiting_for_authentication(client, setup):
    setup.customer.payment_methods.update(reference="pm_card_authenticationRequired")
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    confirm(client, setup, quote)
    change = PlanChange.objects.get()
    response = client.post(url("change-cancel", setup.customer.pk, change.pk))
    assert response.url == url("overview", setup.customer.pk)
    assert PlanChange.objects.get().status == "cancelled"
    assert LocalPayment.objects.get().status == "canceled"
    page = html(client.get(url("change", setup.customer.pk, change.pk)))
    assert "This change was cancelled" in page


# --- scheduled changes --------------------------------------------------------------------------------


def test_a_downgrade_is_scheduled_and_the_overview_cancels_it(client, setup):
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup, plan=setup.basic, seats=3)
    assert quote.direction == "downgrade" and quote.timing == "period_end"
    review = html(client.get(url("review", setup.customer.pk, quote.pk)))
    assert "Nothing to prorate: the change takes effect at the end of your billing period." in review
    assert "Confirm change" in review
    response = confirm(client, setup, quote)
    change = PlanChange.objects.get()
    assert response.url == url("change", setup.customer.pk, change.pk)
    assert change.status == "scheduled" and not LocalPayment.objects.exists()
    assert Subscription.objects.get(pk=setup.subscription.pk).quantity == 5
    page = html(client.get(response.url))
    assert "Your change is scheduled" in page and "You move to Basic on" in page
    overview = html(client.get(url("overview", setup.customer.pk)))
    form_action = url("change-cancel", setup.customer.pk, change.pk)
    assert f'action="{form_action}"' in overview
    response = client.post(form_action, follow=True)
    assert response.redirect_chain == [(url("overview", setup.customer.pk), 302)]
    assert "The scheduled change is cancelled; nothing changes." in messages_of(response)
    assert PlanChange.objects.get().status == "cancelled"
    assert "Scheduled:" not in html(response)
    assert Subscription.objects.get(pk=setup.subscription.pk).quantity == 5


def test_cancelling_an_applied_change_is_refused_with_a_message(client, setup):
    logged_in(client, setup.owner)
    quote = quote_via_portal(client, setup)
    confirm(client, setup, quote)
    change = PlanChange.objects.get()
    response = client.post(url("change-cancel", setup.customer.pk, change.pk), follow=True)
    assert response.status_code == 200
    assert "This change is applied and can no longer be cancelled." in messages_of(response)
    assert PlanChange.objects.get().status == "applied"


# --- billing history -----------------------------------------------------------------------------------


def test_billing_history_lists_changes_with_links_to_receipts(client, setup):
    logged_in(client, setup.owner)
    upgrade = quote_via_portal(client, setup)
    confirm(client, setup, upgrade)
    downgrade = quote_via_portal(client, setup, plan=setup.basic, seats=5)
    confirm(client, setup, downgrade)
    applied, scheduled = PlanChange.objects.order_by("pk")
    assert (applied.status, scheduled.status) == ("applied", "scheduled")
    response = client.get(url("billing", setup.customer.pk))
    assert response.status_code == 200
    page = html(response)
    documents, changes = page.split("Plan changes</h2>")
    invoice = applied.invoices.get()
    assert re.findall(r"<tr>\s*<td>.*?</tr>", documents, re.S)[0].count(invoice.number) == 1
    rows = re.findall(r"<tr>\s*<td>.*?</tr>", changes, re.S)
    assert len(rows) == 2
    assert url("change", setup.customer.pk, scheduled.pk) in rows[0] and "Details" in rows[0]
    assert url("change", setup.customer.pk, applied.pk) in rows[1] and "Receipt" in rows[1]
    assert "Basic × 5 → Pro × 5" in rows[1] and eur(applied.amount_due) in rows[1]
    receipt = html(client.get(url("change", setup.customer.pk, applied.pk)))
    assert f'data-testid="amount-paid">{eur(applied.amount_due)}<' in receipt


def test_billing_history_when_empty(client, setup):
    page = html(logged_in(client, setup.member).get(url("billing", setup.customer.pk)))
    assert "No plan changes yet." in page


# --- roles ---------------------------------------------------------------------------------------------


def _open_quote(s) -> Quote:
    return quote_create(subscription=subscription(s), to_price=s.pro_month, quantity=5, now=timezone.now(),
                        actor=s.owner)


def _scheduled_change(s) -> PlanChange:
    quote = quote_create(subscription=subscription(s), to_price=s.basic_month, quantity=3, now=timezone.now(),
                         actor=s.owner)
    return quote_accept(quote=quote, actor=s.owner, now=timezone.now())


def _change_waiting_for_authentication(s) -> PlanChange:
    s.customer.payment_methods.update(reference="pm_card_authenticationRequired")
    change = quote_accept(quote=_open_quote(s), actor=s.owner, now=timezone.now())
    assert change.status == "requires_action"
    local_payment_authenticate(reference=change.payment_reference, approve=True)  # completing would apply it
    return change


def test_a_member_cannot_request_a_review(client, setup):
    response = logged_in(client, setup.member).post(url("review-create", setup.customer.pk, setup.subscription.pk),
                                                    {"plan": setup.pro.pk, "interval": "month", "seats": 5})
    assert response.status_code == 403
    assert "Only the account" in html(response)
    response = client.post(url("review-create", setup.customer.pk, setup.subscription.pk), {"cancel": "1"})
    assert response.status_code == 403
    assert not Quote.objects.exists()


def test_a_member_cannot_confirm(client, setup):
    quote = _open_quote(setup)
    before = state(setup)
    response = logged_in(client, setup.member).post(url("confirm", setup.customer.pk, quote.pk), {"token": "t"})
    assert response.status_code == 403
    assert not PlanChange.objects.exists() and not LocalPayment.objects.exists()
    assert not IdempotencyKey.objects.exists()
    assert Quote.objects.get(pk=quote.pk).status == "open"
    assert state(setup) == before


def test_a_member_cannot_cancel_a_scheduled_change(client, setup):
    change = _scheduled_change(setup)
    response = logged_in(client, setup.member).post(url("change-cancel", setup.customer.pk, change.pk))
    assert response.status_code == 403
    assert PlanChange.objects.get(pk=change.pk).status == "scheduled"


def test_a_member_cannot_complete_a_payment(client, setup):
    change = _change_waiting_for_authentication(setup)
    before = state(setup)
    response = logged_in(client, setup.member).post(url("complete", setup.customer.pk, change.pk))
    assert response.status_code == 403
    assert client.get(url("complete-pending", setup.customer.pk, change.quote_id)).status_code == 403
    assert PlanChange.objects.get(pk=change.pk).status == "requires_action"
    assert state(setup) == before


def test_a_member_can_read_every_page(client, setup):
    quote = _open_quote(setup)
    change = _scheduled_change(setup)
    logged_in(client, setup.member)
    for address in (url("overview", setup.customer.pk), plans_url(setup), url("billing", setup.customer.pk),
                    url("review", setup.customer.pk, quote.pk), url("change", setup.customer.pk, change.pk),
                    url("cancel", setup.customer.pk, setup.subscription.pk)):
        assert client.get(address).status_code == 200, address
    assert client.get(price_url(setup, setup.pro), {"seats": 5}, HTTP_HX_REQUEST="true").status_code == 200


# --- another customer's objects --------------------------------------------------------------------------


@pytest.fixture
def objects(setup):
    """A quote and a scheduled change of `setup`'s customer."""
    return {"quote": _open_quote(setup), "change": _scheduled_change(setup)}


def _addresses(s, objects) -> list[tuple[str, str, dict]]:
    c, sub = s.customer.pk, s.subscription.pk
    quote, change = objects["quote"].pk, objects["change"].pk
    return [
        ("get", url("overview", c), {}),
        ("get", url("billing", c), {}),
        ("get", url("plans", c, sub), {}),
        ("get", url("plan-price", c, sub, s.pro.pk) + "?seats=5", {"HTTP_HX_REQUEST": "true"}),
        ("get", url("plan-price", c, sub, s.pro.pk) + "?seats=5", {}),
        ("get", url("cancel", c, sub), {}),
        ("get", url("review", c, quote), {}),
        ("get", url("change", c, change), {}),
        ("get", url("complete-pending", c, quote), {}),
        ("post", url("review-create", c, sub), {"data": {"plan": s.pro.pk, "interval": "month", "seats": 5}}),
        ("post", url("review-create", c, sub), {"data": {"cancel": "1"}}),
        ("post", url("confirm", c, quote), {"data": {"token": "t"}}),
        ("post", url("change-cancel", c, change), {}),
        ("post", url("complete", c, change), {}),
    ]


def test_another_customers_owner_gets_404_everywhere(client, setup, objects, outsider):
    logged_in(client, outsider)
    quotes, changes = Quote.objects.count(), list(PlanChange.objects.values_list("pk", "status"))
    for method, address, kwargs in _addresses(setup, objects):
        response = getattr(client, method)(address, **kwargs)
        assert response.status_code == 404, (method, address, response.status_code)
    assert Quote.objects.count() == quotes
    assert list(PlanChange.objects.values_list("pk", "status")) == changes
    assert not LocalPayment.objects.exists() and not IdempotencyKey.objects.exists()


def test_another_customers_objects_under_ones_own_account_are_404(client, setup, objects, outsider):
    own = Membership.objects.get(user=outsider).customer_id
    logged_in(client, outsider)
    assert client.get(url("overview", own)).status_code == 200
    sub, quote, change = setup.subscription.pk, objects["quote"].pk, objects["change"].pk
    for method, address, kwargs in [
        ("get", url("plans", own, sub), {}),
        ("get", url("plan-price", own, sub, setup.pro.pk) + "?seats=5", {"HTTP_HX_REQUEST": "true"}),
        ("get", url("cancel", own, sub), {}),
        ("get", url("review", own, quote), {}),
        ("get", url("change", own, change), {}),
        ("post", url("review-create", own, sub), {"data": {"plan": setup.pro.pk, "interval": "month", "seats": 5}}),
        ("post", url("confirm", own, quote), {"data": {"token": "t"}}),
        ("post", url("change-cancel", own, change), {}),
        ("post", url("complete", own, change), {}),
    ]:
        response = getattr(client, method)(address, **kwargs)
        assert response.status_code == 404, (method, address, response.status_code)
    assert PlanChange.objects.get(pk=change).status == "scheduled"
    assert Quote.objects.get(pk=quote).status == "open" and not LocalPayment.objects.exists()


# --- German ----------------------------------------------------------------------------------------------


def test_money_is_formatted_in_german_after_switching_language(client, setup):
    BalanceEntry.objects.create(customer=setup.customer, currency="EUR", amount=Decimal("1234.56"),
                                kind=BalanceEntry.Kind.ADJUSTMENT, description="Goodwill", created_at=timezone.now())
    logged_in(client, setup.owner)
    overview = url("overview", setup.customer.pk)
    english = html(client.get(overview))
    assert eur("1234.56") in english and eur("1234.56", "de") not in english
    response = client.post(reverse("set_language"), {"language": "de", "next": overview})
    assert response.status_code == 302
    page = html(client.get(overview))
    assert '<html lang="de">' in page
    assert eur("1234.56", "de") in page  # 1.234,56 €
    assert eur(setup.basic_month.unit_amount, "de") in page
    assert eur("1234.56") not in page


def test_live_price_and_review_in_german_by_accept_language(client, setup):
    logged_in(client, setup.owner)
    response = client.get(price_url(setup, setup.pro), {"interval": "month", "seats": 40},
                          HTTP_HX_REQUEST="true", HTTP_ACCEPT_LANGUAGE="de")
    expected = quote_price(subscription=subscription(setup), to_price=setup.pro_month, quantity=40, now=timezone.now())
    assert expected.amount_due >= 1000  # so the thousands separator shows
    assert f'data-testid="due-{setup.pro.pk}">{eur(expected.amount_due, "de")}<' in html(response)
    quote = quote_via_portal(client, setup, seats=40)
    page = html(client.get(url("review", setup.customer.pk, quote.pk), HTTP_ACCEPT_LANGUAGE="de"))
    assert f'data-testid="amount-due">{eur(quote.amount_due, "de")}<' in page
