"""Billing accounts, their members, saved payment methods and tax rates."""

from __future__ import annotations

from zoneinfo import available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from billing.models.catalog import validate_currency

validate_country = RegexValidator(r"^[A-Z]{2}$", "Use an ISO 3166-1 alpha-2 code in capitals, e.g. DE.")


def validate_timezone(value: str) -> None:
    if value not in available_timezones():
        raise ValidationError(f"{value!r} is not an IANA timezone name.")


class Customer(models.Model):
    class Granularity(models.TextChoices):
        DAY = "day", _("Day")
        SECOND = "second", _("Second")

    name = models.CharField(max_length=200)
    email = models.EmailField(help_text="Billing contact.")
    currency = models.CharField(max_length=3, validators=[validate_currency], help_text="Billing currency (ISO 4217).")
    country = models.CharField(max_length=2, validators=[validate_country],
                               help_text="ISO 3166-1 alpha-2; decides the tax rate.")
    region = models.CharField(max_length=10, blank=True,
                              help_text="ISO 3166-2 subdivision where a region has its own rate (e.g. ES-CN).")
    address = models.TextField(blank=True)
    vat_id = models.CharField(max_length=30, blank=True,
                              help_text="For EU businesses: checked for format and check digits; a valid ID from "
                                        "another EU country than the seller's makes invoices reverse-charged.")
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone],
                                help_text="Billing timezone: proration days are counted on its calendar.")
    granularity = models.CharField(max_length=6, choices=Granularity.choices, default=Granularity.DAY,
                                   help_text="Proration granularity (shared/PRORATION.md).")
    language = models.CharField(max_length=8, choices=settings.LANGUAGES, default="en")
    entitlements_version = models.PositiveBigIntegerField(
        default=0, editable=False, help_text="Bumped in the transaction of every change; keys the entitlements cache."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [("support_view", "Can open the support view of a customer (everything on one page)")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from billing.tax import EU_MEMBER_STATES, vat_id_valid_for

        if self.vat_id and self.country in EU_MEMBER_STATES and not vat_id_valid_for(self.vat_id, self.country):
            raise ValidationError({"vat_id": f"{self.vat_id} is not a valid VAT ID for {self.country} "
                                             "(format or check digits)."})


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", _("Owner")
        BILLING_ADMIN = "billing_admin", _("Billing admin")
        MEMBER = "member", _("Member")

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=15, choices=Role.choices, default=Role.MEMBER)

    BILLING_ROLES = (Role.OWNER, Role.BILLING_ADMIN)  # may quote, change plans and confirm payments

    class Meta:
        constraints = [models.UniqueConstraint(fields=["customer", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} · {self.get_role_display()} of {self.customer}"



class PaymentMethod(models.Model):
    """A method saved at the gateway. We keep its reference and a label, never card data."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="payment_methods")
    gateway = models.CharField(max_length=20, default="local")
    reference = models.CharField(max_length=100, help_text="The gateway's id, e.g. pm_card_visa.")
    gateway_customer = models.CharField(max_length=100, blank=True,
                                        help_text="The gateway's customer the method is attached to (Stripe cus_…), "
                                                  "sent with every charge; needed for renewals charged off-session.")
    label = models.CharField(max_length=100, help_text="What the customer sees, e.g. 'Visa ending 4242'.")
    is_default = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer"], condition=Q(is_default=True), name="one_default_payment_method"),
        ]

    def __str__(self) -> str:
        return self.label


class TaxRate(models.Model):
    country = models.CharField(max_length=2, validators=[validate_country], help_text="ISO 3166-1 alpha-2.")
    region = models.CharField(max_length=10, blank=True,
                              help_text="Empty: the whole country. A region's rate wins over the country's.")
    name = models.CharField(max_length=50, default="VAT")
    rate = models.DecimalField(max_digits=7, decimal_places=5,
                               validators=[MinValueValidator(0), MaxValueValidator(1)],
                               help_text="A fraction: 0.19 for 19 %.")
    valid_from = models.DateField()

    class Meta:
        ordering = ["country", "-valid_from"]
        constraints = [models.UniqueConstraint(fields=["country", "region", "valid_from"], name="tax_rate_unique_from")]

    def __str__(self) -> str:
        where = f"{self.country}/{self.region}" if self.region else self.country
        return f"{where} {self.name} {self.rate * 100:.2f}% from {self.valid_from}"
