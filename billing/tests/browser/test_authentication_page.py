"""The customer's 3-D Secure step in a real browser: authenticate, and the paid change applies."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import PlanChange, Subscription
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.factories import subscription_setup

pytestmark = pytest.mark.django_db(transaction=True)


def change_waiting_for_authentication():
    s = subscription_setup(payment_method="pm_card_authenticationRequired")
    now = timezone.now()
    Subscription.objects.filter(pk=s.subscription.pk).update(
        current_period_start=now - timedelta(days=10), current_period_end=now + timedelta(days=20))
    s.subscription.refresh_from_db()
    q = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=now, actor=s.owner)
    change = quote_accept(quote=q, actor=s.owner, now=now)
    assert change.status == "requires_action"
    return s, change


def local_url(live_server, next_action_url: str) -> str:
    return live_server.url + "/" + next_action_url.split("://", 1)[1].split("/", 1)[1]


@pytest.mark.parametrize(("button", "outcome"), [("Complete authentication", "applied"),
                                                  ("Fail authentication", "failed")])
def test_customer_authenticates_in_the_browser(live_server, page, tmp_path, button, outcome):
    s, change = change_waiting_for_authentication()
    page.goto(local_url(live_server, change.next_action_url))
    assert page.get_by_role("heading", name="Confirm your payment").is_visible()
    assert page.locator("strong").first.inner_text() == f"{change.amount_due:.2f} EUR"
    page.screenshot(path=str(tmp_path / "authenticate.png"))
    with page.expect_navigation():
        page.get_by_role("button", name=button).click()
    assert page.locator("#status").inner_text() == ("Succeeded" if outcome == "applied" else "Declined")
    assert PlanChange.objects.get(pk=change.pk).status == outcome
    version = Subscription.objects.get(pk=s.subscription.pk).version
    assert version == (2 if outcome == "applied" else 1)


def test_page_is_keyboard_usable(live_server, page):
    s, change = change_waiting_for_authentication()
    page.goto(local_url(live_server, change.next_action_url))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Complete authentication"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert PlanChange.objects.get(pk=change.pk).status == "applied"
