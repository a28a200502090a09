"""Win-back in a real browser: the offer link from the email (signed out → sign in → the offer, its exact amounts,
accept once), without JavaScript and on a phone; the unsubscribe link without signing in; the staff report."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import Subscription
from billing.tests.factories import UserFactory
from portal.tests.browser.conftest import PHONE
from portal.tests.browser.support import PASSWORD, portal_setup
from retention.models import EmailOptOut, ExitReason, ExitSurvey, OfferPresentation, WinBackEnrolment
from retention.services.winback import winback_offer_url, winback_unsubscribe_url
from retention.tests.winback_support import campaigns

pytestmark = pytest.mark.django_db(transaction=True)


def local(url: str, live_server) -> str:
    return live_server.url + "/" + url.split("://", 1)[1].split("/", 1)[1]


def cancelled_and_enrolled():
    s = portal_setup()
    c = campaigns()
    now = timezone.now()
    Subscription.objects.filter(pk=s.subscription.pk).update(status="cancelled")
    enrolment = WinBackEnrolment.objects.create(customer=s.customer, campaign=c.cancel, subscription=s.subscription,
                                                triggered_at=now - timedelta(days=31), next_position=2,
                                                next_send_at=None, status="finished", created_at=now)
    return s, c, enrolment


def serious(violations: list[dict]) -> list[dict]:
    return [v for v in violations if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("javascript", [False, True])
def test_offer_link_sign_in_then_accept_once(live_server, new_page, axe: Callable, screenshots_dir, javascript):
    s, c, enrolment = cancelled_and_enrolled()
    url = local(winback_offer_url(enrolment_id=enrolment.pk, step_id=c.second.pk), live_server)
    page = new_page(javascript=javascript)
    page.goto(url)
    assert "/accounts/login/" in page.url  # signed out: sign in first, then land on the offer
    page.get_by_label("Username").fill(s.owner.username)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    assert page.url == url
    expect(page.get_by_role("heading", level=1)).to_have_text("20 % off for 3 months")
    effect = page.locator("#winback-effect")
    expect(effect).to_contain_text("€178.50")  # Basic × 5 at 30.00 + 19 % VAT, without the offer
    expect(effect).to_contain_text("€142.80")  # with 20 % off, charged today
    assert not serious(axe(page)) if javascript else True
    page.screenshot(path=str(screenshots_dir / f"winback-offer-{'js' if javascript else 'nojs'}.png"),
                    full_page=True)
    with page.expect_navigation():
        page.get_by_role("button", name="Accept the offer").click()
    expect(page.locator("#winback-accepted")).to_contain_text("Welcome back")
    page.screenshot(path=str(screenshots_dir / f"winback-accepted-{'js' if javascript else 'nojs'}.png"),
                    full_page=True)
    page.go_back()
    page.reload()  # the form again after going back: accepting is not offered twice
    expect(page.locator("#winback-accepted")).to_be_visible()
    assert Subscription.objects.filter(customer=s.customer, status="active").count() == 1


def test_offer_on_a_phone(live_server, new_page, screenshots_dir):
    s, c, enrolment = cancelled_and_enrolled()
    page = new_page(viewport=PHONE)
    page.goto(local(winback_offer_url(enrolment_id=enrolment.pk, step_id=c.second.pk), live_server))
    page.get_by_label("Username").fill(s.owner.username)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Accept the offer")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=str(screenshots_dir / "winback-offer-phone.png"), full_page=True)


def test_unsubscribe_without_signing_in_or_javascript(live_server, new_page, axe: Callable, screenshots_dir):
    s, _c, _enrolment = cancelled_and_enrolled()
    page = new_page(javascript=False)
    page.goto(local(winback_unsubscribe_url(customer_id=s.customer.pk), live_server))
    page.screenshot(path=str(screenshots_dir / "winback-unsubscribe.png"), full_page=True)
    with page.expect_navigation():
        page.get_by_role("button", name="Unsubscribe").click()
    expect(page.get_by_role("status")).to_contain_text("gets no more emails like this one")
    page.screenshot(path=str(screenshots_dir / "winback-unsubscribed.png"), full_page=True)
    assert EmailOptOut.objects.filter(customer=s.customer).exists()
    bad = new_page()
    response = bad.goto(live_server.url + "/winback/unsubscribe/nonsense/")
    assert response.status == 400
    expect(bad.get_by_role("alert")).to_contain_text("not valid")
    assert not serious(axe(bad))
    bad.screenshot(path=str(screenshots_dir / "winback-bad-link.png"), full_page=True)


def test_staff_report_in_admin(live_server, new_page, screenshots_dir):
    s, c, enrolment = cancelled_and_enrolled()
    now = timezone.now()
    reason = ExitReason.objects.create(code="too_expensive", label="Too expensive")
    survey = ExitSurvey.objects.create(customer=s.customer, subscription=s.subscription, flow="cancel", reason=reason,
                                       created_at=now)
    OfferPresentation.objects.create(survey=survey, offer=c.offer, customer=s.customer, status="accepted",
                                     currency="EUR", revenue_at_risk=Decimal("150.00"), shown_at=now)
    WinBackEnrolment.objects.filter(pk=enrolment.pk).update(status="converted", converted_at=now,
                                                            revenue_won_back=Decimal("120"), currency="EUR",
                                                            converted_step=c.second, offer_accepted_at=now)
    UserFactory(username="boss", is_staff=True, is_superuser=True)
    page = new_page()
    page.goto(live_server.url + "/admin/login/?next=/admin/retention/")
    page.get_by_label("Username").fill("boss")
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    with page.expect_navigation():
        page.get_by_role("link", name="Retention and win-back report").click()
    expect(page.locator("#content-main table, #content table").first).to_contain_text("Come back 20 %")
    expect(page.locator("#content-main table, #content table").first).to_contain_text("€150.00")
    expect(page.locator("#content table").nth(2)).to_contain_text("€120.00")
    page.screenshot(path=str(screenshots_dir / "winback-admin-report.png"), full_page=True)
