"""Thin Celery wrappers for retention: parse, read the clock once, call one service. Every task is idempotent."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from billing.services.notifications import notification_send
from retention.services.renewal_offers import renewal_offer_emails_queue
from retention.services.trials import trials_dispatch, trials_run

logger = logging.getLogger(__name__)


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


@shared_task(name="retention.tasks.winback_sweep")
def winback_sweep() -> dict[str, int]:
    """Beat: queue every due win-back email (once per enrolment and step) and hand them to the workers."""
    from retention.services.winback import winback_sweep as sweep

    return sweep(now=timezone.now())


@shared_task(name="retention.tasks.send_winback_emails")
def send_winback_emails(notification_ids: list[int]) -> int:
    """Send a batch of queued emails. Each send claims its row, so a batch delivered twice sends each email once;
    an email that fails stays pending and billing's catch-up task (send_pending_notifications) tries it again."""
    sent = 0
    for notification_id in notification_ids:
        try:
            sent += notification_send(notification_id=notification_id, now=timezone.now())
        except Exception:
            logger.exception("win-back email %s not sent; the catch-up sweep retries it", notification_id)
    return sent
