"""A past-due account in a real browser: the owner sees the unpaid renewal invoice, pays it with one click and
lands on the billing page; the billing page with the open invoice passes axe-core."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import Invoice, LocalPayment, PaymentMethod, Subscription
from billing.services.renewals import plan_changes_apply_due
from portal.tests.browser.support import money, portal_setup, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def past_due_setup():
    """The period ended a minute ago and the saved card declined the renewal (the collection task runs eagerly
    after the renewal commits); then the customer saved a card that works. Returns (setup, invoice)."""
    s = portal_setup(payment_method="pm_card_chargeDeclined")
    now = timezone.now()
    Subscription.objects.filter(pk=s.subscription.pk).update(
        current_period_start=now - timedelta(days=30), current_period_end=now - timedelta(minutes=1))
    assert plan_changes_apply_due(now=now) == 1
    invoice = Invoice.objects.get(subscription=s.subscription, billing_reason="renewal")
    assert invoice.status == "issued" and Subscription.objects.get(pk=s.subscription.pk).status == "past_due"
    PaymentMethod.objects.filter(customer=s.customer).update(reference="pm_card_visa", label="Visa ending 4242")
    return s, invoice


def describe(violations: list[dict]) -> str:
    return "\n".join(f"{v['id']} ({v['impact']}) {v['help']} at {', '.join(v['targets'][:5])}" for v in violations)


def test_the_owner_pays_the_unpaid_invoice_from_the_overview(live_server, new_page, axe: Callable,
                                                              screenshots_dir):
    s, invoice = past_due_setup()
    amount = money(invoice.amount_due, invoice.currency)
    page = new_page()
    sign_in(page, live_server, s.owner)  # lands on the overview

    alert = page.get_by_role("alert", name=f"Invoice {invoice.number}: {amount} unpaid")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("The last payment attempt failed: Your card was declined.")
    expect(alert).to_contain_text("Until it is paid, plan changes are paused.")
    page.screenshot(path=str(screenshots_dir / "overview-past-due-desktop.png"), full_page=True)

    # The billing page with the open invoice: the alert on top, the invoice listed as unpaid; axe finds nothing.
    with page.expect_navigation():
        page.get_by_role("navigation", name="Account").get_by_role("link", name="Billing").click()
    expect(page.get_by_role("alert", name=f"Invoice {invoice.number}: {amount} unpaid")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text=invoice.number)).to_contain_text("Unpaid")
    violations = axe(page)
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, f"axe-core, serious or critical:\n{describe(serious)}"
    if violations:
        print(f"axe, minor or moderate:\n{describe(violations)}")
    page.screenshot(path=str(screenshots_dir / "billing-past-due-desktop.png"), full_page=True)

    page.go_back()
    with page.expect_navigation():
        page.get_by_role("alert", name=f"Invoice {invoice.number}: {amount} unpaid").get_by_role(
            "button", name=f"Pay {amount} now").click()
    assert page.url == f"{live_server.url}/c/{s.customer.pk}/billing/"
    expect(page.get_by_role("status").filter(has_text="Thank you: the invoice is paid.")).to_be_visible()
    expect(page.get_by_role("alert", name=f"Invoice {invoice.number}: {amount} unpaid")).to_have_count(0)
    expect(page.get_by_role("row").filter(has_text=invoice.number)).to_contain_text("Paid")
    page.screenshot(path=str(screenshots_dir / "billing-paid-desktop.png"), full_page=True)

    invoice.refresh_from_db()
    assert invoice.status == "paid" and Subscription.objects.get(pk=s.subscription.pk).status == "active"
    assert LocalPayment.objects.filter(status="succeeded").count() == 1
