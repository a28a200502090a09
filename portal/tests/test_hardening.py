"""Fixes from the portal review: each test is the one that would have caught the problem."""

from __future__ import annotations

import pytest
from django.utils import timezone

from billing.models import PlanChange, PlanFeature, Subscription
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.factories import PlanFactory, PriceFactory, ProductFactory, live_subscription_setup

pytestmark = pytest.mark.django_db


@pytest.fixture
def s():
    return live_subscription_setup()


def test_review_says_when_it_replaces_a_scheduled_cancellation(client, s):
    now = timezone.now()
    cancel = quote_create(subscription=s.subscription, to_price=None, quantity=0, now=now, actor=s.owner, cancel=True)
    quote_accept(quote=cancel, actor=s.owner, now=now)
    upgrade = quote_create(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=s.pro_month,
                           quantity=5, now=now, actor=s.owner)
    client.force_login(s.owner)
    page = client.get(f"/c/{s.customer.pk}/quotes/{upgrade.pk}/").content.decode()
    assert "This replaces your scheduled cancellation on" in page and "will go on and renew" in page


@pytest.mark.parametrize("variant", [" {u}", "{u} ", "\t{u}", "{U}"])
def test_login_limit_counts_username_variants_together(client, s, variant):
    username = s.owner.username
    for _ in range(5):
        client.post("/accounts/login/", {"username": username, "password": "wrong"})
    response = client.post("/accounts/login/", {"username": variant.format(u=username, U=username.upper()),
                                                 "password": "pw-for-tests"})
    assert response.status_code == 200 and "Too many failed sign-in attempts" in response.content.decode()


def test_login_limit_per_address_across_usernames(client, s):
    for n in range(30):
        client.post("/accounts/login/", {"username": f"nobody{n}", "password": "wrong"})
    response = client.post("/accounts/login/", {"username": s.owner.username, "password": "pw-for-tests"})
    assert "Too many failed sign-in attempts" in response.content.decode()


def test_admin_login_is_rate_limited_too(client, s):
    for _ in range(5):
        client.post("/admin/login/", {"username": "admin", "password": "wrong"})
    response = client.post("/admin/login/", {"username": "admin", "password": "wrong"})
    assert "Too many failed sign-in attempts" in response.content.decode()


@pytest.mark.parametrize("url", [
    "/c/99999999999999999999999/",
    "/c/{c}/subscriptions/{s}/plans/99999999999999999999/price/?seats=3",
])
def test_huge_ids_are_not_found_not_a_crash(client, s, url):
    client.force_login(s.owner)
    response = client.get(url.format(c=s.customer.pk, s=s.subscription.pk), HTTP_HX_REQUEST="true")
    assert response.status_code == 404


def test_non_ascii_digits_in_a_seats_parameter_are_ignored(client, s):
    client.force_login(s.owner)
    response = client.get(f"/c/{s.customer.pk}/subscriptions/{s.subscription.pk}/plans/?seats_%C2%B2=3")
    assert response.status_code == 200


def test_huge_plan_id_in_the_review_form_is_refused_with_a_message(client, s):
    client.force_login(s.owner)
    response = client.post(f"/c/{s.customer.pk}/subscriptions/{s.subscription.pk}/review/",
                           {"plan": "99999999999999999999999", "interval": "month", "seats": 5}, follow=True)
    assert response.status_code == 200 and "less than or equal to" in response.content.decode()


def test_an_expired_session_sends_htmx_to_sign_in_rather_than_swapping_the_login_page(client, s):
    url = f"/c/{s.customer.pk}/subscriptions/{s.subscription.pk}/plans/{s.pro.pk}/price/?seats=3"
    current = f"http://testserver/c/{s.customer.pk}/subscriptions/{s.subscription.pk}/plans/"
    response = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL=current)
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/accounts/login/?next=%2Fc%2F{s.customer.pk}%2Fsubscriptions%2F" \
                                      f"{s.subscription.pk}%2Fplans%2F"


def test_the_plans_page_varies_on_htmx(client, s):
    client.force_login(s.owner)
    response = client.get(f"/c/{s.customer.pk}/subscriptions/{s.subscription.pk}/plans/")
    assert "HX-Request" in response["Vary"]


def test_members_see_no_payment_actions_while_the_bank_waits(client, s):
    s.customer.payment_methods.update(reference="pm_card_authenticationRequired")
    now = timezone.now()
    q = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=now, actor=s.owner)
    change = quote_accept(quote=q, actor=s.owner, now=now)
    client.force_login(s.member)
    page = client.get(f"/c/{s.customer.pk}/changes/{change.pk}/").content.decode()
    assert "Confirm with your bank" not in page and "Only the account's owners and billing admins can confirm" in page
    client.force_login(s.owner)
    assert client.get(f"/c/{s.customer.pk}/changes/{change.pk}/complete/").status_code == 405


def test_new_badges_count_what_the_whole_account_gained(client, s):
    other = ProductFactory(code="collab")
    plan = PlanFactory(product=other, code="team")
    PlanFeature.objects.create(plan=plan, feature=s.feature_sso)  # SSO already comes with another product
    Subscription.objects.create(customer=s.customer, product=other, price=PriceFactory(plan=plan), quantity=1,
                                current_period_start=s.subscription.current_period_start,
                                current_period_end=s.subscription.current_period_end)
    now = timezone.now()
    q = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=now, actor=s.owner)
    change = quote_accept(quote=q, actor=s.owner, now=now)
    assert PlanChange.objects.get(pk=change.pk).entitlements_added == ["storage"]  # not "sso"


@pytest.mark.parametrize("path", ["subscriptions/{s}/review/", "quotes/1/confirm/", "changes/1/cancel/",
                                  "changes/1/complete/"])
def test_a_post_after_the_session_expired_comes_back_to_the_overview(client, s, path):
    response = client.post(f"/c/{s.customer.pk}/" + path.format(s=s.subscription.pk))
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=%2Fc%2F{s.customer.pk}%2F"
