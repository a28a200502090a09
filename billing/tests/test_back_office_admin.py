"""The back-office admin pages: the support view, emergency upgrades and rollbacks, with their permissions."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.models import (
    AuditEvent,
    BalanceEntry,
    Invoice,
    Notification,
    PlanChange,
    PlanChangeRollback,
    Subscription,
)
from billing.services.collection import invoice_collect
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.services.renewals import plan_changes_apply_due
from billing.services.rollbacks import plan_change_rollback
from billing.tests.factories import live_subscription_setup, staff_user, subscription_setup

pytestmark = pytest.mark.django_db

SUPPORT = ("support_view", "view_customer", "view_subscription", "view_planchange", "view_invoice",
           "view_auditevent", "rollback_plan_change", "emergency_upgrade", "download_invoice")


def accept(s, price, quantity: int = 5, now=None):
    now = now or timezone.now()
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    quote = quote_create(subscription=subscription, to_price=price, quantity=quantity, now=now, actor=s.owner)
    return quote_accept(quote=quote, actor=s.owner, now=now)


@pytest.fixture
def sue():
    return staff_user(*SUPPORT, username="sue")


@pytest.fixture
def lived_in():
    """An account with history: an upgrade rolled back, an upgrade paid partly from the credit, a scheduled
    downgrade, a goodwill credit in another currency and an email."""
    s = live_subscription_setup()
    now = timezone.now()
    first = accept(s, s.pro_month, now=now - timedelta(hours=3))
    rollbacker = staff_user("rollback_plan_change", username="rita")
    plan_change_rollback(plan_change=first, actor=rollbacker, reason="Wrong account", now=now - timedelta(hours=2))
    second = accept(s, s.business_month, now=now - timedelta(hours=1))
    scheduled = accept(s, s.business_month, quantity=4, now=now - timedelta(minutes=30))
    assert (first.status, second.status, scheduled.status) == ("applied", "applied", "scheduled")
    BalanceEntry.objects.create(customer=s.customer, currency="USD", amount=Decimal("12.00"), kind="adjustment",
                                description="goodwill", created_at=now)
    Notification.objects.create(customer=s.customer, kind="renewal_paid", key="demo-1", to_email="owner@example.com",
                                subject="Your invoice is paid", status="sent", created_at=now, sent_at=now)
    s.first, s.second, s.scheduled = first, second, scheduled
    return s


def support_url(s) -> str:
    return reverse("admin:billing_customer_support", args=[s.customer.pk])


# --- the support view -------------------------------------------------------------------------------------------

def test_the_support_view_shows_everything_support_needs(client, sue, lived_in):
    s = lived_in
    client.force_login(sue)
    page = client.get(support_url(s))
    assert page.status_code == 200
    html = page.content.decode()
    for heading in ("Account", "Subscriptions", "Contract", "Pending and scheduled changes", "Approvals",
                    "Recent plan changes", "Invoices and credit notes", "Balance", "Entitlements now",
                    "Payments and dunning", "Emails sent", "Audit trail"):
        assert f">{heading}</h2>" in html, heading
    assert "No contract." in html and "No approvals." in html
    view = page.context["view"]
    assert [c.pk for c in view.open_changes] == [s.scheduled.pk]
    assert {c.pk for c in view.recent_changes} == {s.first.pk, s.second.pk, s.scheduled.pk}
    numbers = set(Invoice.objects.filter(customer=s.customer).values_list("number", flat=True))
    assert len(numbers) == 3 and all(number in html for number in numbers)  # 2 invoices and the rollback's credit note
    for invoice in Invoice.objects.filter(customer=s.customer):
        assert reverse("admin:billing_invoice_pdf", args=[invoice.pk]) in html
    assert view.balances == {"USD": Decimal("12.0000"), "EUR": Decimal("0.0000")}  # the credit paid for the second
    assert "$12.00" in html
    sso = next(e for e in view.entitlements if e.feature == "sso")
    assert sso.enabled and "plan:analytics/business" in html
    assert "Your invoice is paid" in html
    assert "Visa ending 4242" in html and s.owner.username in html
    rollback_event = AuditEvent.objects.get(action="plan_change.rolled_back")
    applied_event = AuditEvent.objects.get(action="plan_change.applied", object_id=str(s.first.pk))
    assert f'href="#event-{applied_event.pk}">rolls back event #{applied_event.pk}' in html
    assert f'href="#event-{rollback_event.pk}">rolled back by event #{rollback_event.pk}' in html
    assert "by rita" in html  # who rolled the first change back
    rollback_link = reverse("admin:billing_planchange_rollback", args=[s.second.pk])
    assert rollback_link in html  # the applied change can be rolled back from here …
    assert reverse("admin:billing_planchange_rollback", args=[s.first.pk]) not in html  # … the rolled back one not


def test_the_support_view_shows_an_unpaid_renewal_and_its_attempts():
    s = subscription_setup(payment_method="pm_card_chargeDeclined")
    plan_changes_apply_due(now=s.subscription.current_period_end)
    invoice = Invoice.objects.get(billing_reason="renewal")
    invoice_collect(invoice_id=invoice.pk, now=s.subscription.current_period_end)
    from django.test import Client

    client = Client()
    client.force_login(staff_user(*SUPPORT, username="sue"))
    html = client.get(reverse("admin:billing_customer_support", args=[s.customer.pk])).content.decode()
    assert "Past due: Analytics Basic" in html
    section = html[html.index('id="collection"'):html.index('id="emails"')]
    assert invoice.number in section and "Declined (Your card was declined.)" in section
    assert "Retry schedule: 1, 3, 5 days" in section
    emails = html[html.index('id="emails"'):html.index('id="audit"')]
    assert "renewal_payment_failed" in emails and s.customer.email in emails  # queued in the outbox, not sent yet


def test_the_support_view_needs_its_permission(client, lived_in):
    client.force_login(staff_user("view_customer", username="viewer"))
    assert client.get(support_url(lived_in)).status_code == 403
    client.force_login(staff_user("support_view", username="supporter"))
    assert client.get(support_url(lived_in)).status_code == 200
    assert client.get(reverse("admin:billing_customer_support", args=[999999])).status_code == 404


def test_the_support_view_hides_what_the_user_may_not_do(client, lived_in):
    client.force_login(staff_user("support_view", username="supporter"))
    html = client.get(support_url(lived_in)).content.decode()
    assert "/rollback/" not in html and "/emergency-upgrade/" not in html and "/pdf/" not in html


def test_the_support_view_takes_few_queries_however_long_the_history(client, sue, lived_in,
                                                                     django_assert_max_num_queries):
    client.force_login(sue)
    client.get(support_url(lived_in))  # warm the session and the entitlements cache
    with CaptureQueriesContext(connection) as small:
        client.get(support_url(lived_in))
    now = timezone.now()
    for i in range(30):
        Notification.objects.create(customer=lived_in.customer, kind="renewal_paid", key=f"more-{i}",
                                    to_email="owner@example.com", created_at=now)
        BalanceEntry.objects.create(customer=lived_in.customer, currency="GBP", amount=1, kind="adjustment",
                                    description="x", created_at=now)
    with django_assert_max_num_queries(20):
        response = client.get(support_url(lived_in))
    assert response.status_code == 200
    with CaptureQueriesContext(connection) as large:
        client.get(support_url(lived_in))
    assert len(large) == len(small)


def test_the_customer_list_and_page_link_to_the_support_view(client, sue, lived_in):
    client.force_login(sue)
    listing = client.get(reverse("admin:billing_customer_changelist")).content.decode()
    assert support_url(lived_in) in listing
    page = client.get(reverse("admin:billing_customer_change", args=[lived_in.customer.pk])).content.decode()
    assert support_url(lived_in) in page


# --- emergency upgrades -----------------------------------------------------------------------------------------

def emergency_url(s) -> str:
    return reverse("admin:billing_subscription_emergency_upgrade", args=[s.subscription.pk])


def test_emergency_upgrade_from_the_admin_shows_the_quote_then_applies_it(client, sue):
    s = live_subscription_setup()
    client.force_login(sue)
    page = client.get(reverse("admin:billing_subscription_change", args=[s.subscription.pk])).content.decode()
    assert emergency_url(s) in page
    form = client.get(emergency_url(s))
    assert form.status_code == 200 and b"Price it" in form.content
    priced = client.post(emergency_url(s), {"price": s.pro_month.pk, "quantity": 5})
    quote = priced.context["quote"]
    assert quote is not None and quote.amount_due > 0
    assert f"€{quote.amount_due:.2f}" in priced.content.decode()  # what will be charged, before confirming
    no_reason = client.post(emergency_url(s), {"confirm": "1", "quote": quote.pk, "reason": ""})
    assert no_reason.status_code == 200 and no_reason.context["confirm_form"].errors["reason"]
    assert not PlanChange.objects.exists()
    done = client.post(emergency_url(s), {"confirm": "1", "quote": quote.pk, "reason": "Locked out"}, follow=True)
    change = PlanChange.objects.get()
    assert change.status == "applied" and change.reason_code == "staff_emergency_upgrade"
    invoice = Invoice.objects.get(plan_change=change)
    assert f"invoice {invoice.number}" in done.content.decode()
    assert Subscription.objects.get(pk=s.subscription.pk).price == s.pro_month


def test_emergency_upgrade_with_a_declined_card_says_so_and_changes_nothing(client, sue):
    s = live_subscription_setup(payment_method="pm_card_chargeDeclined")
    client.force_login(sue)
    quote = client.post(emergency_url(s), {"price": s.pro_month.pk, "quantity": 5}).context["quote"]
    page = client.post(emergency_url(s), {"confirm": "1", "quote": quote.pk, "reason": "Outage"}, follow=True)
    html = page.content.decode()
    assert "could not be charged" in html and "nothing was changed and nothing was charged" in html
    assert Subscription.objects.get(pk=s.subscription.pk).price == s.basic_month
    assert not Invoice.objects.exists()


def test_emergency_upgrade_refusals_are_shown_on_the_form(client, sue):
    s = live_subscription_setup()
    client.force_login(sue)
    page = client.post(emergency_url(s), {"price": s.basic_month.pk, "quantity": 2})
    assert "not an upgrade" in page.content.decode() and page.context["quote"] is None


def test_emergency_upgrade_needs_its_permission(client):
    s = live_subscription_setup()
    user = staff_user("view_subscription", "change_subscription", username="viewer")
    client.force_login(user)
    assert client.get(emergency_url(s)).status_code == 403
    assert client.post(emergency_url(s), {"price": s.pro_month.pk, "quantity": 5}).status_code == 403
    page = client.get(reverse("admin:billing_subscription_change", args=[s.subscription.pk])).content.decode()
    assert emergency_url(s) not in page
    assert not PlanChange.objects.exists()


# --- rollbacks ----------------------------------------------------------------------------------------------------

def rollback_url(change) -> str:
    return reverse("admin:billing_planchange_rollback", args=[change.pk])


def test_the_rollback_page_states_the_amounts_then_rolls_back(client, sue):
    s = live_subscription_setup()
    change = accept(s, s.pro_month)
    client.force_login(sue)
    page = client.get(reverse("admin:billing_planchange_change", args=[change.pk])).content.decode()
    assert rollback_url(change) in page
    preview = client.get(rollback_url(change))
    html = preview.content.decode()
    invoice = Invoice.objects.get(plan_change=change)
    total = f"€{invoice.total:.2f}"
    assert f"credit note of {total}</strong> reversing invoice {invoice.number}" in html
    assert f"€0.00 → <strong>{total}</strong>" in html
    assert "Basic × 5</strong>" in html and "needs the 'refund credit note' permission" in html
    assert client.post(rollback_url(change), {"reason": ""}).status_code == 200  # the form asks for the reason
    assert PlanChange.objects.get(pk=change.pk).status == "applied"
    done = client.post(rollback_url(change), {"reason": "Wrong plan", "refund": "on"}, follow=True)
    assert "rolled back: credit note" in done.content.decode()
    rollback = PlanChangeRollback.objects.get()
    assert not rollback.refund_requested  # without the refund permission the box is ignored: credit kept
    assert "Rolled back on" in client.get(reverse("admin:billing_planchange_change", args=[change.pk])).content.decode()


def test_the_rollback_page_with_refund_for_finance(client):
    s = live_subscription_setup()
    change = accept(s, s.pro_month)
    client.force_login(staff_user("rollback_plan_change", "refund_credit_note", "view_planchange", username="fiona"))
    assert b"Also pay the card part back in cash" in client.get(rollback_url(change)).content
    done = client.post(rollback_url(change), {"reason": "Double booking", "refund": "on"}, follow=True)
    assert "paid back to the card" in done.content.decode()
    assert PlanChangeRollback.objects.get().document.cash_refunds.get().status == "succeeded"


def test_the_rollback_page_explains_a_refusal_and_offers_no_form(client, sue):
    s = live_subscription_setup()
    change = accept(s, s.pro_month)
    later = accept(s, s.business_month)
    client.force_login(sue)
    html = client.get(rollback_url(change)).content.decode()
    assert 'data-code="later_change"' in html and f"Plan change {later.pk}" in html and "<textarea" not in html
    client.post(rollback_url(change), {"reason": "try anyway"})
    assert PlanChange.objects.get(pk=change.pk).status == "applied"


def test_the_rollback_page_and_action_need_the_permission(client):
    s = live_subscription_setup()
    change = accept(s, s.pro_month)
    client.force_login(staff_user("view_planchange", "change_planchange", username="viewer"))
    assert client.get(rollback_url(change)).status_code == 403
    assert client.post(rollback_url(change), {"reason": "x"}).status_code == 403
    listing = client.get(reverse("admin:billing_planchange_changelist")).content.decode()
    assert "roll_back_plan_change" not in listing
    assert PlanChange.objects.get(pk=change.pk).status == "applied"


def test_the_rollback_action_opens_the_confirmation_page(client, sue):
    s = live_subscription_setup()
    change = accept(s, s.pro_month)
    client.force_login(sue)
    response = client.post(reverse("admin:billing_planchange_changelist"),
                           {"action": "roll_back_plan_change", "_selected_action": [change.pk]})
    assert response.status_code == 302 and response["Location"] == rollback_url(change)
    assert PlanChange.objects.get(pk=change.pk).status == "applied"  # nothing happens before confirming


def test_the_support_view_lists_staff_changes_waiting_for_their_date(client, sue, lived_in):
    from billing.services.scheduled_changes import scheduled_change_create

    subscription = Subscription.objects.get(pk=lived_in.subscription.pk)
    row = scheduled_change_create(subscription=subscription, to_price=lived_in.business_month, quantity=9,
                                  effective_at=timezone.now() + timedelta(days=3), actor=sue,
                                  reason="Agreed on the phone", now=timezone.now())
    client.force_login(sue)
    html = client.get(support_url(lived_in)).content.decode()
    section = html.split("Staff changes at a date")[1].split("</section>")[0]
    assert f"#{row.pk}" in section and "Business × 9" in section and "Agreed on the phone" in section


def test_the_support_view_shows_the_contract_and_its_approvals(client):
    import io

    from django.core.management import call_command

    from billing.models import Customer

    call_command("seed_demo", stdout=io.StringIO())
    umbrella = Customer.objects.get(name="Umbrella AG")
    contract = umbrella.contracts.get()
    client.force_login(get_user_model().objects.get(username="sue"))
    html = client.get(reverse("admin:billing_customer_support", args=[umbrella.pk])).content.decode()
    section = html.split('id="contract"')[1].split("</section>")[0]
    assert contract.number in section and f"committed seats {contract.committed_seats}" in section
    assert "Negotiated prices:" in section and "Amendments:" in section
