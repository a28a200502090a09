"""Thin Celery wrappers for retention: parse, read the clock once, call one service. Every task is idempotent."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from retention.services.renewal_offers import renewal_offer_emails_queue
from retention.services.trials import trials_dispatch, trials_run


@shared_task(name="retention.tasks.send_renewal_offer_emails")
def send_renewal_offer_emails() -> int:
    """Beat (hourly): renewal-offer emails now due, once per subscription and period (the outbox key)."""
    return renewal_offer_emails_queue(now=timezone.now())


@shared_task(name="retention.tasks.sweep_trials")
def sweep_trials() -> int:
    """Beat, every minute: trial reminders that are due, and the trials whose end has come, in chunks."""
    return trials_dispatch(now=timezone.now())


@shared_task(name="retention.tasks.end_trials")
def end_trials(trial_ids: list[int]) -> int:
    """A chunk of trials to end (convert or fall back), each exactly once even if the chunk is delivered twice."""
    return trials_run(trial_ids=trial_ids, now=timezone.now())
