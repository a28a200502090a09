"""Subscriptions, quotes, plan changes, the customer balance ledger and payments."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from billing.models.catalog import Direction, Mode, Price, Product, Timing
from billing.models.customers import Customer

AMOUNT = {"max_digits": 18, "decimal_places": 4}


class Subscription(models.Model):
    class Status(models.TextChoices):
        TRIALING = "trialing", _("Trialing")
        ACTIVE = "active", _("Active")
        PAST_DUE = "past_due", _("Past due")
        CANCELLED = "cancelled", _("Cancelled")

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="subscriptions")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="subscriptions")
    quantity = models.PositiveIntegerField(default=1, help_text="Seats (1 for flat prices).")
    seats_in_use = models.PositiveIntegerField(default=0, help_text="Seats the product reports as used.")
    discount_percent = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal(0),
                                           help_text="A subscription-level discount, kept across plan changes.")
    discount_periods_left = models.PositiveSmallIntegerField(
        null=True, blank=True,
        help_text="Renewals still billed at the discount: each renewal takes one; a renewal that finds 0 ends the "
                  "discount (back to 0 %) before it invoices. Empty: the discount has no end.")
    next_discount_percent = models.DecimalField(
        max_digits=5, decimal_places=2, null=True, blank=True,
        help_text="A discount that starts at the next renewal (a retention offer): the current period was paid at "
                  "the old terms, so credits for it stay at the old discount.")
    next_discount_periods = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="How many periods the next discount lasts, counting its first. Empty: no end.")
    pause_starts_at = models.DateTimeField(
        null=True, blank=True,
        help_text="A pause (retention offer) begins at this period boundary: renewals from then until `paused until` "
                  "enter their period without an invoice; plan changes other than cancelling are refused meanwhile.")
    paused_until = models.DateTimeField(
        null=True, blank=True, help_text="The pause ends here: the renewal at this instant bills again (resumes "
                                         "automatically). Empty: not paused.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE,
                              help_text="Past due: a renewal invoice is unpaid; payment is retried on a schedule and "
                                        "no plan change is accepted until it is paid.")
    RENEWABLE = (Status.ACTIVE, Status.TRIALING, Status.PAST_DUE)
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()
    version = models.PositiveBigIntegerField(
        default=1, help_text="Bumped by every applied change; quotes are valid only for the version they priced."
    )
    sweep_failures = models.PositiveSmallIntegerField(
        default=0, help_text="Consecutive errors of the period-end step (renewal or scheduled change); reset by success.")
    sweep_error = models.CharField(max_length=500, blank=True, help_text="The last error of the period-end step.")
    sweep_retry_at = models.DateTimeField(
        null=True, blank=True, help_text="After an error, the sweep tries again from then on (backing off).")
    needs_attention = models.BooleanField(
        default=False, help_text="The period-end step kept failing: the sweep leaves it alone until staff retry it "
                                 "(admin action 'Retry the period-end step').")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["customer_id", "product_id"]
        constraints = [
            models.UniqueConstraint(fields=["customer", "product"], condition=~Q(status="cancelled"),
                                    name="one_live_subscription_per_product"),
            models.CheckConstraint(condition=Q(current_period_end__gt=models.F("current_period_start")),
                                   name="subscription_period_not_empty"),
        ]
        indexes = [models.Index(fields=["status", "current_period_end"], name="subscription_renewal_due_idx")]

    def __str__(self) -> str:
        return f"{self.customer} · {self.price.plan} × {self.quantity}"

    def pause_covers(self, moment) -> bool:
        """Whether a pause covers the period that starts (or is under way) at `moment`."""
        return (self.pause_starts_at is not None and self.paused_until is not None
                and self.pause_starts_at <= moment < self.paused_until)

    def is_paused_at(self, moment) -> bool:
        """A pause scheduled or under way at `moment` (plan changes wait for its end or an early resume)."""
        return self.paused_until is not None and moment < self.paused_until


class Quote(models.Model):
    """A priced, explained, expiring offer for one change, computed at one instant."""

    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        ACCEPTED = "accepted", _("Accepted")

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="quotes")
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="quotes")
    subscription_version = models.PositiveBigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    from_price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="+")
    from_quantity = models.PositiveIntegerField()
    to_price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="+")
    to_quantity = models.PositiveIntegerField()
    direction = models.CharField(max_length=12, choices=Direction.choices)
    change_rule = models.ForeignKey("billing.ChangeRule", null=True, on_delete=models.SET_NULL, related_name="+")
    timing = models.CharField(max_length=12, choices=Timing.choices)
    credit_mode = models.CharField(max_length=10, choices=Mode.choices)
    charge_mode = models.CharField(max_length=10, choices=Mode.choices)
    requires_approval = models.BooleanField(default=False)
    effective_at = models.DateTimeField()
    currency = models.CharField(max_length=3)
    lines = models.JSONField(default=list)
    subtotal = models.DecimalField(**AMOUNT)
    tax_rate = models.DecimalField(max_digits=7, decimal_places=5, null=True)
    tax_inclusive = models.BooleanField(default=False)
    reverse_charge = models.BooleanField(default=False)
    tax = models.DecimalField(**AMOUNT)
    total = models.DecimalField(**AMOUNT)
    balance_before = models.DecimalField(**AMOUNT)
    balance_applied = models.DecimalField(**AMOUNT)
    amount_due = models.DecimalField(**AMOUNT)
    balance_after = models.DecimalField(**AMOUNT)
    new_period_start = models.DateTimeField()
    new_period_end = models.DateTimeField()
    next_period_amount = models.DecimalField(**AMOUNT, help_text="What each period costs from the next renewal, tax included.")
    next_period_tax = models.DecimalField(**AMOUNT)
    supersedes = models.JSONField(default=list, help_text="Scheduled changes this change replaces.")
    target_discount_percent = models.DecimalField(
        max_digits=5, decimal_places=2, null=True, blank=True,
        help_text="An offer's discount on the target's first period only (a renewal-window annual offer): the charge "
                  "is priced with it instead of the subscription's discount; accepting sets it on the subscription "
                  "with no periods left, so the next renewal bills list price. Empty: the subscription's discount.")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Quote {self.pk} · {self.customer}"


class PlanChange(models.Model):
    """The record of a change being executed: pending → applied | failed, or scheduled → applied."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending payment")
        PENDING_APPROVAL = "pending_approval", _("Waiting for approval")
        REQUIRES_ACTION = "requires_action", _("Waiting for customer authentication")
        SCHEDULED = "scheduled", _("Scheduled")
        APPLIED = "applied", _("Applied")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")
        ROLLED_BACK = "rolled_back", _("Rolled back")

    class CollectionMethod(models.TextChoices):
        CHARGE = "charge", _("Charged before it applies")
        INVOICE = "invoice", _("Invoiced when it applies, collected afterwards")

    IN_FLIGHT = (Status.PENDING, Status.REQUIRES_ACTION)
    # Held for approval (billing.services.approvals): nothing charged yet, but the quote is taken.
    LIVE = (Status.PENDING, Status.PENDING_APPROVAL, Status.REQUIRES_ACTION, Status.SCHEDULED, Status.APPLIED)

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="plan_changes")
    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="plan_changes")
    quote = models.ForeignKey(Quote, null=True, blank=True, on_delete=models.PROTECT, related_name="plan_changes")
    status = models.CharField(max_length=16, choices=Status.choices)
    direction = models.CharField(max_length=12, choices=Direction.choices)
    timing = models.CharField(max_length=12, choices=Timing.choices)
    from_price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="+")
    from_quantity = models.PositiveIntegerField()
    to_price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="+")
    to_quantity = models.PositiveIntegerField()
    effective_at = models.DateTimeField()
    new_period_start = models.DateTimeField()
    new_period_end = models.DateTimeField()
    currency = models.CharField(max_length=3)
    lines = models.JSONField(default=list)
    subtotal = models.DecimalField(**AMOUNT)
    tax_rate = models.DecimalField(max_digits=7, decimal_places=5, null=True)
    reverse_charge = models.BooleanField(default=False)
    tax = models.DecimalField(**AMOUNT)
    total = models.DecimalField(**AMOUNT)
    balance_applied = models.DecimalField(**AMOUNT)
    amount_due = models.DecimalField(**AMOUNT)
    balance_after = models.DecimalField(**AMOUNT)
    target_discount_percent = models.DecimalField(
        max_digits=5, decimal_places=2, null=True, blank=True,
        help_text="Copied from the quote: the discount the new terms' first period was charged at; applying the "
                  "change sets it on the subscription with no periods left (list price from the next renewal).")
    return_url = models.CharField(max_length=500, blank=True,
                                  help_text="Where the customer's browser returns after authenticating the payment.")
    payment_method = models.ForeignKey("billing.PaymentMethod", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+")
    payment_gateway = models.CharField(max_length=20, blank=True)
    payment_method_reference = models.CharField(
        max_length=100, blank=True, help_text="The saved method charged, as it was when the change was accepted."
    )
    payment_reference = models.CharField(max_length=100, blank=True)
    off_session = models.BooleanField(
        default=False, help_text="Charged without the customer present (a staff emergency upgrade): a card that needs "
                                 "authentication is declined instead of asking the customer.")
    next_action_url = models.URLField(blank=True, max_length=500)
    failure_code = models.CharField(max_length=50, blank=True)
    failure_message = models.CharField(max_length=300, blank=True)
    reason_code = models.CharField(max_length=50, blank=True, help_text="Why the change was made (audit).")
    collection_method = models.CharField(
        max_length=10, choices=CollectionMethod.choices, default=CollectionMethod.CHARGE,
        help_text="Customer changes are charged before they apply; contract amendments apply at their date and are "
                  "invoiced, then collected like renewals.")
    entitlements_added = models.JSONField(
        default=list, blank=True,
        help_text="Features the account gained or got more of when this change applied (feature codes).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField()
    applied_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True, help_text="When it failed or was cancelled.")
    sweep_failures = models.PositiveSmallIntegerField(
        default=0, help_text="Errors while the sweep applied this scheduled change (not refusals: those fail it).")
    sweep_error = models.CharField(max_length=500, blank=True)
    sweep_retry_at = models.DateTimeField(null=True, blank=True)
    needs_attention = models.BooleanField(
        default=False, help_text="Applying it kept failing: the sweep leaves it alone until staff retry it.")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Double clicks and racing workers end here: a quote executes at most once …
            models.UniqueConstraint(fields=["quote"], condition=Q(status__in=["pending", "pending_approval",
                                                                              "requires_action", "scheduled",
                                                                              "applied"]),
                                    name="one_live_change_per_quote"),
            # … and a customer has at most one change waiting for its payment.
            models.UniqueConstraint(fields=["customer"], condition=Q(status__in=["pending", "requires_action"]),
                                    name="one_in_flight_change_per_customer"),
        ]
        indexes = [models.Index(fields=["status", "effective_at"], name="plan_change_due_idx")]
        permissions = [
            ("emergency_upgrade", "Can apply an emergency upgrade (priced, charged off-session, invoiced at once)"),
            ("rollback_plan_change", "Can roll back an applied plan change (terms restored, charge reversed)"),
        ]

    def __str__(self) -> str:
        return f"Plan change {self.pk} · {self.get_status_display()}"

    @property
    def payment_idempotency_key(self) -> str:
        """Derived from our id, so every retry of this change's payment is the same payment."""
        return f"{settings.IDEMPOTENCY_NAMESPACE}-plan-change-{self.pk}"


