"""The back-office admin pages in a real browser: the support view passes axe-core; screenshots of the support view,
the rollback confirmation and the emergency upgrade's quote (test-artifacts/screenshots/admin-*.png)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import BalanceEntry, PlanChange, Subscription
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.services.rollbacks import plan_change_rollback
from billing.tests.factories import live_subscription_setup, staff_user
from portal.tests.browser.conftest import DESKTOP, PHONE

pytestmark = pytest.mark.django_db(transaction=True)

SUPPORT = ("support_view", "view_customer", "view_subscription", "view_planchange", "view_invoice", "view_auditevent",
           "rollback_plan_change", "emergency_upgrade", "download_invoice", "view_balanceentry")
PASSWORD = "pw-for-tests"


def accept(s, price, quantity: int, at):
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    quote = quote_create(subscription=subscription, to_price=price, quantity=quantity, now=at, actor=s.owner)
    return quote_accept(quote=quote, actor=s.owner, now=at)


@pytest.fixture
def account():
    """An upgrade rolled back, a second upgrade applied, a scheduled downgrade and a goodwill credit."""
    s = live_subscription_setup()
    now = timezone.now()
    first = accept(s, s.pro_month, 5, now - timedelta(hours=3))
    plan_change_rollback(plan_change=first, actor=staff_user("rollback_plan_change", username="rita"),
                         reason="Upgraded the wrong account", now=now - timedelta(hours=2))
    s.second = accept(s, s.business_month, 5, now - timedelta(hours=1))
    s.scheduled = accept(s, s.business_month, 4, now - timedelta(minutes=30))
    BalanceEntry.objects.create(customer=s.customer, currency="USD", amount=Decimal("12.00"), kind="adjustment",
                                description="goodwill", created_at=now)
    s.sue = staff_user(*SUPPORT, username="sue")
    return s


def admin_sign_in(page, live_server, user) -> None:
    page.goto(live_server.url + "/admin/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    assert "/admin/login/" not in page.url


def describe(violations: list[dict]) -> str:
    return "\n".join(f"{v['id']} ({v['impact']}) {v['help']} at {', '.join(v['targets'][:5])}" for v in violations)


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_the_support_view_passes_axe_and_is_screenshot(live_server, new_page, axe, screenshots_dir, account, viewport):
    page = new_page(viewport=DESKTOP if viewport == "desktop" else PHONE)
    admin_sign_in(page, live_server, account.sue)
    page.goto(f"{live_server.url}/admin/billing/customer/{account.customer.pk}/support/")
    assert page.get_by_role("heading", name=f"Support view: {account.customer.name}").is_visible()
    for section in ("Subscriptions", "Contract", "Pending and scheduled changes", "Approvals", "Recent plan changes",
                    "Invoices and credit notes", "Balance", "Entitlements now", "Payments and dunning", "Emails sent",
                    "Audit trail"):
        assert page.get_by_role("heading", name=section, exact=True).count() == 1, section
    assert page.get_by_role("region", name="Contract").inner_text().endswith("No contract.")
    page.get_by_role("link", name="Audit trail", exact=True).click()  # the in-page navigation works
    assert page.url.endswith("#audit")
    page.screenshot(path=str(screenshots_dir / f"admin-support-view-{viewport}.png"), full_page=True)
    width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1], f"the page scrolls sideways: {width}"  # wide tables scroll in their own box
    violations = axe(page)
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    if len(serious) < len(violations):
        print(f"axe, minor or moderate ({viewport}):\n{describe([v for v in violations if v not in serious])}")
    assert not serious, f"axe-core, serious or critical:\n{describe(serious)}"


def test_rollback_confirmation_and_emergency_quote_screenshots(live_server, new_page, axe, screenshots_dir, account):
    page = new_page()
    admin_sign_in(page, live_server, account.sue)
    page.goto(f"{live_server.url}/admin/billing/customer/{account.customer.pk}/support/")
    account.scheduled.refresh_from_db()
    with page.expect_navigation():  # the scheduled downgrade stands in the way: the page says so and offers no form
        page.get_by_role("link", name=f"Roll back… plan change {account.second.pk}").click()
    assert "cancel it first" in page.locator(".errornote").inner_text()
    assert page.locator("textarea").count() == 0
    page.screenshot(path=str(screenshots_dir / "admin-rollback-refused.png"), full_page=True)
    PlanChange.objects.filter(pk=account.scheduled.pk).update(status="cancelled")
    page.reload()
    assert "What the rollback will do" in page.content()
    page.screenshot(path=str(screenshots_dir / "admin-rollback-confirm.png"), full_page=True)
    assert not [v for v in axe(page) if v["impact"] in ("serious", "critical")]
    page.get_by_label("Reason").fill("Customer asked to undo it")
    with page.expect_navigation():
        page.get_by_role("button", name=f"Roll back plan change {account.second.pk}").click()
    assert "rolled back: credit note" in page.locator(".messagelist").inner_text()
    assert PlanChange.objects.get(pk=account.second.pk).status == "rolled_back"

    page.goto(f"{live_server.url}/admin/billing/subscription/{account.subscription.pk}/emergency-upgrade/")
    page.get_by_label("Upgrade to").select_option(str(account.pro_month.pk))
    page.get_by_label("Seats").fill("6")
    with page.expect_navigation():
        page.get_by_role("button", name="Price it").click()
    assert page.get_by_test_id("amount-due").is_visible(), page.locator("#content-main").inner_text()
    page.get_by_label("Reason").fill("Locked out during an outage")
    page.screenshot(path=str(screenshots_dir / "admin-emergency-upgrade-quote.png"), full_page=True)
    assert not [v for v in axe(page) if v["impact"] in ("serious", "critical")]
    with page.expect_navigation():
        page.get_by_role("button", name="Upgrade now and charge").click()
    assert "Emergency upgrade applied" in page.locator(".messagelist").inner_text()
    subscription = Subscription.objects.get(pk=account.subscription.pk)
    assert (subscription.price, subscription.quantity) == (account.pro_month, 6)
