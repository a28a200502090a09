"""The seeded back-office groups and their demo users: what each one can and cannot open."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from billing.management.commands.seed_demo import DEMO_PASSWORD, RETENTION_GROUPS, STAFF_GROUPS
from billing.models import Customer, Invoice, Price, Subscription
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo():
    call_command("seed_demo", stdout=io.StringIO())
    acme = Customer.objects.get(name="Acme GmbH")
    subscription = Subscription.objects.get(customer=acme, product__code="analytics")
    business = Price.objects.get(plan__product__code="analytics", plan__code="business", currency="EUR",
                                 interval="month")
    now = timezone.now()
    quote = quote_create(subscription=subscription, to_price=business, quantity=5, now=now, actor=None)
    change = quote_accept(quote=quote, actor=None, now=now)
    assert change.status == "applied"
    return {"customer": acme, "subscription": subscription, "change": change,
            "invoice": Invoice.objects.get(plan_change=change)}


def pages(demo) -> dict[str, str]:
    return {
        "customers": reverse("admin:billing_customer_changelist"),
        "support view": reverse("admin:billing_customer_support", args=[demo["customer"].pk]),
        "subscriptions": reverse("admin:billing_subscription_changelist"),
        "plan changes": reverse("admin:billing_planchange_changelist"),
        "quotes": reverse("admin:billing_quote_changelist"),
        "prices": reverse("admin:billing_price_changelist"),
        "audit trail": reverse("admin:billing_auditevent_changelist"),
        "invoices": reverse("admin:billing_invoice_changelist"),
        "invoice PDF": reverse("admin:billing_invoice_pdf", args=[demo["invoice"].pk]),
        "invoice export": reverse("admin:billing_invoice_export"),
        "rollback": reverse("admin:billing_planchange_rollback", args=[demo["change"].pk]),
        "emergency upgrade": reverse("admin:billing_subscription_emergency_upgrade", args=[demo["subscription"].pk]),
        "add a change rule": reverse("admin:billing_changerule_add"),
        "exchange rates": reverse("admin:billing_exchangerate_changelist"),
        "feature usage": reverse("admin:billing_featureusage_changelist"),
        "retention report": reverse("admin:retention_report"),
        "exit surveys": reverse("admin:retention_exitsurvey_changelist"),
        "trials": reverse("admin:retention_trial_changelist"),
        "add a retention offer": reverse("admin:retention_retentionoffer_add"),
        "add a win-back campaign": reverse("admin:retention_winbackcampaign_add"),
    }


CAN = {
    "sue": {"customers", "support view", "subscriptions", "plan changes", "quotes", "prices", "audit trail", "invoices",
            "invoice PDF", "rollback", "emergency upgrade", "feature usage", "exit surveys", "trials"},
    "sam": {"customers", "subscriptions", "plan changes", "quotes", "prices", "retention report", "exit surveys",
            "trials"},
    "maria": {"customers", "subscriptions", "plan changes", "quotes", "prices", "retention report", "exit surveys",
              "trials", "add a retention offer", "add a win-back campaign"},
    "fiona": {"customers", "support view", "subscriptions", "plan changes", "audit trail", "invoices", "invoice PDF",
              "invoice export", "rollback", "exchange rates", "retention report"},
}


@pytest.mark.parametrize("username", sorted(CAN))
def test_each_demo_user_opens_what_their_group_allows_and_nothing_else(client, demo, username):
    user = get_user_model().objects.get(username=username)
    assert user.is_staff and not user.is_superuser and user.check_password(DEMO_PASSWORD)
    client.force_login(user)
    opened = {name for name, url in pages(demo).items() if client.get(url).status_code == 200}
    assert opened == CAN[username]
    assert client.get(reverse("admin:billing_customer_change", args=[demo["customer"].pk])).status_code == 200


def test_the_groups_hold_exactly_the_documented_permissions_and_seeding_only_adds(demo):
    for name, codenames in STAFF_GROUPS.items():
        held = Group.objects.get(name=name).permissions
        assert set(held.filter(content_type__app_label="billing").values_list("codename", flat=True)) == set(
            codenames), name
        assert set(held.filter(content_type__app_label="retention").values_list("codename", flat=True)) == set(
            RETENTION_GROUPS[name]), name
        assert not held.exclude(content_type__app_label__in=("billing", "retention")).exists(), name
    finance = Group.objects.get(name="Finance")
    extra = Permission.objects.get(codename="add_legalentity")  # e.g. what another branch grants (approvals)
    finance.permissions.add(extra)
    call_command("seed_demo", stdout=io.StringIO())
    assert finance.permissions.filter(pk=extra.pk).exists()
    assert {u.username for u in get_user_model().objects.filter(groups__name__in=STAFF_GROUPS)} == set(CAN)


def test_support_can_run_the_sweep_retry_and_cancel_actions_but_not_edit_terms(client, demo):
    client.force_login(get_user_model().objects.get(username="sue"))
    subscriptions = client.get(reverse("admin:billing_subscription_changelist")).content.decode()
    changes = client.get(reverse("admin:billing_planchange_changelist")).content.decode()
    assert "retry_period_end_step" in subscriptions
    assert "cancel_scheduled_changes" in changes and "roll_back_plan_change" in changes
    page = client.get(reverse("admin:billing_subscription_change", args=[demo["subscription"].pk]))
    assert "price" not in page.context["adminform"].form.fields  # terms change only through plan changes


def test_a_rollback_with_cash_is_finance_only(client, demo):
    url = reverse("admin:billing_planchange_rollback", args=[demo["change"].pk])
    client.force_login(get_user_model().objects.get(username="sue"))
    assert b"Also pay the card part back in cash" not in client.get(url).content
    client.force_login(get_user_model().objects.get(username="fiona"))
    assert b"Also pay the card part back in cash" in client.get(url).content