class BalanceEntry(models.Model):
    """Append-only customer balance ledger. Positive amounts are credit held for the customer."""

    class Kind(models.TextChoices):
        CHANGE_CREDIT = "change_credit", _("Credit from an immediate downgrade")
        APPLIED_TO_CHANGE = "applied_to_change", _("Applied to a plan change")
        APPLIED_TO_INVOICE = "applied_to_invoice", _("Applied to a renewal invoice")
        PAYMENT_CREDIT = "payment_credit", _("Payment received for a change that was not applied")
        CASH_REFUND = "cash_refund", _("Paid back to the card")
        CASH_REFUND_REVERSED = "cash_refund_reversed", _("Card refund failed; credit restored")
        ROLLBACK_CREDIT = "rollback_credit", _("Credit from a rolled-back charge")
        ROLLBACK_DEBIT = "rollback_debit", _("Credit of a rolled-back change taken back")
        ADJUSTMENT = "adjustment", _("Staff adjustment")
        RETENTION_CREDIT = "retention_credit", _("Retention offer: amount off a renewal")

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="balance_entries")
    currency = models.CharField(max_length=3)
    amount = models.DecimalField(**AMOUNT)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    plan_change = models.ForeignKey(PlanChange, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    invoice = models.ForeignKey("billing.Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    description = models.CharField(max_length=300)
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "balance entries"
        indexes = [models.Index(fields=["customer", "currency"], name="balance_customer_currency_idx")]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} · {self.get_kind_display()}"


class IdempotencyKey(models.Model):
    """One accept request per (user, key): the same key replays, a different request is refused."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique_per_user")]


class AuditEvent(models.Model):
    """Append-only: who did what, when, why, with the state before and after."""

    created_at = models.DateTimeField()
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=150, help_text="The actor as it was named then (or 'system').")
    customer = models.ForeignKey(Customer, null=True, on_delete=models.SET_NULL, related_name="audit_events")
    action = models.CharField(max_length=60)
    reason_code = models.CharField(max_length=50, blank=True)
    object_type = models.CharField(max_length=60)
    object_id = models.CharField(max_length=40)
    before = models.JSONField(null=True)
    after = models.JSONField(null=True)
    message = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["customer", "created_at"], name="audit_customer_idx")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action}"


class LocalRefund(models.Model):
    """A refund in the local gateway."""

    reference = models.CharField(max_length=40, unique=True)
    payment = models.ForeignKey("billing.LocalPayment", on_delete=models.PROTECT, related_name="refunds")
    idempotency_key = models.CharField(max_length=255, unique=True)
    amount_minor = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)


class LocalPayment(models.Model):
    """A payment in the local gateway (the embedded stand-in for Stripe's test mode)."""

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded", _("Succeeded")
        DECLINED = "declined", _("Declined")
        REQUIRES_ACTION = "requires_action", _("Requires authentication")
        CANCELED = "canceled", _("Canceled")

    reference = models.CharField(max_length=40, unique=True)
    idempotency_key = models.CharField(max_length=255, unique=True)
    payment_method = models.CharField(max_length=100)
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices)
    failure_code = models.CharField(max_length=50, blank=True)
    failure_message = models.CharField(max_length=300, blank=True)
    return_url = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.reference} {self.status}"
