"""The renewal offer in a real browser: a monthly owner near renewal sees the annual offer card on the overview,
reviews the switch and confirms it (charged exactly the amount shown); "Not now" hides the card in place with htmx
and by a plain POST without JavaScript. The overview with the card passes axe-core; screenshots at desktop and
phone size."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import LocalPayment, PlanChange, Subscription
from portal.tests.browser.conftest import PHONE
from portal.tests.browser.support import money, portal_setup, sign_in
from retention.models import RenewalOffer, RenewalOfferDismissal
from retention.selectors.renewal_offers import renewal_offer_get

pytestmark = pytest.mark.django_db(transaction=True)


def offer_setup():
    s = portal_setup()
    now = timezone.now()
    Subscription.objects.filter(pk=s.subscription.pk).update(current_period_start=now - timedelta(days=25),
                                                             current_period_end=now + timedelta(days=5))
    RenewalOffer.objects.create(name="Annual", headline="Two months free with annual billing", window_days=14,
                                discount_percent=Decimal("10"))
    sub = Subscription.objects.select_related("customer", "price__plan__product").get(pk=s.subscription.pk)
    view, reason = renewal_offer_get(subscription=sub, now=now)
    assert view is not None, reason
    return s, view


def describe(violations: list[dict]) -> str:
    return "\n".join(f"{v['id']} ({v['impact']}) {v['help']} at {', '.join(v['targets'][:5])}" for v in violations)


def test_the_owner_switches_to_annual_from_the_card(live_server, new_page, axe: Callable, screenshots_dir):
    s, view = offer_setup()
    page = new_page()
    sign_in(page, live_server, s.owner)
    saving = money(view.first_gross.saving, "EUR")
    card = page.get_by_role("region", name=f"Switch to annual and save {saving} (25 %)")
    expect(card).to_be_visible()
    expect(card).to_contain_text("Two months free with annual billing")
    expect(card).to_contain_text(money(view.gross.saving, "EUR"))
    expect(card.get_by_test_id("renewal-offer-due")).to_have_text(money(view.quote.amount_due, "EUR"))
    violations = axe(page)
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, f"axe-core, serious or critical:\n{describe(serious)}"
    page.screenshot(path=str(screenshots_dir / "overview-renewal-offer-desktop.png"), full_page=True)

    with page.expect_navigation():
        card.get_by_role("button", name="Review the switch").click()
    expect(page.get_by_role("heading", name="Review your change")).to_be_visible()
    expect(page.get_by_test_id("first-period-discount")).to_contain_text("10 % off the first period")
    due = page.get_by_test_id("amount-due").inner_text()
    page.screenshot(path=str(screenshots_dir / "review-renewal-offer-desktop.png"), full_page=True)
    with page.expect_navigation():
        page.get_by_role("button", name=f"Confirm and pay {due}").click()
    change = PlanChange.objects.get()
    assert change.status == PlanChange.Status.APPLIED and money(change.amount_due, "EUR") == due
    assert LocalPayment.objects.filter(status="succeeded").count() == 1
    after = Subscription.objects.get(pk=s.subscription.pk)
    assert (after.price.interval, after.discount_percent, after.discount_periods_left) == ("year", 10, 0)
    page.goto(f"{live_server.url}/c/{s.customer.pk}/")
    expect(page.get_by_test_id("renewal-offer")).to_have_count(0)


def test_not_now_with_htmx_and_without_javascript(live_server, new_page, screenshots_dir):
    s, view = offer_setup()
    page = new_page(viewport=PHONE)
    sign_in(page, live_server, s.owner)
    card = page.get_by_test_id("renewal-offer")
    expect(card).to_be_visible()
    page.screenshot(path=str(screenshots_dir / "overview-renewal-offer-phone.png"), full_page=True)
    url_before = page.url
    card.get_by_role("button", name="Not now").click()
    expect(page.get_by_role("status").filter(has_text="Hidden until your next renewal")).to_be_visible()
    assert page.url == url_before  # swapped in place
    assert RenewalOfferDismissal.objects.count() == 1

    RenewalOfferDismissal.objects.all().delete()
    plain = new_page(javascript=False)
    sign_in(plain, live_server, s.owner)
    with plain.expect_navigation():
        plain.get_by_test_id("renewal-offer").get_by_role("button", name="Not now").click()
    expect(plain.get_by_text("Hidden until your next renewal")).to_be_visible()
    expect(plain.get_by_test_id("renewal-offer")).to_have_count(0)
    assert RenewalOfferDismissal.objects.count() == 1


def test_a_member_sees_the_offer_without_actions(live_server, new_page):
    s, _view = offer_setup()
    page = new_page()
    sign_in(page, live_server, s.member)
    card = page.get_by_test_id("renewal-offer")
    expect(card).to_contain_text("owners and billing admins can switch")
    expect(card.get_by_role("button")).to_have_count(0)
