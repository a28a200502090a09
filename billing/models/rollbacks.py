"""Rollbacks of applied plan changes: staff undo a change within a window, at most once per change."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from billing.models.customers import Customer
from billing.models.invoices import Invoice
from billing.models.subscriptions import AMOUNT, AuditEvent, PlanChange, Subscription


class PlanChangeRollback(models.Model):
    """The record of one rollback: what was restored, the document that reversed the change's money, and why.

    One per plan change (the one-to-one key), so two staff members rolling back the same change at once end
    with one rollback and one credit note, whatever the checks before it saw."""

    plan_change = models.OneToOneField(PlanChange, on_delete=models.PROTECT, related_name="rollback")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="+")
    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="+")
    document = models.OneToOneField(
        Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="rollback",
        help_text="The credit note (reversing the change's invoice) or invoice (taking back a credit note's credit); "
                  "empty when the change billed nothing.")
    currency = models.CharField(max_length=3)
    balance_amount = models.DecimalField(
        **AMOUNT, help_text="Written to the customer balance: + the reversed charge held as credit, − a downgrade's "
                            "credit taken back.")
    refund_requested = models.BooleanField(
        default=False, help_text="The staff member asked to pay the card part of the charge back in cash.")
    restored = models.JSONField(help_text="The subscription's terms restored (as before the change).")
    replaced = models.JSONField(help_text="The subscription's terms the rollback replaced (as the change left them).")
    change_event = models.ForeignKey(AuditEvent, on_delete=models.PROTECT, related_name="+",
                                     help_text="The audit event of the change being rolled back.")
    reason = models.CharField(max_length=300)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Rollback of plan change {self.plan_change_id}"
