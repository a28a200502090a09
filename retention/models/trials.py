"""Trials of a higher tier: for a while the account may use the tried plan's features, at no charge, while its
subscription keeps its paid plan, period and billing unchanged. At the end the trial converts (a real upgrade,
priced and charged like any other) or falls back (the tried features go; nothing is deleted)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class Trial(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        CONVERTED = "converted", _("Converted to paid")
        FELL_BACK = "fell_back", _("Fell back to the paid plan")
        CANCELLED = "cancelled", _("Ended early")

    class Source(models.TextChoices):
        PLANS_PAGE = "plans_page", _("Plans page")
        OFFER = "offer", _("Retention offer")

    customer = models.ForeignKey("billing.Customer", on_delete=models.PROTECT, related_name="trials")
    subscription = models.ForeignKey("billing.Subscription", on_delete=models.PROTECT, related_name="trials")
    product = models.ForeignKey("billing.Product", on_delete=models.PROTECT, related_name="+",
                                help_text="The abuse limit counts trials per product and customer.")
    from_price = models.ForeignKey("billing.Price", on_delete=models.PROTECT, related_name="+",
                                   help_text="The paid price when the trial started (the subscription keeps paying it).")
    from_quantity = models.PositiveIntegerField()
    plan = models.ForeignKey("billing.Plan", on_delete=models.PROTECT, related_name="+", help_text="The tier tried.")
    price = models.ForeignKey("billing.Price", on_delete=models.PROTECT, related_name="+",
                              help_text="The tried plan's price in the subscription's currency and interval: what a "
                                        "conversion is quoted at.")
    quantity = models.PositiveIntegerField(help_text="Seats tried (and bought at conversion).")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(help_text="The tried features go at this instant exactly, whatever the sweep does.")
    convert_opt_in = models.BooleanField(
        default=False, help_text="The customer asked to be upgraded at the end, charged to the saved payment method. "
                                 "Changeable by the customer until the end.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    source = models.CharField(max_length=12, choices=Source.choices)
    offer_presentation = models.ForeignKey("retention.OfferPresentation", null=True, blank=True,
                                           on_delete=models.SET_NULL, related_name="trials",
                                           help_text="The retention offer it came from, if any.")
    conversion_quote = models.ForeignKey(
        "billing.Quote", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The quote the conversion accepts (priced at the trial's end): a resumed conversion finds its change "
                  "through it.")
    plan_change = models.ForeignKey("billing.PlanChange", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+", help_text="The conversion's upgrade (applied, or failed when the "
                                                                "payment was declined).")
    outcome_code = models.CharField(max_length=50, blank=True,
                                    help_text="Why it ended so, e.g. 'payment_declined', 'not_opted_in'.")
    outcome_message = models.CharField(max_length=300, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    ending_claimed_until = models.DateTimeField(
        null=True, blank=True, help_text="A worker is charging the conversion until then; after that another may "
                                         "resume it (the payment key is the same, so it is never charged twice).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-starts_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["subscription"], condition=Q(status="active"),
                                    name="one_active_trial_per_subscription"),
            models.CheckConstraint(condition=Q(ends_at__gt=models.F("starts_at")), name="trial_not_empty"),
        ]
        indexes = [
            models.Index(fields=["status", "ends_at"], name="trial_due_idx"),
            models.Index(fields=["customer", "product", "starts_at"], name="trial_abuse_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.customer} · {self.plan} trial ({self.get_status_display()})"
