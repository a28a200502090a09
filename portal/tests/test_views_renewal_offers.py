"""The renewal offer card on the overview, its Switch and Not now actions, and the API, through the test client.

Amounts are compared with what the selector (and so the quote service) computes, formatted as the page does.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from babel.numbers import format_currency
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Membership, PlanChange, Price, Quote, Subscription
from billing.tests.factories import CustomerFactory, MembershipFactory, live_subscription_setup
from retention.models import RenewalOffer, RenewalOfferDismissal
from retention.selectors.renewal_offers import renewal_offer_get

pytestmark = pytest.mark.django_db


def in_window(s, days_left: int = 5) -> None:
    now = timezone.now()
    Subscription.objects.filter(pk=s.subscription.pk).update(
        current_period_start=now - timedelta(days=30 - days_left), current_period_end=now + timedelta(days=days_left))
    s.subscription.refresh_from_db()


@pytest.fixture
def s():
    s = live_subscription_setup()
    in_window(s)
    RenewalOffer.objects.create(name="Annual", headline="Two months free with annual billing", window_days=14,
                                discount_percent=Decimal("10"))
    return s


@pytest.fixture
def outsider():
    return MembershipFactory(customer=CustomerFactory(), role=Membership.Role.OWNER).user


def eur(amount) -> str:
    return format_currency(Decimal(amount), "EUR", locale="en")


def url(name: str, *args) -> str:
    return reverse(f"portal:{name}", args=args)


def view_now(s):
    sub = Subscription.objects.select_related("customer", "price__plan__product").get(pk=s.subscription.pk)
    return renewal_offer_get(subscription=sub, now=timezone.now())[0]


def test_the_owner_sees_the_card_with_the_saving_and_both_actions(client, s):
    client.force_login(s.owner)
    page = client.get(url("overview", s.customer.pk)).content.decode()
    view = view_now(s)
    assert f"Switch to annual and save {eur(view.first_gross.saving)} (25 %)" in page
    assert "Two months free with annual billing" in page
    for amount in (view.gross.months_total, view.gross.period_amount, view.gross.saving,
                   view.first_gross.period_amount, view.quote.amount_due):
        assert eur(amount) in page
    assert url("renewal-offer-switch", s.customer.pk, s.subscription.pk) in page
    assert url("renewal-offer-not-now", s.customer.pk, s.subscription.pk) in page


def test_a_member_sees_the_information_but_no_actions_and_cannot_post(client, s):
    client.force_login(s.member)
    page = client.get(url("overview", s.customer.pk)).content.decode()
    assert 'data-testid="renewal-offer"' in page
    assert url("renewal-offer-switch", s.customer.pk, s.subscription.pk) not in page
    assert "owners and billing admins can switch" in page
    for name in ("renewal-offer-switch", "renewal-offer-not-now"):
        assert client.post(url(name, s.customer.pk, s.subscription.pk)).status_code == 403
    assert not Quote.objects.exists() and not RenewalOfferDismissal.objects.exists()


def test_another_customer_gets_404_and_get_is_not_allowed(client, s, outsider):
    client.force_login(outsider)
    assert client.post(url("renewal-offer-switch", s.customer.pk, s.subscription.pk)).status_code == 404
    client.force_login(s.owner)
    assert client.get(url("renewal-offer-switch", s.customer.pk, s.subscription.pk)).status_code == 405


def test_no_card_outside_the_window(client, s):
    in_window(s, days_left=20)
    client.force_login(s.owner)
    assert 'data-testid="renewal-offer"' not in client.get(url("overview", s.customer.pk)).content.decode()


def test_switch_without_javascript_reviews_then_confirms_the_exact_amount(client, s):
    client.force_login(s.billing_admin)
    shown = view_now(s)
    response = client.post(url("renewal-offer-switch", s.customer.pk, s.subscription.pk))
    quote = Quote.objects.get()
    assert response.status_code == 302 and response.url == url("review", s.customer.pk, quote.pk)
    assert quote.target_discount_percent == Decimal("10") and quote.amount_due == shown.quote.amount_due
    review = client.get(response.url).content.decode()
    assert "10 % off the first period" in review and eur(quote.amount_due) in review
    token = review.split('name="token" value="')[1].split('"')[0]
    done = client.post(url("confirm", s.customer.pk, quote.pk), {"token": token})
    change = PlanChange.objects.get()
    assert done.status_code == 302 and change.status == PlanChange.Status.APPLIED
    assert change.amount_due == shown.quote.amount_due
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert sub.price == Price.objects.get(plan=s.basic, interval="year")
    assert (sub.discount_percent, sub.discount_periods_left) == (Decimal("10"), 0)
    # the card is gone: the subscription is annual now
    assert 'data-testid="renewal-offer"' not in client.get(url("overview", s.customer.pk)).content.decode()


def test_not_now_without_javascript_and_with_htmx(client, s):
    client.force_login(s.owner)
    response = client.post(url("renewal-offer-not-now", s.customer.pk, s.subscription.pk))
    assert response.status_code == 302 and response.url == url("overview", s.customer.pk)
    page = client.get(response.url).content.decode()
    assert "Hidden until your next renewal" in page and 'data-testid="renewal-offer"' not in page
    again = client.post(url("renewal-offer-not-now", s.customer.pk, s.subscription.pk), HTTP_HX_REQUEST="true")
    assert again.status_code == 200 and "Hidden until your next renewal" in again.content.decode()
    assert RenewalOfferDismissal.objects.count() == 1
    # a switch from a stale page says why instead of failing
    stale = client.post(url("renewal-offer-switch", s.customer.pk, s.subscription.pk), follow=True)
    assert "You chose &#x27;Not now&#x27; for this renewal." in stale.content.decode()
    assert not Quote.objects.exists()


# --- API --------------------------------------------------------------------------------------


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_api_get_the_offer_as_a_member(s):
    data = api(s.member).get(reverse("api-renewal-offer", args=[s.subscription.pk])).json()
    view = view_now(s)
    assert data["available"] is True and data["offer"]["discount_percent"] == "10.00"
    assert data["every_period"]["gross"] == {"months_total": "2142.00", "period_amount": "1785.00",
                                             "saving": "357.00", "saving_percent": "16.7"}
    assert data["first_period"]["net"] == {"months_total": "1800.00", "period_amount": "1350.00",
                                           "saving": "450.00", "saving_percent": "25.0"}
    assert data["today"]["amount_due"] == str(view.quote.amount_due)
    assert data["monthly"] == {"net": "150.00", "gross": "178.50"}


def test_api_says_why_there_is_no_offer_and_hides_other_customers(s, outsider):
    in_window(s, days_left=20)
    data = api(s.owner).get(reverse("api-renewal-offer", args=[s.subscription.pk])).json()
    assert data["available"] is False and data["reason"] == "outside_window" and "14 days" in data["detail"]
    assert api(outsider).get(reverse("api-renewal-offer", args=[s.subscription.pk])).status_code == 404


def test_api_quote_then_accept(s):
    assert api(s.member).post(reverse("api-renewal-offer-quote", args=[s.subscription.pk])).status_code == 403
    response = api(s.owner).post(reverse("api-renewal-offer-quote", args=[s.subscription.pk]))
    assert response.status_code == 201 and response.json()["target_discount_percent"] == "10.00"
    quote_id = response.json()["id"]
    accepted = api(s.owner).post(reverse("api-quote-accept", args=[quote_id]), HTTP_IDEMPOTENCY_KEY="k-renewal-1")
    assert accepted.status_code in (200, 201), accepted.json()
    assert PlanChange.objects.get().amount_due == Decimal(response.json()["amount_due"])
    gone = api(s.owner).post(reverse("api-renewal-offer-quote", args=[s.subscription.pk]))
    assert gone.status_code == 422 and gone.json()["code"] == "not_monthly"


def test_openapi_schema_lists_the_renewal_offer(s):
    schema = api(s.owner).get("/api/schema/?format=json").json()
    assert "/api/subscriptions/{subscription_id}/renewal-offer/" in schema["paths"]
    assert "/api/subscriptions/{subscription_id}/renewal-offer/quote/" in schema["paths"]
