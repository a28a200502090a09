"""Staff changes run by Celery: future-dated changes and bulk jobs (from an admin selection or a CSV)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from billing.models.catalog import Price
from billing.models.customers import Customer
from billing.models.subscriptions import AMOUNT, PlanChange, Quote, Subscription


class BulkJob(models.Model):
    """A batch of staff changes: previewed with its total, confirmed, executed in chunks by workers."""

    class Status(models.TextChoices):
        PREVIEW = "preview", _("Preview: waiting for confirmation")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        CANCELLED = "cancelled", _("Cancelled")

    name = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PREVIEW)
    reason = models.CharField(max_length=300, help_text="Why these changes are made (audited on each change).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
    confirmed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+")
    confirmed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    preview_totals = models.JSONField(default=dict, blank=True,
                                      help_text="Amount due now per currency, as previewed.")

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("run_bulk_job", "Can confirm and run bulk plan changes")]

    def __str__(self) -> str:
        return self.name


class ScheduledChange(models.Model):
    """A staff change of one subscription to a price and seats at a date (now, or any date ahead). Due
    changes are applied by the sweep in date order, each through a quote and its acceptance, exactly once."""

    class Status(models.TextChoices):
        PREVIEW = "preview", _("In a bulk job's preview")
        INVALID = "invalid", _("Invalid row")
        SCHEDULED = "scheduled", _("Scheduled")
        PROCESSING = "processing", _("Being applied")
        APPLIED = "applied", _("Applied")
        HANDED_OVER = "handed_over", _("Scheduled for the period end")
        REFUSED = "refused", _("Refused")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    OPEN = (Status.SCHEDULED, Status.PROCESSING)
    DONE = (Status.APPLIED, Status.HANDED_OVER, Status.REFUSED, Status.FAILED, Status.CANCELLED, Status.INVALID)

    job = models.ForeignKey(BulkJob, null=True, blank=True, on_delete=models.CASCADE, related_name="rows")
    line_number = models.PositiveIntegerField(null=True, blank=True, help_text="The row in the uploaded CSV.")
    source = models.JSONField(default=dict, blank=True, help_text="The row as given (CSV cells or selection).")
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    subscription = models.ForeignKey(Subscription, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="scheduled_changes")
    to_price = models.ForeignKey(Price, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    to_quantity = models.PositiveIntegerField(null=True, blank=True)
    effective_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.SCHEDULED)
    preview_amount_due = models.DecimalField(**AMOUNT, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    quote = models.ForeignKey(Quote, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    plan_change = models.ForeignKey(PlanChange, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    result_code = models.CharField(max_length=50, blank=True)
    message = models.CharField(max_length=500, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)
    needs_attention = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["effective_at", "id"]
        indexes = [models.Index(fields=["status", "effective_at"], name="scheduled_change_due_idx"),
                   models.Index(fields=["job", "status"], name="scheduled_change_job_idx")]

    def __str__(self) -> str:
        return f"Scheduled change {self.pk} · {self.get_status_display()}"
