"""Exit surveys and retention offers: reasons and offers are data, edited in admin; what was shown to whom, and what
they did with it, is kept for the staff report (offers shown, accepted, declined, revenue saved)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

AMOUNT = {"max_digits": 18, "decimal_places": 4}


class ExitReason(models.Model):
    """Why a customer downgrades or cancels: the exit survey's choices, in `position` order."""

    code = models.SlugField(unique=True, help_text="Stable code stored on changes and audit events, e.g. "
                                                   "'too_expensive'.")
    label = models.CharField(max_length=100, help_text="What the customer reads.")
    asks_details = models.BooleanField(default=False, help_text="Ask for free text (required), as for 'Other'.")
    position = models.PositiveSmallIntegerField(default=0)
    is_active = models.BooleanField(default=True, help_text="Inactive reasons are no longer offered.")

    class Meta:
        ordering = ["position", "pk"]

    def __str__(self) -> str:
        return self.label


class RetentionOffer(models.Model):
    """Something offered to a customer on the way out, with who may get it."""

    class Kind(models.TextChoices):
        DISCOUNT = "discount", _("Discount for N periods")
        PAUSE = "pause", _("Pause for N periods")
        CROSSGRADE = "crossgrade", _("A cheaper plan")
        TRIAL = "trial", _("Trial of a higher tier")

    class Flow(models.TextChoices):
        ANY = "any", _("Downgrade or cancel")
        CANCEL = "cancel", _("Cancel only")
        DOWNGRADE = "downgrade", _("Downgrade only")
        WIN_BACK = "win_back", _("Win-back emails only")

    name = models.CharField(max_length=100, help_text="Internal name, shown in admin and reports.")
    headline = models.CharField(max_length=200, help_text="What the customer reads, e.g. '30 % off for 3 months'.")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    percent_off = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True,
                                      help_text="Discount: percent off each discounted period.")
    amount_off = models.DecimalField(**AMOUNT, null=True, blank=True,
                                     help_text="Discount: amount off each discounted period, in `currency`.")
    currency = models.CharField(max_length=3, blank=True, help_text="The currency of `amount_off`.")
    periods = models.PositiveSmallIntegerField(null=True, blank=True,
                                               help_text="Discount or pause: how many billing periods.")
    target_plan = models.ForeignKey("billing.Plan", null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+", help_text="Cross-grade: the cheaper plan; trial: the higher "
                                                                "tier tried.")
    trial_days = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Trial: its length in days.")
    flow = models.CharField(max_length=10, choices=Flow.choices, default=Flow.ANY,
                            help_text="Where it is offered: the exit flow (downgrade, cancel or both) or only in "
                                      "win-back emails, never on the way out.")
    reasons = models.ManyToManyField(ExitReason, blank=True, related_name="offers",
                                     help_text="Shown for these reasons only; none selected: any reason.")
    plans = models.ManyToManyField("billing.Plan", blank=True, related_name="+",
                                   help_text="Shown to subscribers of these plans only; none selected: any plan.")
    min_tenure_days = models.PositiveIntegerField(default=0, help_text="Shown only to customers subscribed at "
                                                                       "least this long.")
    cooldown_days = models.PositiveIntegerField(
        default=365, help_text="Not shown to a customer who accepted any retention offer within this many days.")
    priority = models.PositiveSmallIntegerField(default=100, help_text="Lower first when several fit.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["priority", "pk"]
        constraints = [
            models.CheckConstraint(condition=~Q(kind="discount") | Q(percent_off__isnull=False)
                                   | Q(amount_off__isnull=False), name="offer_discount_has_amount"),
            models.CheckConstraint(condition=Q(percent_off__isnull=True) | Q(amount_off__isnull=True),
                                   name="offer_discount_one_kind"),
        ]

    def __str__(self) -> str:
        return self.name


class ExitSurvey(models.Model):
    """A customer's answer: why they downgrade or cancel. Kept whatever they decide next."""

    class Flow(models.TextChoices):
        CANCEL = "cancel", _("Cancel")
        DOWNGRADE = "downgrade", _("Downgrade")

    customer = models.ForeignKey("billing.Customer", on_delete=models.CASCADE, related_name="exit_surveys")
    subscription = models.ForeignKey("billing.Subscription", on_delete=models.CASCADE, related_name="exit_surveys")
    flow = models.CharField(max_length=10, choices=Flow.choices)
    reason = models.ForeignKey(ExitReason, on_delete=models.PROTECT, related_name="+")
    details = models.TextField(blank=True)
    plan_change = models.OneToOneField("billing.PlanChange", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="exit_survey", help_text="The downgrade or cancellation it led "
                                                                             "to, if any.")
    target_price = models.ForeignKey("billing.Price", null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+", help_text="Downgrade: the price the customer chose to move to.")
    target_quantity = models.PositiveIntegerField(null=True, blank=True, help_text="Downgrade: the seats chosen.")
    quote = models.ForeignKey("billing.Quote", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                              help_text="The latest downgrade or cancellation quote made after declining the offers.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.customer} — {self.reason.code}"


class OfferPresentation(models.Model):
    """One offer shown to one customer in one exit flow, and what they did with it."""

    class Status(models.TextChoices):
        SHOWN = "shown", _("Shown")
        ACCEPTED = "accepted", _("Accepted")
        DECLINED = "declined", _("Declined")

    survey = models.ForeignKey(ExitSurvey, on_delete=models.CASCADE, related_name="presentations")
    offer = models.ForeignKey(RetentionOffer, on_delete=models.PROTECT, related_name="presentations")
    customer = models.ForeignKey("billing.Customer", on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SHOWN)
    currency = models.CharField(max_length=3)
    revenue_at_risk = models.DecimalField(**AMOUNT, help_text="What the customer would stop paying per month "
                                                              "(normalised, tax excluded) if they left as asked.")
    effect = models.JSONField(default=dict, help_text="The offer's priced effect as shown (amounts as strings).")
    quote = models.ForeignKey("billing.Quote", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                              help_text="Cross-grade: the quote whose amounts were shown and are accepted.")
    shown_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-shown_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["survey", "offer"], name="presentation_once_per_survey")]
        indexes = [models.Index(fields=["shown_at"], name="presentation_shown_idx")]

    def __str__(self) -> str:
        return f"{self.offer} → {self.customer} ({self.status})"


class RecurringCredit(models.Model):
    """An accepted amount-off discount: `amount` in `currency` off each of the subscription's next `periods`
    renewals. The renewal step (billing.services.renewals, under the subscription's lock) credits it to the
    customer's balance just before the renewal invoice, which applies the balance first (PRORATION.md), capped at
    that invoice's total, and counts it down. Periods paused or with nothing to bill don't use one up."""

    subscription = models.ForeignKey("billing.Subscription", on_delete=models.CASCADE,
                                     related_name="recurring_credits")
    currency = models.CharField(max_length=3)
    amount = models.DecimalField(**AMOUNT, help_text="Credited before each discounted renewal invoice (at most its "
                                                     "total).")
    periods = models.PositiveSmallIntegerField(help_text="How many renewals it was granted for.")
    periods_left = models.PositiveSmallIntegerField(help_text="Renewals still to receive it; 0: used up.")
    presentation = models.OneToOneField(OfferPresentation, null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="recurring_credit",
                                        help_text="The retention offer accepted that granted it.")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="recurring_credit_positive"),
            models.CheckConstraint(condition=Q(periods_left__lte=models.F("periods")),
                                   name="recurring_credit_periods_left"),
        ]
        indexes = [models.Index(fields=["subscription", "periods_left"], name="recurring_credit_pending_idx")]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} × {self.periods_left}/{self.periods}"
