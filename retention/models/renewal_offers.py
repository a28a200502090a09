"""Renewal-window offers: a monthly subscriber near renewal is offered the annual plan at a clear saving.

The offer is data (edited in admin); what it costs is always a quote (billing.services.quotes), so the card, the
email, the review and the charge show the same PRORATION.md amounts. A customer's "Not now" is kept per
subscription and period, and the email goes once per subscription and period (the outbox key).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class RenewalOffer(models.Model):
    """Switch from monthly to a longer interval, offered in a window before the monthly renewal."""

    class Interval(models.TextChoices):
        QUARTER = "quarter", _("Quarterly")
        YEAR = "year", _("Annual")

    name = models.CharField(max_length=100, help_text="Internal name, shown in admin.")
    headline = models.CharField(
        max_length=200, blank=True,
        help_text="Optional line the customer reads above the saving, e.g. 'Two months free with annual billing'. "
                  "The saving itself (amount and percentage) is always computed and shown.")
    window_days = models.PositiveSmallIntegerField(
        default=14, validators=[MinValueValidator(1), MaxValueValidator(27)],
        help_text="Shown this many days before a monthly renewal, until the renewal (1–27).")
    email_after_days = models.PositiveSmallIntegerField(
        default=3, validators=[MaxValueValidator(26)],
        help_text="The reminder email goes this many days after the window opens (once per subscription and period); "
                  "must be less than the window.")
    send_email = models.BooleanField(default=True, help_text="Send the reminder email (the card shows either way).")
    target_interval = models.CharField(max_length=10, choices=Interval.choices, default=Interval.YEAR,
                                       help_text="The interval offered: the same plan, seats and currency, billed "
                                                 "this way.")
    discount_percent = models.DecimalField(
        max_digits=5, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(Decimal("0.01")), MaxValueValidator(Decimal("99.99"))],
        help_text="Optional: percent off the first period of the new interval only (later renewals at list price). "
                  "Not offered to subscriptions that already have a discount; they switch at their own terms.")
    products = models.ManyToManyField("billing.Product", blank=True, related_name="+",
                                      help_text="Offered to subscribers of these products only; none selected: any.")
    plans = models.ManyToManyField("billing.Plan", blank=True, related_name="+",
                                   help_text="Offered to subscribers of these plans only; none selected: any plan.")
    priority = models.PositiveSmallIntegerField(default=100, help_text="Lower first: a subscription sees only the "
                                                                       "first active offer that fits.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["priority", "pk"]
        constraints = [
            models.CheckConstraint(condition=Q(email_after_days__lt=models.F("window_days")),
                                   name="renewal_offer_email_inside_window"),
            models.CheckConstraint(condition=Q(discount_percent__isnull=True)
                                   | Q(discount_percent__gt=0, discount_percent__lt=100),
                                   name="renewal_offer_discount_range"),
        ]

    def __str__(self) -> str:
        return self.name


class RenewalOfferDismissal(models.Model):
    """"Not now": no renewal offer for this subscription until its current period ends."""

    subscription = models.ForeignKey("billing.Subscription", on_delete=models.CASCADE, related_name="+")
    period_end = models.DateTimeField(help_text="The renewal this dismissal is for.")
    offer = models.ForeignKey(RenewalOffer, null=True, on_delete=models.SET_NULL, related_name="dismissals")
    dismissed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    dismissed_at = models.DateTimeField()

    class Meta:
        ordering = ["-dismissed_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["subscription", "period_end"],
                                               name="renewal_offer_dismissed_once_per_period")]

    def __str__(self) -> str:
        return f"Subscription {self.subscription_id}: not now (renewal {self.period_end:%Y-%m-%d})"


class RenewalOfferQuote(models.Model):
    """A quote made from a renewal offer (the customer chose to switch): for the staff report, acceptance is its
    plan change being applied."""

    offer = models.ForeignKey(RenewalOffer, on_delete=models.PROTECT, related_name="quotes")
    quote = models.OneToOneField("billing.Quote", on_delete=models.CASCADE, related_name="renewal_offer_quote")
    subscription = models.ForeignKey("billing.Subscription", on_delete=models.CASCADE, related_name="+")
    period_end = models.DateTimeField(help_text="The monthly renewal the offer was made before.")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.offer} → quote {self.quote_id}"
