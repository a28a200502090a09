"""The cancel-with-offer journey in a real browser: survey → the offer with its amount → accept → the overview shows
the discount; and survey → "No thanks" → review → confirm → the overview shows the end date → keep the
subscription, with and without JavaScript. Pages are checked with axe and screenshotted."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from billing.models import PlanChange, Subscription
from portal.tests.browser.conftest import DESKTOP, PHONE
from portal.tests.browser.support import money, sign_in
from retention.models import ExitSurvey, OfferPresentation
from retention.tests.factories import exit_setup

pytestmark = pytest.mark.django_db(transaction=True)


def serious(violations: list[dict]) -> list[dict]:
    return [v for v in violations if v["impact"] in ("serious", "critical")]


def open_survey(page, x) -> None:
    with page.expect_navigation():
        page.get_by_role("link", name="Downgrade or cancel").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Downgrade or cancel")


def answer(page, reason_label: str) -> None:
    page.get_by_label("Cancel at the end of the billing period").check()
    page.get_by_label(reason_label).check()
    with page.expect_navigation():
        page.get_by_role("button", name="Continue").click()


def test_cancel_flow_accepting_the_discount(live_server, new_page, axe, screenshots_dir):
    x = exit_setup()
    page = new_page()
    sign_in(page, live_server, x.s.owner)
    open_survey(page, x)
    assert not serious(axe(page)), axe(page)
    page.screenshot(path=str(screenshots_dir / "exit-survey-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(screenshots_dir / "exit-survey-phone.png"), full_page=True)
    assert page.evaluate("""() => { const card = document.querySelector("form.card").getBoundingClientRect();
        return [...document.querySelectorAll("form.card select, form.card textarea")]
            .every(e => e.getBoundingClientRect().right <= card.right); }""")  # nothing sticks out of the card
    page.set_viewport_size(DESKTOP)
    answer(page, "Too expensive")
    expect(page.get_by_role("heading", level=1)).to_have_text("Before you go")
    discount = OfferPresentation.objects.get(offer=x.discount)
    card = page.get_by_test_id("offer-discount")
    expect(card.get_by_test_id("offer-effect")).to_contain_text(
        f"You pay {money(Decimal(discount.effect['pay']), 'EUR')} instead of "
        f"{money(Decimal(discount.effect['instead_of']), 'EUR')} for each of your next 3 renewals.")
    expect(page.get_by_role("button", name="No thanks, continue to cancel")).to_be_visible()
    assert not serious(axe(page)), axe(page)
    page.screenshot(path=str(screenshots_dir / "exit-offers-desktop.png"), full_page=True)
    with page.expect_navigation():
        card.get_by_role("button", name="Accept this offer").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(x.s.customer.name)
    expect(page.get_by_test_id(f"discount-{x.subscription.pk}")).to_contain_text("30 % off your next 3 renewals")
    expect(page.locator("main")).to_contain_text(money(Decimal("208.25"), "EUR"))
    page.screenshot(path=str(screenshots_dir / "exit-discount-overview-desktop.png"), full_page=True)
    subscription = Subscription.objects.get(pk=x.subscription.pk)
    assert (subscription.next_discount_percent, subscription.next_discount_periods) == (Decimal("30"), 3)
    assert OfferPresentation.objects.get(pk=discount.pk).status == "accepted"


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_cancel_flow_declining_then_keeping(live_server, new_page, screenshots_dir, javascript):
    x = exit_setup()
    page = new_page(javascript=javascript)
    sign_in(page, live_server, x.s.owner)
    open_survey(page, x)
    answer(page, "Too expensive")
    with page.expect_navigation():  # click 1
        page.get_by_role("button", name="No thanks, continue to cancel").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Review your cancellation")
    if not javascript:
        page.screenshot(path=str(screenshots_dir / "exit-review-cancel-no-javascript.png"), full_page=True)
    with page.expect_navigation():  # click 2
        page.get_by_role("button", name="Confirm cancellation").click()
    change = PlanChange.objects.get()
    assert change.status == "scheduled" and change.reason_code == "too_expensive"
    assert ExitSurvey.objects.get().plan_change_id == change.pk
    expect(page.locator("main")).to_contain_text("Your subscription ends on")
    with page.expect_navigation():
        page.get_by_role("navigation", name="Account").get_by_role("link", name="Overview").click()
    expect(page.locator("main")).to_contain_text(re.compile(r"This subscription ends on .+\. Everything stays"))
    page.screenshot(path=str(screenshots_dir / f"exit-ends-overview-{'js' if javascript else 'no-js'}.png"),
                    full_page=True)
    with page.expect_navigation():
        page.get_by_role("button", name="Keep my subscription").click()
    expect(page.get_by_role("button", name="Keep my subscription")).to_have_count(0)
    assert PlanChange.objects.get().status == "cancelled"
    assert Subscription.objects.get(pk=x.subscription.pk).status == "active"
