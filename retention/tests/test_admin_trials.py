"""Trials in admin: listed read-only; staff can end a running trial (back to the paid plan, audited)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import AuditEvent, FeatureUsage, Subscription
from billing.tests.factories import UserFactory, live_subscription_setup
from retention.models import Trial
from retention.services.trials import trial_start

pytestmark = pytest.mark.django_db


def test_trials_and_usage_are_listed_and_a_trial_can_be_ended(client):
    s = live_subscription_setup()
    trial = trial_start(subscription=Subscription.objects.get(pk=s.subscription.pk), plan=s.pro, days=14,
                        source="plans_page", actor=s.owner, now=timezone.now() - timedelta(hours=1))
    FeatureUsage.objects.create(customer=s.customer, feature=s.feature_storage, used=3, reported_at=timezone.now())
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:retention_trial_changelist")).content.decode()
    assert str(s.customer) in page and "Active" in page
    assert client.get(reverse("admin:retention_trial_change", args=[trial.pk])).status_code == 200
    assert client.get(reverse("admin:retention_trial_add")).status_code == 403
    assert client.get(reverse("admin:billing_featureusage_changelist")).status_code == 200
    client.post(reverse("admin:retention_trial_changelist"), {"action": "end_trials_now", "_selected_action": [trial.pk]})
    assert Trial.objects.get().status == "cancelled"
    assert AuditEvent.objects.get(action="trial.ended_early").actor_label == "root"
