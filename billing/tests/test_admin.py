"""Django admin: every page renders for staff; money records and the audit trail are read-only."""

from __future__ import annotations

import pytest
from django.contrib.admin.sites import site
from django.urls import reverse

from billing.models import AuditEvent, BalanceEntry, PlanChange, Quote
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.factories import MID_JANUARY, UserFactory, subscription_setup

pytestmark = pytest.mark.django_db


@pytest.fixture
def populated():
    s = subscription_setup()
    s.subscription.price = s.pro_month
    s.subscription.save()
    q = quote_create(subscription=s.subscription, to_price=s.basic_month, quantity=5, now=MID_JANUARY, actor=s.owner)
    quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    BalanceEntry.objects.create(customer=s.customer, currency="EUR", amount="5.00", kind="adjustment",
                                description="goodwill", created_at=MID_JANUARY)
    return s


@pytest.fixture
def admin_client_(client):
    user = UserFactory(username="staff-admin", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_every_changelist_and_change_page_renders(populated, admin_client_):
    for model, _model_admin in site._registry.items():
        if model._meta.app_label != "billing":
            continue
        info = (model._meta.app_label, model._meta.model_name)
        response = admin_client_.get(reverse("admin:{}_{}_changelist".format(*info)))
        assert response.status_code == 200, model
        obj = model.objects.first()
        if obj is not None:
            response = admin_client_.get(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
            assert response.status_code == 200, model


@pytest.mark.parametrize("model", [AuditEvent, BalanceEntry, Quote])
def test_records_are_read_only_even_for_superusers(populated, admin_client_, model):
    model_admin = site._registry[model]
    request = type("R", (), {"user": UserFactory(is_superuser=True, is_staff=True)})()
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, model.objects.first())
    assert not model_admin.has_delete_permission(request, model.objects.first())
    info = (model._meta.app_label, model._meta.model_name)
    obj = model.objects.first()
    response = admin_client_.post(reverse("admin:{}_{}_delete".format(*info), args=[obj.pk]), {"post": "yes"})
    assert response.status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


def test_staff_cancels_a_scheduled_change_with_the_admin_action(populated, admin_client_):
    change = PlanChange.objects.get(status="scheduled")
    response = admin_client_.post(reverse("admin:billing_planchange_changelist"),
                                  {"action": "cancel_scheduled_changes", "_selected_action": [change.pk]}, follow=True)
    assert response.status_code == 200
    change.refresh_from_db()
    assert change.status == "cancelled" and change.failure_code == "staff_cancelled"
    assert AuditEvent.objects.filter(action="plan_change.cancelled", actor_label="staff-admin").exists()


def test_staff_without_permission_cannot_see_pages(populated, client):
    client.force_login(UserFactory(username="support-no-perms", is_staff=True))
    assert client.get(reverse("admin:billing_planchange_changelist")).status_code == 403


def test_view_only_staff_cannot_run_the_cancel_action(populated, client):
    from django.contrib.auth.models import Permission

    user = UserFactory(username="support-view-only", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_planchange"))
    client.force_login(user)
    page = client.get(reverse("admin:billing_planchange_changelist"))
    assert page.status_code == 200 and b"cancel_scheduled_changes" not in page.content
    change = PlanChange.objects.get(status="scheduled")
    client.post(reverse("admin:billing_planchange_changelist"),
                {"action": "cancel_scheduled_changes", "_selected_action": [change.pk]})
    change.refresh_from_db()
    assert change.status == "scheduled"


def test_subscription_terms_are_not_editable_in_admin(populated, admin_client_):
    model_admin = site._registry[type(populated.subscription)]
    request = type("R", (), {"user": UserFactory(is_superuser=True, is_staff=True)})()
    readonly = model_admin.get_readonly_fields(request, populated.subscription)
    assert {"price", "quantity", "current_period_start", "current_period_end", "version", "status"} <= set(readonly)


def test_price_terms_are_frozen_once_customers_use_the_price(populated, admin_client_):
    used = populated.pro_month
    no_bands = {"tiers-TOTAL_FORMS": 0, "tiers-INITIAL_FORMS": 0, "tiers_mode": "none"}  # the volume tiers inline
    response = admin_client_.post(reverse("admin:billing_price_change", args=[used.pk]), {
        "plan": used.plan_id, "currency": "EUR", "interval": "month", "unit_amount": "3000", "pricing": "per_seat",
        "min_quantity": 1, "max_quantity": 50, "tax_behavior": "exclusive", "is_active": "on", **no_bands})
    assert response.status_code == 302
    used.refresh_from_db()
    assert str(used.unit_amount) == "50.0000"
    unused = populated.pro_year
    admin_client_.post(reverse("admin:billing_price_change", args=[unused.pk]), {
        "plan": unused.plan_id, "currency": "EUR", "interval": "year", "unit_amount": "480", "pricing": "per_seat",
        "min_quantity": 1, "max_quantity": 50, "tax_behavior": "exclusive", "is_active": "on", **no_bands})
    unused.refresh_from_db()
    assert str(unused.unit_amount) == "480.0000"


def test_staff_creates_a_subscription_audited_and_checked(populated, admin_client_):
    from billing.models import Customer, Subscription

    other = Customer.objects.create(name="New Co", email="new@example.com", currency="EUR", country="DE")
    form = {"customer": other.pk, "product": populated.product.pk, "price": populated.business_month.pk,
            "quantity": 4, "seats_in_use": 0, "discount_percent": "0", "status": "active",
            "current_period_start_0": "2026-01-01", "current_period_start_1": "00:00:00",
            "current_period_end_0": "2026-02-01", "current_period_end_1": "00:00:00"}
    wrong = admin_client_.post(reverse("admin:billing_subscription_add"), {**form, "price": 999999})
    assert wrong.status_code == 200 and not Subscription.objects.filter(customer=other).exists()
    response = admin_client_.post(reverse("admin:billing_subscription_add"), form)
    assert response.status_code == 302
    created = Subscription.objects.get(customer=other)
    event = AuditEvent.objects.get(action="subscription.created")
    assert event.object_id == str(created.pk) and event.actor_label == "staff-admin"
    other.refresh_from_db()
    assert other.entitlements_version == 1
