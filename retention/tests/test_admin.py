"""Admin: offers are validated so each can be applied as shown; surveys and shown offers are read-only records;
Django's model permissions decide who sees what."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from billing.tests.factories import UserFactory
from retention.admin_exitflow import RetentionOfferForm
from retention.tests.factories import exit_setup

pytestmark = pytest.mark.django_db

BASE = {"name": "Offer", "headline": "Offer", "flow": "any", "priority": 100, "min_tenure_days": 0,
        "cooldown_days": 365, "is_active": True}


def errors(**data) -> dict:
    form = RetentionOfferForm(data=BASE | data)
    form.is_valid()
    return form.errors


def test_offer_validation_names_the_problem():
    assert "percent_off" in errors(kind="discount", periods=3)
    assert "periods" in errors(kind="discount", percent_off="30")
    assert "amount_off" in errors(kind="discount", percent_off="30", amount_off="10", currency="EUR", periods=3)
    assert "percent_off" in errors(kind="discount", percent_off="0", periods=3)
    assert "periods" in errors(kind="pause")
    assert "target_plan" in errors(kind="crossgrade")
    assert "target_plan" in errors(kind="trial", trial_days=30)
    assert "percent_off" in errors(kind="pause", periods=2, percent_off="10")
    assert not errors(kind="discount", percent_off="30", periods=3)
    assert not errors(kind="pause", periods=2)


def test_amount_off_needs_a_currency_the_catalog_sells_and_its_digits():
    exit_setup()  # the catalog sells EUR only
    assert not errors(kind="discount", amount_off="10.00", currency="EUR", periods=3)
    assert not errors(kind="discount", amount_off="10.5", currency="eur", periods=3)
    assert "currency" in errors(kind="discount", amount_off="10", periods=3)
    assert "currency" in errors(kind="discount", amount_off="10", currency="EU", periods=3)
    assert "currency" in errors(kind="discount", amount_off="10", currency="XYZ", periods=3)
    assert "currency" in errors(kind="discount", amount_off="10", currency="USD", periods=3)  # not sold in USD
    assert "amount_off" in errors(kind="discount", amount_off="0", currency="EUR", periods=3)
    assert "amount_off" in errors(kind="discount", amount_off="-5", currency="EUR", periods=3)
    assert "amount_off" in errors(kind="discount", amount_off="10.001", currency="EUR", periods=3)  # 2 digits
    assert "periods" in errors(kind="discount", amount_off="10", currency="EUR")
    assert "currency" in errors(kind="discount", percent_off="30", currency="EUR", periods=3)
    assert "percent_off" in errors(kind="pause", periods=2, amount_off="10", currency="EUR")
    form = RetentionOfferForm(data=BASE | {"kind": "discount", "amount_off": "10", "currency": "eur", "periods": 3})
    assert form.is_valid() and form.save().currency == "EUR"


def test_trial_needs_days():
    x = exit_setup()
    assert "trial_days" in errors(kind="trial", target_plan=x.s.business.pk)
    assert not errors(kind="trial", target_plan=x.s.business.pk, trial_days=30)


def test_staff_need_the_model_permissions(client):
    x = exit_setup()
    staff = UserFactory(username="sue", is_staff=True)
    client.force_login(staff)
    assert client.get(reverse("admin:retention_retentionoffer_changelist")).status_code == 403
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="retention",
                                                          codename__in=["view_retentionoffer", "view_exitsurvey"]))
    assert client.get(reverse("admin:retention_retentionoffer_changelist")).status_code == 200
    from django.utils import timezone

    from retention.services.exit_flow import exit_survey_start

    survey = exit_survey_start(subscription=x.subscription, flow="cancel", reason_code="competitor", details="",
                               actor=x.s.owner, now=timezone.now())
    page = client.get(reverse("admin:retention_exitsurvey_change", args=[survey.pk]))
    assert page.status_code == 200 and b'name="details"' not in page.content  # read-only
    assert client.post(reverse("admin:retention_exitsurvey_change", args=[survey.pk]), {}).status_code == 403


def test_superuser_pages_render(admin_client):
    exit_setup()
    for name in ("exitreason", "retentionoffer", "exitsurvey", "offerpresentation"):
        assert admin_client.get(reverse(f"admin:retention_{name}_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:retention_retentionoffer_add")).status_code == 200
