"""Approvals as data: policies say which changes need approval and by which roles; requests record the decisions.

A role is a Django group (e.g. "Sales managers", "Finance"). An approver decides a step when they are in its
group and hold `billing.decide_approvalrequest`; never for their own request, and never two steps of one
request (the schema says so too: one decision per person per request).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from billing.models.catalog import validate_currency
from billing.models.contracts import Amendment
from billing.models.customers import Customer
from billing.models.subscriptions import AMOUNT, PlanChange


class ApprovalPolicy(models.Model):
    """One rule: when a change matches its trigger, the change waits for its steps' approvals.

    Every active policy that matches contributes its steps (a role named twice is asked once); the steps are
    decided in order when any matching policy says so, and the request expires after the shortest deadline.
    """

    class AppliesTo(models.TextChoices):
        BOTH = "both", _("Amendments and customer changes")
        AMENDMENTS = "amendments", _("Contract amendments")
        CUSTOMER_CHANGES = "customer_changes", _("Customer changes (portal and API)")

    class Trigger(models.TextChoices):
        ANY = "any", _("Every change")
        AMOUNT_DUE_ABOVE = "amount_due_above", _("Amount due above the threshold")
        DISCOUNT_ABOVE = "discount_above", _("Discount deeper than the threshold (percent)")
        PRICE_OVERRIDE = "price_override", _("Any price override")
        TERM_CHANGE = "term_change", _("Term change")
        BUDGET_CAP = "budget_cap", _("Amount due above the contract's budget cap")
        CHANGE_RULE = "change_rule", _("The change rule requires approval")

    position = models.PositiveIntegerField(default=100, help_text="Order in lists and in the steps' order.")
    name = models.CharField(max_length=120)
    is_active = models.BooleanField(default=True)
    applies_to = models.CharField(max_length=20, choices=AppliesTo.choices, default=AppliesTo.BOTH)
    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    threshold = models.DecimalField(
        **AMOUNT, null=True, blank=True, validators=[MinValueValidator(Decimal(0))],
        help_text="Amount due above: an amount in the currency below. Discount deeper than: a percentage (20 for "
                  "20 %), the target's price for a period against the catalog's.")
    currency = models.CharField(max_length=3, blank=True, validators=[validate_currency],
                                help_text="For amount thresholds: changes in other currencies do not match.")
    in_order = models.BooleanField(default=True, help_text="Steps are decided one after the other, in their order; "
                                                           "otherwise in any order.")
    decide_within_hours = models.PositiveIntegerField(default=72, validators=[MinValueValidator(1)],
                                                      help_text="A request not decided in time expires.")

    class Meta:
        ordering = ["position", "id"]
        verbose_name_plural = "approval policies"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.trigger in (self.Trigger.AMOUNT_DUE_ABOVE, self.Trigger.DISCOUNT_ABOVE) and self.threshold is None:
            raise ValidationError({"threshold": "This trigger needs a threshold."})
        if self.trigger == self.Trigger.AMOUNT_DUE_ABOVE and not self.currency:
            raise ValidationError({"currency": "An amount threshold is in one currency: give it."})
        if self.trigger == self.Trigger.DISCOUNT_ABOVE and self.threshold is not None and self.threshold > 100:
            raise ValidationError({"threshold": "A discount is at most 100 (percent)."})


class ApprovalPolicyStep(models.Model):
    policy = models.ForeignKey(ApprovalPolicy, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(default=1)
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="+",
                              help_text="The role that approves this step: any member with the 'decide approval "
                                        "requests' permission.")

    class Meta:
        ordering = ["policy_id", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["policy", "group"], name="approval_policy_role_once")]

    def __str__(self) -> str:
        return f"{self.position}. {self.group.name}"


class ApprovalRequest(models.Model):
    """A change held until its steps are approved: a customer's plan change or a contract amendment."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting for approval")
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected")
        EXPIRED = "expired", _("Expired undecided")
        CANCELLED = "cancelled", _("Cancelled")

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="approval_requests")
    plan_change = models.ForeignKey(PlanChange, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="approval_requests")
    amendment = models.ForeignKey(Amendment, null=True, blank=True, on_delete=models.PROTECT,
                                  related_name="approval_requests")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    in_order = models.BooleanField(default=True)
    reasons = models.JSONField(default=list, help_text="The policies that matched, and why.")
    currency = models.CharField(max_length=3)
    amount_due = models.DecimalField(**AMOUNT)
    summary = models.CharField(max_length=300)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    requested_by_label = models.CharField("requested by", max_length=150)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("decide_approvalrequest",
                        "Can approve or reject approval requests (the steps of their own groups)")]
        constraints = [
            models.CheckConstraint(condition=(Q(plan_change__isnull=False) & Q(amendment__isnull=True))
                                   | (Q(plan_change__isnull=True) & Q(amendment__isnull=False)),
                                   name="approval_request_one_subject"),
            models.UniqueConstraint(fields=["plan_change"], condition=Q(status="pending"),
                                    name="one_pending_approval_per_plan_change"),
            models.UniqueConstraint(fields=["amendment"], condition=Q(status="pending"),
                                    name="one_pending_approval_per_amendment"),
        ]
        indexes = [models.Index(fields=["status", "expires_at"], name="approval_request_due_idx")]

    def __str__(self) -> str:
        return f"Approval request {self.pk} · {self.summary}"


class ApprovalStep(models.Model):
    """One role's decision on a request. Copied from the policies when the request opens (later policy edits
    change no open request)."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting")
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected")

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="+")
    group_name = models.CharField(max_length=150, help_text="The role as it was named when the request opened.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)

    class Meta:
        ordering = ["request_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["request", "position"], name="approval_step_position_unique"),
            # Separation of duties in the schema: one person fills at most one step of a request.
            models.UniqueConstraint(fields=["request", "decided_by"], condition=Q(decided_by__isnull=False),
                                    name="approval_step_one_per_person"),
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.group_name} · {self.get_status_display()}"
