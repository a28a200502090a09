"""Stripe webhook events, stored raw under Stripe's event id before anything acts on them."""

from __future__ import annotations

from django.db import models


class StripeEvent(models.Model):
    """One delivered event. The unique id makes a redelivery a no-op; processing happens in a task."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField(help_text="The event exactly as Stripe sent it.")
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event_id} ({self.type})"
