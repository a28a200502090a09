"""The plan-change journey in a real browser: live prices without a reload, review, pay, what is unlocked;
a declined card; a member who may only look; and the same journey with JavaScript switched off."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import Customer, LocalPayment, PlanChange, Quote, Subscription
from entitlements.selectors import entitlements_for_customer
from portal.selectors import billing_contacts, unlocked_features
from portal.tests.browser.support import money, portal_setup, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def open_plans(page) -> None:
    with page.expect_navigation():
        page.get_by_role("navigation", name="Account").get_by_role("link", name="Plans").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Analytics plans")


def type_seats(page, plan, seats: int) -> None:
    """Type into the plan's seats input as a person does: select what is there, type the new number."""
    field = page.locator(f"#seats-{plan.pk}")
    field.click()
    field.press("Control+a")
    field.press_sequentially(str(seats), delay=40)


def id_in(url: str, kind: str) -> int:
    return int(re.search(rf"/{kind}/(\d+)/", url).group(1))


def review_matches_the_quote(page) -> Quote:
    quote = Quote.objects.get(pk=id_in(page.url, "quotes"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Review your change")
    expect(page.get_by_test_id("amount-due")).to_have_text(money(quote.amount_due, quote.currency))
    return quote


def success_shows_the_change(page, customer: Customer, quote: Quote) -> PlanChange:
    change = PlanChange.objects.get(pk=id_in(page.url, "changes"))
    assert change.quote_id == quote.pk and change.status == PlanChange.Status.APPLIED
    expect(page.get_by_role("heading", level=1)).to_have_text(f"You are on {quote.to_price.plan.name} now")
    expect(page.get_by_test_id("amount-paid")).to_have_text(money(quote.amount_due, quote.currency))
    # What is unlocked comes from the entitlements, never from the template.
    entitled = [e for e in entitlements_for_customer(customer=Customer.objects.get(pk=customer.pk)) if e.enabled]
    _, unlocked = unlocked_features(change=change, customer=customer)
    assert entitled and unlocked
    features = page.get_by_role("region", name="Available to you now").get_by_role("listitem")
    expect(features).to_have_count(len(entitled))
    for item, entitlement in zip(features.all(), entitled, strict=True):
        expect(item).to_contain_text(entitlement.name)
        if entitlement.feature in unlocked:
            expect(item).to_contain_text("new")
    return change


def test_owner_changes_seats_and_interval_live_then_pays(live_server, new_page):
    s = portal_setup()
    page = new_page()
    sign_in(page, live_server, s.owner)
    open_plans(page)
    # The "Update price" buttons are the no-JavaScript path: hidden when htmx runs.
    update_buttons = page.get_by_role("button", name="Update price", include_hidden=True)
    expect(update_buttons).to_have_count(3)
    for button in update_buttons.all():
        expect(button).to_be_hidden()

    page.evaluate("window.__marker = 1")  # gone if the page reloads
    due = page.get_by_test_id(f"due-{s.business.pk}")
    before = due.inner_text()
    with page.expect_response(lambda r: f"/plans/{s.business.pk}/price/" in r.url):
        type_seats(page, s.business, 12)
    expect(due).not_to_have_text(before)
    price_box = page.locator(f"#price-{s.business.pk}")
    expect(price_box).to_contain_text("then €1,285.20 per month")  # 12 × €90 + 19 % tax
    expect(price_box.get_by_role("button", name="Choose Business")).to_be_visible()
    assert page.evaluate("window.__marker") == 1, "the page reloaded"

    toggle = page.get_by_role("navigation", name="Billing interval")
    toggle.get_by_role("link", name="Annual").click()
    expect(toggle.get_by_role("link", name="Annual")).to_have_attribute("aria-current", "true")
    expect(page).to_have_url(re.compile(r"interval=year"))  # hx-push-url: the address can be shared
    header = page.get_by_role("columnheader", name=re.compile("^Pro"))
    expect(header).to_contain_text(re.compile(r"€500\.00\s+per seat / year"))
    expect(header).to_contain_text("you save €500.00 (16.7%) a year against monthly")  # 5 seats × €100
    expect(page.locator(f"#price-{s.business.pk}")).to_contain_text("Not available with this billing interval")
    assert page.evaluate("window.__marker") == 1, "the interval toggle reloaded the page"

    due = page.get_by_test_id(f"due-{s.pro.pk}")
    before = due.inner_text()
    type_seats(page, s.pro, 7)
    expect(due).not_to_have_text(before)
    expect(page.locator(f"#price-{s.pro.pk}")).to_contain_text("then €4,165.00 per year")  # 7 × €500 + 19 %
    assert page.evaluate("window.__marker") == 1

    with page.expect_navigation():
        page.get_by_role("button", name="Choose Pro").click()
    quote = review_matches_the_quote(page)
    assert (quote.to_price_id, quote.to_quantity, quote.timing) == (s.pro_year.pk, 7, "now")
    expect(page.get_by_role("region", name="What changes")).to_contain_text("Analytics Pro × 7, year")
    with page.expect_navigation():
        page.get_by_role("button", name=f"Confirm and pay {money(quote.amount_due, quote.currency)}").click()
    change = success_shows_the_change(page, s.customer, quote)

    payments = list(LocalPayment.objects.all())
    assert len(payments) == 1
    assert payments[0].status == "succeeded"
    assert payments[0].amount_minor == int(quote.amount_due * 100)
    assert change.payment_reference == payments[0].reference
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    assert (subscription.price_id, subscription.quantity) == (s.pro_year.pk, 7)


def test_declined_card_says_so_and_changes_nothing(live_server, new_page):
    s = portal_setup(payment_method="pm_card_chargeDeclined")
    before = Subscription.objects.get(pk=s.subscription.pk)
    page = new_page()
    sign_in(page, live_server, s.owner)
    open_plans(page)
    with page.expect_navigation():
        page.get_by_role("button", name="Choose Pro").click()
    quote = review_matches_the_quote(page)
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile("^Confirm and pay")).click()

    expect(page.get_by_role("heading", level=1)).to_have_text("The payment did not go through")
    expect(page.get_by_role("alert")).to_contain_text("declined")
    expect(page.get_by_role("alert")).to_contain_text("Nothing has changed and nothing was charged.")
    expect(page.get_by_role("link", name="Try again")).to_be_visible()
    change = PlanChange.objects.get(quote=quote)
    assert change.status == PlanChange.Status.FAILED
    assert not LocalPayment.objects.filter(status="succeeded").exists()
    after = Subscription.objects.get(pk=s.subscription.pk)
    assert (after.price_id, after.quantity, after.version) == (before.price_id, before.quantity, before.version)


def test_member_sees_plans_read_only_with_who_can_change_them(live_server, new_page):
    s = portal_setup()
    page = new_page()
    sign_in(page, live_server, s.member)
    open_plans(page)
    names = ", ".join(billing_contacts(customer=s.customer))
    assert s.owner.username in names and s.billing_admin.username in names
    expect(page.locator("main")).to_contain_text(
        f"You can compare plans; changes are made by the account's owners and billing admins: {names}.")
    expect(page.get_by_role("button", name=re.compile("^Choose"))).to_have_count(0)
    expect(page.get_by_role("link", name="Downgrade or cancel")).to_have_count(0)
    # Live prices still work for looking.
    due = page.get_by_test_id(f"due-{s.pro.pk}")
    before = due.inner_text()
    type_seats(page, s.pro, 9)
    expect(due).not_to_have_text(before)
    expect(page.get_by_role("button", name=re.compile("^Choose"))).to_have_count(0)
    assert not Quote.objects.exists()


def test_the_journey_without_javascript(live_server, new_page, screenshots_dir):
    s = portal_setup()
    page = new_page(javascript=False)
    sign_in(page, live_server, s.owner)
    open_plans(page)

    due = page.get_by_test_id(f"due-{s.pro.pk}")
    before = due.inner_text()
    pro_seats = page.locator("form.seats-form", has=page.locator(f"#seats-{s.pro.pk}"))
    update = pro_seats.get_by_role("button", name="Update price")
    expect(update).to_be_visible()
    page.screenshot(path=str(screenshots_dir / "plans-no-javascript-desktop.png"), full_page=True)
    pro_seats.get_by_label("Seats").fill("9")
    with page.expect_navigation():  # a full page load: GET the price, redirected to the plans page
        update.click()
    expect(page).to_have_url(re.compile(rf"/plans/\?.*seats_{s.pro.pk}=9"))
    expect(page.locator(f"#seats-{s.pro.pk}")).to_have_value("9")
    expect(due).not_to_have_text(before)
    expect(page.locator(f"#price-{s.pro.pk}")).to_contain_text("then €535.50 per month")  # 9 × €50 + 19 %

    with page.expect_navigation():
        page.get_by_role("navigation", name="Billing interval").get_by_role("link", name="Annual").click()
    expect(page).to_have_url(re.compile(r"interval=year"))
    pro_seats = page.locator("form.seats-form", has=page.locator(f"#seats-{s.pro.pk}"))
    pro_seats.get_by_label("Seats").fill("9")
    with page.expect_navigation():
        pro_seats.get_by_role("button", name="Update price").click()
    expect(page.locator(f"#price-{s.pro.pk}")).to_contain_text("then €5,355.00 per year")  # 9 × €500 + 19 %

    with page.expect_navigation():
        page.get_by_role("button", name="Choose Pro").click()
    quote = review_matches_the_quote(page)
    assert (quote.to_price_id, quote.to_quantity) == (s.pro_year.pk, 9)
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile("^Confirm and pay")).click()
    success_shows_the_change(page, s.customer, quote)
    assert LocalPayment.objects.filter(status="succeeded").count() == 1
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    assert (subscription.price_id, subscription.quantity) == (s.pro_year.pk, 9)
    assert timezone.now() < quote.expires_at
