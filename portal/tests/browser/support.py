"""Data and steps shared by the portal's browser tests."""

from __future__ import annotations

from babel.numbers import format_currency
from django.utils import timezone

from billing.models import PaymentMethod, Subscription
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.factories import Setup, live_subscription_setup

PASSWORD = "pw-for-tests"


def portal_setup(**kwargs) -> Setup:
    """subscription_setup() with the billing period around now: 10 days used, 20 to go."""
    return live_subscription_setup(**kwargs)


def money(amount, currency: str) -> str:
    return format_currency(amount, currency, locale="en")


def sign_in(page, live_server, user) -> None:
    """Through the login form, as a person would; lands on the account's overview."""
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    assert "/accounts/login/" not in page.url, page.locator("main").inner_text()


def tour(live_server, s: Setup) -> dict[str, str]:
    """Every portal page with realistic content: name → absolute URL (the login page is for signed-out users).

    Builds an applied upgrade (success page), a declined one (failure page) and an open quote (review page)."""
    now = timezone.now()
    quote = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=now, actor=s.owner)
    applied = quote_accept(quote=quote, actor=s.owner, now=now)
    assert applied.status == "applied"
    PaymentMethod.objects.filter(customer=s.customer).update(reference="pm_card_chargeDeclined")
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    quote = quote_create(subscription=subscription, to_price=s.business_month, quantity=6, now=now, actor=s.owner)
    failed = quote_accept(quote=quote, actor=s.owner, now=now)
    assert failed.status == "failed"
    PaymentMethod.objects.filter(customer=s.customer).update(reference="pm_card_visa")
    review = quote_create(subscription=subscription, to_price=s.business_month, quantity=8, now=now, actor=s.owner)
    c, sub, base = s.customer.pk, s.subscription.pk, live_server.url
    return {
        "login": f"{base}/accounts/login/",
        "overview": f"{base}/c/{c}/",
        "plans": f"{base}/c/{c}/subscriptions/{sub}/plans/",
        "plans-annual": f"{base}/c/{c}/subscriptions/{sub}/plans/?interval=year",
        "review": f"{base}/c/{c}/quotes/{review.pk}/",
        "success": f"{base}/c/{c}/changes/{applied.pk}/",
        "declined": f"{base}/c/{c}/changes/{failed.pk}/",
        "billing": f"{base}/c/{c}/billing/",
        "cancel": f"{base}/c/{c}/subscriptions/{sub}/cancel/",
    }
