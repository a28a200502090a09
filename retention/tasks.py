"""Thin Celery wrappers for retention: read the clock once, call one service. Every task is idempotent."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from retention.services.renewal_offers import renewal_offer_emails_queue


@shared_task(name="retention.tasks.send_renewal_offer_emails")
def send_renewal_offer_emails() -> int:
    """Beat (hourly): renewal-offer emails now due, once per subscription and period (the outbox key)."""
    return renewal_offer_emails_queue(now=timezone.now())
