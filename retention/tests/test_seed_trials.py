"""The demo shows a running trial (fleur) and usage over a limit (erin), and loads twice without duplicates."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import Customer, FeatureUsage
from entitlements.selectors import entitlements_for_customer
from retention.models import Trial

pytestmark = pytest.mark.django_db


def test_seed_demo_has_a_trial_ending_in_a_few_days_and_an_account_over_a_limit():
    call_command("seed_demo", stdout=io.StringIO())
    call_command("seed_demo", stdout=io.StringIO())
    trial = Trial.objects.get()
    assert trial.customer.name == "Société Exemple SA" and trial.plan.code == "business"
    assert trial.status == "active" and trial.convert_opt_in
    assert timedelta(days=3) < trial.ends_at - timezone.now() <= timedelta(days=4)
    fleur = {e.feature: e for e in entitlements_for_customer(customer=Customer.objects.get(pk=trial.customer_id))}
    assert fleur["sso"].enabled and "trial:analytics/business" in fleur["sso"].sources
    erin = {e.feature: e for e in entitlements_for_customer(customer=Customer.objects.get(name="Initech Ltd"))}
    assert (erin["storage"].used, erin["storage"].limit, erin["storage"].read_only) == (40, 25, True)
    assert FeatureUsage.objects.count() == 2
