"""A change over the contract's budget cap in a real browser: the review page says it needs approval, the owner
submits it, the change page says "Submitted for approval"; two approvers approve it and the same page then shows
the applied change. axe-core finds nothing serious on either page, at desktop and phone sizes; screenshots in
test-artifacts/screenshots/."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import LocalPayment, PlanChange, Subscription
from billing.services.approvals import approval_request_decide
from billing.tests.factories import approval_policy, approver, contract_for
from portal.tests.browser.conftest import DESKTOP, PHONE
from portal.tests.browser.support import money, portal_setup, sign_in
from portal.tests.browser.test_every_page import OVERFLOW_JS

pytestmark = pytest.mark.django_db(transaction=True)


def serious(axe, page) -> list[str]:
    return [f"{v['id']}: {v['targets']}" for v in axe(page) if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_submitted_for_approval_then_approved_then_applied(live_server, new_page, axe, screenshots_dir, viewport):
    s = portal_setup()
    contract_for(s, budget_cap="50.00")
    approval_policy("Over the budget cap", "budget_cap", "Sales managers", "Finance")
    size = "desktop" if viewport == DESKTOP else "phone"
    page = new_page(viewport=viewport)
    sign_in(page, live_server, s.owner)

    page.goto(f"{live_server.url}/c/{s.customer.pk}/subscriptions/{s.subscription.pk}/plans/")
    with page.expect_navigation():
        page.get_by_role("button", name="Choose Pro").click()
    expect(page.get_by_test_id("needs-approval")).to_contain_text("This change needs approval before it is charged.")
    assert not serious(axe, page)
    with page.expect_navigation():
        page.get_by_role("button", name="Submit for approval").click()

    change = PlanChange.objects.get()
    assert change.status == "pending_approval" and not LocalPayment.objects.exists()
    expect(page).to_have_url(re.compile(rf"/changes/{change.pk}/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Submitted for approval")
    expect(page.get_by_role("status")).to_contain_text("Your change to Pro × 5 needs approval by our team.")
    expect(page.get_by_test_id("amount-held")).to_have_text(money(change.amount_due, "EUR"))
    assert not serious(axe, page)
    report = page.evaluate(OVERFLOW_JS)
    assert report["scrollWidth"] <= report["width"] and not report["sticking"], report
    page.screenshot(path=str(screenshots_dir / f"approval-submitted-{size}.png"), full_page=True)

    request = change.approval_requests.get()
    for step, name in zip(request.steps.order_by("position"), ("maria", "fiona"), strict=True):
        approval_request_decide(request_id=request.pk, step_id=step.pk, actor=approver(name, step.group_name),
                                approve=True, comment="", now=timezone.now())  # the last one completes it after commit

    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are on Pro now")
    expect(page.get_by_test_id("amount-paid")).to_have_text(money(change.amount_due, "EUR"))
    assert not serious(axe, page)
    page.screenshot(path=str(screenshots_dir / f"approval-applied-{size}.png"), full_page=True)
    assert Subscription.objects.get(pk=s.subscription.pk).price_id == s.pro_month.pk
    assert LocalPayment.objects.get().amount_minor == change.amount_due * 100
