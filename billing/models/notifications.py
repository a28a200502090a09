"""The outbox of customer emails: one row per email, written in the transaction that decides to send it."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from billing.models.customers import Customer


class Notification(models.Model):
    """One email to a customer. Its unique key (e.g. ``invoice-12-attempt-2-failed``) makes each email exist
    once per customer and step, however often a sweep or a retried task decides to send it."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting to be sent")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=60, help_text="The template: templates/emails/<kind>.{subject.txt,txt,html}.")
    key = models.CharField(max_length=150, unique=True)
    to_email = models.EmailField()
    language = models.CharField(max_length=8, default="en")
    context = models.JSONField(default=dict, help_text="Plain values the templates read (no model instances).")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_until = models.DateTimeField(null=True, blank=True,
                                         help_text="A worker is sending it until then; after that another may.")
    last_error = models.CharField(max_length=300, blank=True)
    subject = models.CharField(max_length=300, blank=True, help_text="As sent.")
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"], name="notification_pending_idx")]

    def __str__(self) -> str:
        return f"{self.kind} to {self.to_email}"
