"""Races on PostgreSQL with real threads: two workers ending one trial convert it once and charge once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import AuditEvent, LocalPayment, Notification, PlanChange, Subscription
from billing.tests.factories import live_subscription_setup
from billing.tests.test_concurrency import run_in_threads
from conftest import requires_postgres
from retention.models import Trial
from retention.services.trials import trial_end, trial_start, trials_run

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


def _trial(opt_in: bool):
    s = live_subscription_setup()
    now = timezone.now() - timedelta(days=3)
    trial = trial_start(subscription=Subscription.objects.get(pk=s.subscription.pk), plan=s.pro, days=2,
                        source="plans_page", actor=s.owner, now=now, convert_opt_in=opt_in)
    return s, trial


def test_two_workers_end_one_opted_in_trial_one_outcome_one_charge():
    s, trial = _trial(opt_in=True)
    now = timezone.now()
    results = run_in_threads(2, lambda i: trial_end(trial_id=trial.pk, now=now))
    assert not [r for r in results if isinstance(r, Exception)], results
    trial.refresh_from_db()
    assert trial.status == "converted"
    assert LocalPayment.objects.count() == 1
    assert PlanChange.objects.filter(status="applied").count() == 1
    assert Subscription.objects.get(pk=s.subscription.pk).price_id == s.pro_month.pk
    assert AuditEvent.objects.filter(action="trial.converted").count() == 1
    assert Notification.objects.filter(kind="trial_converted").count() == 1


def test_ten_workers_and_a_chunk_delivered_twice_fall_back_once():
    s, trial = _trial(opt_in=False)
    now = timezone.now()
    results = run_in_threads(10, lambda i: trials_run(trial_ids=[trial.pk], now=now))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert Trial.objects.get(pk=trial.pk).status == "fell_back"
    assert AuditEvent.objects.filter(action="trial.fell_back").count() == 1
    assert Notification.objects.filter(kind="trial_fell_back").count() == 1
    assert not LocalPayment.objects.exists()


def test_ten_double_submits_start_one_trial():
    s = live_subscription_setup()
    now = timezone.now()
    results = run_in_threads(10, lambda i: trial_start(
        subscription=Subscription.objects.get(pk=s.subscription.pk), plan=s.pro, days=14, source="plans_page",
        actor=s.owner, now=now))
    started = [r for r in results if isinstance(r, Trial)]
    refused = [r for r in results if not isinstance(r, Trial)]
    assert len(started) == 1, results
    assert all(getattr(r, "code", None) in ("trial_active", "trial_used") for r in refused), refused
    assert Trial.objects.count() == 1
    assert AuditEvent.objects.filter(action="trial.started").count() == 1
