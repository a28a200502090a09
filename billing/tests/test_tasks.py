"""Celery tasks, run by a real worker process over Redis against the test database."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import PlanChange, Subscription
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.celery_worker import CeleryWorker
from billing.tests.factories import subscription_setup
from config.celery import app
from conftest import requires_postgres, requires_redis


def scheduled_downgrade_due_now():
    s = subscription_setup()
    now = timezone.now()
    Subscription.objects.filter(pk=s.subscription.pk).update(
        price=s.pro_month, current_period_start=now - timedelta(days=10), current_period_end=now + timedelta(days=20))
    s.subscription.refresh_from_db()
    q = quote_create(subscription=s.subscription, to_price=s.basic_month, quantity=5, now=now, actor=s.owner)
    change = quote_accept(quote=q, actor=s.owner, now=now)
    PlanChange.objects.filter(pk=change.pk).update(effective_at=now - timedelta(seconds=1))
    return s, change


@pytest.mark.django_db
def test_sweep_task_applies_due_changes_eagerly():
    from billing.tasks import apply_due_changes

    s, change = scheduled_downgrade_due_now()
    assert apply_due_changes.delay().get() == 1
    assert apply_due_changes.delay().get() == 0
    assert Subscription.objects.get(pk=s.subscription.pk).price_id == s.basic_month.pk


@requires_postgres
@requires_redis
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_real_worker_over_redis_applies_the_due_change_once(tmp_path):
    s, change = scheduled_downgrade_due_now()
    worker = CeleryWorker(hostname="test", var_dir=tmp_path, loglevel="WARNING")
    app.conf.task_always_eager = False
    try:
        from billing.tasks import apply_due_changes

        # Delivered twice, as a retry or a second beat would: applied once.
        apply_due_changes.delay()
        apply_due_changes.delay()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if PlanChange.objects.get(pk=change.pk).status == "applied":
                break
            time.sleep(0.2)
        assert PlanChange.objects.get(pk=change.pk).status == "applied"
        time.sleep(1)
        assert Subscription.objects.get(pk=s.subscription.pk).version == 2
        assert PlanChange.objects.filter(status="applied").count() == 1
    finally:
        app.conf.task_always_eager = True
        output = worker.stop()
    assert "Traceback" not in output, output
