"""Win-back: campaigns of timed emails to customers who cancelled or downgraded, as data.

A cancellation or downgrade taking effect enrols the customer in every active campaign for that trigger; the sweep
(Celery beat) sends each step's email once per enrolment and step (a unique send row and the outbox's unique key), and
stops as soon as the customer comes back, opts out or the campaign's age limit passes.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

AMOUNT = {"max_digits": 18, "decimal_places": 4}


class WinBackCampaign(models.Model):
    class Trigger(models.TextChoices):
        CANCEL = "cancel", _("Cancellation")
        DOWNGRADE = "downgrade", _("Downgrade")

    name = models.CharField(max_length=100, help_text="Internal name, shown in admin and the staff report.")
    trigger = models.CharField(max_length=10, choices=Trigger.choices,
                               help_text="Customers are enrolled when a change of this kind takes effect (not when "
                                         "it is scheduled).")
    is_active = models.BooleanField(default=True, help_text="Inactive campaigns enrol nobody new and send nothing "
                                                            "more; their enrolments wait until it is active again.")
    stop_on_return = models.BooleanField(
        default=True, help_text="Stop (as converted) when the customer comes back: an upgrade, a restarted "
                                "subscription or an accepted win-back offer. Opted-out customers are always stopped.")
    max_age_days = models.PositiveIntegerField(
        default=180, help_text="Send nothing more this many days after the cancellation or downgrade took effect.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "pk"]
        permissions = [("view_retention_report", "Can view the retention and win-back report")]

    def __str__(self) -> str:
        return self.name


class WinBackStep(models.Model):
    campaign = models.ForeignKey(WinBackCampaign, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(help_text="Steps are sent in this order (1, 2, …).")
    delay_days = models.PositiveIntegerField(help_text="Days after the cancellation or downgrade took effect.")
    offer = models.ForeignKey(
        "retention.RetentionOffer", null=True, blank=True, on_delete=models.PROTECT, related_name="winback_steps",
        limit_choices_to={"kind": "discount", "percent_off__isnull": False},
        help_text="A percent discount the email offers with a one-click link; empty: a plain 'come back' link.")
    email_kind = models.CharField(max_length=60, default="winback",
                                  help_text="The email template: templates/emails/<kind>.{subject.txt,txt,html}.")
    subject = models.CharField(max_length=200, blank=True,
                               help_text="Replaces the template's subject when set (not translated: write it in the "
                                         "language most of your customers read).")

    class Meta:
        ordering = ["campaign_id", "position"]
        constraints = [models.UniqueConstraint(fields=["campaign", "position"], name="winback_step_position_unique")]

    def __str__(self) -> str:
        return f"{self.campaign} · step {self.position} (+{self.delay_days} days)"


class WinBackEnrolment(models.Model):
    """One customer in one campaign for one cancellation or downgrade."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        CONVERTED = "converted", _("Came back")
        STOPPED = "stopped", _("Stopped")
        FINISHED = "finished", _("All steps sent")

    customer = models.ForeignKey("billing.Customer", on_delete=models.CASCADE, related_name="winback_enrolments")
    campaign = models.ForeignKey(WinBackCampaign, on_delete=models.CASCADE, related_name="enrolments")
    plan_change = models.ForeignKey("billing.PlanChange", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+", help_text="The cancellation or downgrade that enrolled them.")
    subscription = models.ForeignKey("billing.Subscription", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    triggered_at = models.DateTimeField(help_text="When the cancellation or downgrade took effect.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    next_position = models.PositiveSmallIntegerField(default=1, help_text="The next step to send.")
    next_send_at = models.DateTimeField(null=True, blank=True, help_text="When the next step is due.")
    stop_reason = models.CharField(max_length=40, blank=True)
    converted_at = models.DateTimeField(null=True, blank=True)
    converted_by_change = models.ForeignKey("billing.PlanChange", null=True, blank=True, on_delete=models.SET_NULL,
                                            related_name="+", help_text="The upgrade that brought them back, if any.")
    converted_subscription = models.ForeignKey("billing.Subscription", null=True, blank=True,
                                               on_delete=models.SET_NULL, related_name="+",
                                               help_text="The subscription restarted through a win-back offer, if "
                                                         "any.")
    converted_step = models.ForeignKey(WinBackStep, null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+", help_text="The step whose offer they accepted, if any.")
    currency = models.CharField(max_length=3, blank=True)
    revenue_won_back = models.DecimalField(
        **AMOUNT, null=True, blank=True,
        help_text="What the customer pays again per month (normalised, tax excluded) since they came back.")
    offer_accepted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-triggered_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "plan_change"], name="winback_enrolment_once_per_change"),
        ]
        indexes = [
            # The sweep's query: due active enrolments, oldest first. Partial: finished rows cost nothing.
            models.Index(fields=["next_send_at"], condition=Q(status="active"), name="winback_enrolment_due_idx"),
            models.Index(fields=["customer", "status"], name="winback_enrolment_customer_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.customer} in {self.campaign} ({self.status})"


class WinBackSend(models.Model):
    """A step's email to one enrolment: its unique pair says 'once', whatever retries or workers do."""

    enrolment = models.ForeignKey(WinBackEnrolment, on_delete=models.CASCADE, related_name="sends")
    step = models.ForeignKey(WinBackStep, on_delete=models.PROTECT, related_name="sends")
    notification = models.ForeignKey("billing.Notification", null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["enrolment", "step"], name="winback_send_once_per_step")]
        indexes = [models.Index(fields=["created_at"], name="winback_send_created_idx")]


class EmailOptOut(models.Model):
    """The customer asked for no more marketing (win-back) email. Billing emails are not affected."""

    class Source(models.TextChoices):
        LINK = "link", _("Unsubscribe link")
        ONE_CLICK = "one_click", _("Mail client one-click (RFC 8058)")
        STAFF = "staff", _("Staff")

    customer = models.OneToOneField("billing.Customer", on_delete=models.CASCADE, related_name="email_opt_out")
    source = models.CharField(max_length=10, choices=Source.choices)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.customer} opted out"
