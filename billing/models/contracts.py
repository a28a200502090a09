"""Enterprise contracts: a committed term over one subscription, negotiated prices, and amendments.

A contract's term is a whole number of the subscription's billing periods, so every period inside the term
ends at or before the term's end (docs/contracts.md: co-terming). Negotiated prices replace the catalog's
unit amount wherever a price becomes a proration item (`billing.selectors.price_item`).
"""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from billing.models.catalog import Interval, Price
from billing.models.customers import Customer
from billing.models.subscriptions import AMOUNT, PlanChange, Subscription


class Contract(models.Model):
    """What an enterprise customer signed for one subscription: the committed term and what it commits to."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="contracts")
    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="contracts",
                                     help_text="The subscription the contract governs (one contract each).")
    number = models.CharField(max_length=30, unique=True, help_text="The contract's reference, e.g. ENT-2026-001.")
    term_start = models.DateTimeField(help_text="A period boundary of the subscription: the term is aligned to its "
                                                "billing periods.")
    term_end = models.DateTimeField(help_text="A whole number of billing intervals after the start (exclusive). "
                                              "Moved only by an approved 'extend term' amendment.")
    billing_interval = models.CharField(max_length=10, choices=Interval.choices,
                                        help_text="The subscription's billing interval for the whole term.")
    currency = models.CharField(max_length=3)
    committed_seats = models.PositiveIntegerField(
        default=0, help_text="During the term no change may go below this many seats (0: no seat commitment).")
    minimum_spend = models.DecimalField(
        **AMOUNT, default=Decimal(0), validators=[MinValueValidator(Decimal(0))],
        help_text="Net amount per billing period (after negotiated prices and discount) no change may go below "
                  "during the term (0: none).")
    purchase_order = models.CharField(max_length=60, blank=True,
                                      help_text="The customer's purchase-order number, printed on every invoice "
                                                "issued under the contract.")
    budget_cap = models.DecimalField(
        **AMOUNT, null=True, blank=True, validators=[MinValueValidator(Decimal(0))],
        help_text="The customer's own limit per change: a change whose amount due is above it is held for approval "
                  "instead of being charged (empty: no cap).")
    auto_renew = models.BooleanField(default=False, help_text="Renewal terms: whether the term renews unless "
                                                              "cancelled in time (renewed by an amendment).")
    renewal_term_months = models.PositiveSmallIntegerField(default=12, help_text="Renewal terms: length of a renewal.")
    renewal_notice_days = models.PositiveSmallIntegerField(default=60,
                                                           help_text="Renewal terms: notice to cancel before the end.")
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        ordering = ["customer__name", "term_start"]
        constraints = [
            models.UniqueConstraint(fields=["subscription"], name="one_contract_per_subscription"),
            models.CheckConstraint(condition=Q(term_end__gt=models.F("term_start")), name="contract_term_not_empty"),
            models.CheckConstraint(condition=Q(minimum_spend__gte=0), name="contract_minimum_spend_not_negative"),
            models.CheckConstraint(condition=Q(budget_cap__isnull=True) | Q(budget_cap__gte=0),
                                   name="contract_budget_cap_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.number} · {self.customer}"

    def in_force(self, moment) -> bool:
        return self.term_start <= moment < self.term_end

    @cached_property
    def price_overrides(self) -> dict[int, Decimal]:
        """Negotiated unit amounts by price id (from `prefetch_related("prices")` when the caller prefetched)."""
        return {row.price_id: row.unit_amount for row in self.prices.all()}

    def negotiated_unit_amount(self, price: Price) -> Decimal | None:
        return self.price_overrides.get(price.pk)


class ContractPrice(models.Model):
    """A negotiated unit amount that replaces the catalog price's for this contract (bands included: every seat
    at this amount). Set when the contract is created; changed only by an approved 'change price' amendment."""

    contract = models.ForeignKey(Contract, on_delete=models.CASCADE, related_name="prices")
    price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="+")
    unit_amount = models.DecimalField(**AMOUNT, validators=[MinValueValidator(Decimal(0))],
                                      help_text="Per seat (or per unit) per billing period, in the contract's currency.")

    class Meta:
        ordering = ["contract_id", "price_id"]
        verbose_name = "negotiated price"
        constraints = [
            models.UniqueConstraint(fields=["contract", "price"], name="one_negotiated_price_per_contract_price"),
            models.CheckConstraint(condition=Q(unit_amount__gte=0), name="negotiated_price_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.price.plan}: {self.unit_amount.normalize():f} {self.price.currency}"


class Amendment(models.Model):
    """A change to a contract drafted by staff: priced when submitted, approved as priced, applied at its date."""

    class Kind(models.TextChoices):
        ADD_SEATS = "add_seats", _("Add seats")
        CHANGE_TIER = "change_tier", _("Change tier")
        CHANGE_PRICE = "change_price", _("Change price")
        EXTEND_TERM = "extend_term", _("Extend term")

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        PENDING_APPROVAL = "pending_approval", _("Waiting for approval")
        APPROVED = "approved", _("Approved, waiting for its date")
        APPLIED = "applied", _("Applied")
        REJECTED = "rejected", _("Rejected")
        EXPIRED = "expired", _("Expired undecided")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    contract = models.ForeignKey(Contract, on_delete=models.PROTECT, related_name="amendments")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    effective_on = models.DateField(help_text="The day it takes effect, on the customer's billing calendar; within "
                                              "the subscription's current billing period and the term.")
    effective_at = models.DateTimeField(help_text="The instant it takes effect: the start of that day (or of the "
                                                  "billing period, if later).")
    seats = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)],
                                        help_text="Add seats: how many seats to add.")
    to_price = models.ForeignKey(Price, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                 help_text="Change tier: the new tier's price (same product, currency and interval).")
    unit_amount = models.DecimalField(
        **AMOUNT, null=True, blank=True, validators=[MinValueValidator(Decimal(0))],
        help_text="Change price: the new negotiated unit amount. Change tier: optional negotiated amount for the new "
                  "tier (else the contract's, else the catalog's).")
    extend_periods = models.PositiveSmallIntegerField(null=True, blank=True, validators=[MinValueValidator(1)],
                                                      help_text="Extend term: billing periods added to the term.")
    note = models.TextField(blank=True, help_text="Why: shown to the approvers.")
    # What the approvers approve: the amendment priced when it was submitted (docs/contracts.md).
    subscription_version = models.PositiveBigIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    total = models.DecimalField(**AMOUNT, null=True, blank=True)
    amount_due = models.DecimalField(**AMOUNT, null=True, blank=True)
    priced = models.JSONField(default=dict, blank=True, help_text="The preview as submitted: lines, totals, the "
                                                                   "periods until the contract's end.")
    plan_change = models.ForeignKey(PlanChange, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField()
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    submitted_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True, help_text="When it was rejected, expired, failed or "
                                                                      "cancelled.")
    failure_code = models.CharField(max_length=50, blank=True)
    failure_message = models.CharField(max_length=300, blank=True)

    OPEN = (Status.DRAFT, Status.PENDING_APPROVAL, Status.APPROVED)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "effective_at"], name="amendment_due_idx")]

    def __str__(self) -> str:
        return f"Amendment {self.pk} · {self.get_kind_display()} · {self.contract.number}"

    @property
    def reason_code(self) -> str:
        """The plan change's reason code: names this amendment in the audit trail."""
        return f"contract_amendment_{self.pk}"
