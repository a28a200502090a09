"""What axe cannot see on the plans page: the live parts must keep screen-reader and keyboard users in place."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from portal.tests.browser.support import portal_setup, sign_in
from portal.tests.browser.test_journey import open_plans, type_seats

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def plans_page(live_server, new_page):
    s = portal_setup()
    page = new_page()
    sign_in(page, live_server, s.owner)
    open_plans(page)
    return s, page


def test_typing_seats_keeps_focus_in_the_input(plans_page):
    s, page = plans_page
    due = page.get_by_test_id(f"due-{s.pro.pk}")
    before = due.inner_text()
    type_seats(page, s.pro, 8)
    expect(due).not_to_have_text(before)
    assert page.evaluate("document.activeElement.id") == f"seats-{s.pro.pk}"
    page.keyboard.type("0")  # still typing into the same field: 80 seats is over the limit
    expect(page.locator(f"#price-{s.pro.pk}")).to_contain_text("allows 1 to 50 seats; you asked for 80")


def test_interval_toggle_keeps_keyboard_focus(plans_page):
    s, page = plans_page
    toggle = page.get_by_role("navigation", name="Billing interval")
    toggle.get_by_role("link", name="Annual").focus()
    page.keyboard.press("Enter")
    expect(toggle.get_by_role("link", name="Annual")).to_have_attribute("aria-current", "true")
    focused = page.evaluate("document.activeElement.closest('nav.toggle') !== null")
    assert focused, "focus went to " + page.evaluate("document.activeElement.tagName")
