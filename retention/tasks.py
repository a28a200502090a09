"""Thin Celery wrappers for win-back: parse, read the clock once, call one service. Idempotent."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from billing.services.notifications import notification_send

logger = logging.getLogger(__name__)


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
