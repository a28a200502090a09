"""Invoices and credit notes: immutable snapshots once issued, numbered per series without gaps."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from billing.models.catalog import validate_currency
from billing.models.customers import Customer, validate_country
from billing.models.subscriptions import AMOUNT, PlanChange


class LegalEntity(models.Model):
    """The seller named on invoices. Exactly one is the default."""

    name = models.CharField(max_length=200)
    address = models.TextField()
    country = models.CharField(max_length=2, validators=[validate_country])
    vat_id = models.CharField(max_length=30, help_text="The seller's VAT identification number.")
    base_currency = models.CharField(max_length=3, validators=[validate_currency], default="EUR",
                                     help_text="Finance reports convert amounts into this currency.")
    invoice_prefix = models.CharField(max_length=10, default="CG", help_text="Invoice numbers: PREFIX-YEAR-000123.")
    credit_note_prefix = models.CharField(max_length=10, default="CGC",
                                          help_text="Credit note numbers: PREFIX-YEAR-000123.")
    timezone = models.CharField(max_length=64, default="Europe/Berlin",
                                help_text="Issue dates (and the year in document numbers) follow this calendar.")
    is_default = models.BooleanField(default=False)

    class Meta:
        verbose_name_plural = "legal entities"
        constraints = [models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True),
                                               name="one_default_legal_entity")]

    def __str__(self) -> str:
        return self.name


class DocumentSeries(models.Model):
    """The next number of one series (entity × kind × year). Locked while a number is taken."""

    legal_entity = models.ForeignKey(LegalEntity, on_delete=models.PROTECT, related_name="series")
    kind = models.CharField(max_length=12)
    year = models.PositiveSmallIntegerField()
    prefix = models.CharField(max_length=10)
    next_number = models.PositiveIntegerField(default=1)

    class Meta:
        verbose_name_plural = "document series"
        constraints = [models.UniqueConstraint(fields=["legal_entity", "kind", "year"], name="series_unique")]

    def __str__(self) -> str:
        return f"{self.prefix}-{self.year}"


class Invoice(models.Model):
    class Kind(models.TextChoices):
        INVOICE = "invoice", _("Invoice")
        CREDIT_NOTE = "credit_note", _("Credit note")

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        ISSUED = "issued", _("Issued")
        PAID = "paid", _("Paid")
        VOID = "void", _("Void")

    class Reason(models.TextChoices):
        PLAN_CHANGE = "plan_change", _("Plan change")
        RENEWAL = "renewal", _("Renewal")
        ROLLBACK = "rollback", _("Rollback of a plan change")

    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.INVOICE)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT)
    billing_reason = models.CharField(max_length=12, choices=Reason.choices, default=Reason.PLAN_CHANGE)
    number = models.CharField(max_length=30, null=True, blank=True,
                              help_text="Taken from its series when the document is issued, never before.")
    legal_entity = models.ForeignKey(LegalEntity, on_delete=models.PROTECT, related_name="invoices")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    plan_change = models.ForeignKey(PlanChange, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="invoices")
    subscription = models.ForeignKey("billing.Subscription", null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="invoices")
    related_invoice = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="credit_notes", help_text="The invoice a credit note corrects.")
    issued_at = models.DateTimeField(null=True, blank=True)
    supply_start = models.DateTimeField()
    supply_end = models.DateTimeField()
    currency = models.CharField(max_length=3)
    language = models.CharField(max_length=8, default="en")
    billing_timezone = models.CharField(max_length=64, default="UTC", help_text="Dates on the document are shown in it.")
    issue_date = models.DateField(null=True, blank=True,
                                  help_text="The issue date on the seller's calendar: on the PDF, in the number's "
                                            "year and in exports.")
    # Snapshots: what the document says, as it was said at issue.
    seller_name = models.CharField(max_length=200)
    seller_address = models.TextField()
    seller_country = models.CharField(max_length=2)
    seller_vat_id = models.CharField(max_length=30)
    buyer_name = models.CharField(max_length=200)
    buyer_address = models.TextField(blank=True)
    buyer_country = models.CharField(max_length=2)
    buyer_vat_id = models.CharField(max_length=30, blank=True)
    tax_inclusive = models.BooleanField(default=False)
    reverse_charge = models.BooleanField(default=False)
    legal_mention = models.CharField(max_length=300, blank=True)
    purchase_order = models.CharField(max_length=60, blank=True,
                                      help_text="The customer's purchase-order number from the contract in force.")
    subtotal = models.DecimalField(**AMOUNT, help_text="Sum of the lines (net for tax-exclusive prices).")
    tax_total = models.DecimalField(**AMOUNT)
    total = models.DecimalField(**AMOUNT)
    tax_breakdown = models.JSONField(default=list, help_text="Per rate: taxable amount and tax (EN 16931 BG-23).")
    balance_applied = models.DecimalField(**AMOUNT, default=0)
    amount_paid = models.DecimalField(**AMOUNT, default=0)
    amount_due = models.DecimalField(**AMOUNT, default=0,
                                     help_text="What is collected from the customer's payment method: the total less "
                                               "the balance applied.")
    next_payment_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When the next automatic payment attempt runs (renewals that are not paid "
                                         "yet); empty when none is planned.")
    paid_at = models.DateTimeField(null=True, blank=True)
    payment_reference = models.CharField(max_length=100, blank=True)
    pdf = models.FileField(upload_to="invoices/", blank=True,
                           help_text="Rendered once from this snapshot by a worker after issue; never re-rendered.")
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status="draft") | Q(number__isnull=False),
                                   name="issued_documents_have_a_number"),
            models.UniqueConstraint(fields=["plan_change", "kind"], condition=Q(plan_change__isnull=False),
                                    name="one_document_of_a_kind_per_plan_change"),
            models.UniqueConstraint(fields=["legal_entity", "number"], name="document_number_unique_per_entity"),
            # A period is billed once, however many workers run the renewal sweep.
            models.UniqueConstraint(fields=["subscription", "supply_start"],
                                    condition=Q(billing_reason="renewal", kind="invoice"),
                                    name="one_renewal_invoice_per_period"),
        ]
        indexes = [models.Index(fields=["legal_entity", "issued_at"], name="invoice_issued_idx"),
                   models.Index(fields=["status", "next_payment_attempt_at"], name="invoice_collect_due_idx")]
        permissions = [
            ("download_invoice", "Can download any invoice or credit note"),
            ("export_invoices", "Can export invoices and credit notes (CSV, XLSX, ZIP)"),
            ("refund_credit_note", "Can refund a credit note in cash (through the payment gateway)"),
        ]

    def __str__(self) -> str:
        return self.number or f"Draft {self.get_kind_display().lower()} {self.pk}"

    def clean(self) -> None:
        if self.kind == self.Kind.CREDIT_NOTE and self.related_invoice_id is None and self.plan_change_id is None:
            raise ValidationError("A credit note references the invoice or the change it credits.")


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveSmallIntegerField()
    description = models.CharField(max_length=500)
    detail = models.TextField(blank=True, help_text="How the amount is made up, as issued in the document's "
                                                    "language: a tiered price's bands.")
    quantity = models.DecimalField(max_digits=12, decimal_places=4, default=1)
    unit_amount = models.DecimalField(**AMOUNT)
    amount = models.DecimalField(**AMOUNT)
    tax_rate = models.DecimalField(max_digits=7, decimal_places=5, null=True, blank=True)

    class Meta:
        ordering = ["invoice_id", "position"]
        constraints = [models.UniqueConstraint(fields=["invoice", "position"], name="invoice_line_position_unique")]

    def __str__(self) -> str:
        return self.description


class ExchangeRate(models.Model):
    """Dated rates, used only to report in the base currency (never to price): 1 base = rate × quote."""

    base_currency = models.CharField(max_length=3, validators=[validate_currency])
    quote_currency = models.CharField(max_length=3, validators=[validate_currency])
    rate = models.DecimalField(max_digits=20, decimal_places=10)
    valid_on = models.DateField()

    class Meta:
        ordering = ["base_currency", "quote_currency", "-valid_on"]
        constraints = [models.UniqueConstraint(fields=["base_currency", "quote_currency", "valid_on"],
                                               name="exchange_rate_unique_per_day")]

    def __str__(self) -> str:
        return f"1 {self.base_currency} = {self.rate} {self.quote_currency} on {self.valid_on}"


class CashRefund(models.Model):
    """A credit note paid back to the customer's card by staff, instead of kept as balance. At most one each."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="cash_refunds")
    credit_note = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="cash_refunds")
    currency = models.CharField(max_length=3)
    amount = models.DecimalField(**AMOUNT)
    payment_gateway = models.CharField(max_length=20)
    payment_reference = models.CharField(max_length=100, help_text="The payment refunded.")
    refund_reference = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    reason = models.CharField(max_length=300)
    failure_message = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["credit_note"], condition=~Q(status="failed"),
                                               name="one_cash_refund_per_credit_note")]

    def __str__(self) -> str:
        return f"Refund of {self.credit_note}"

    @property
    def idempotency_key(self) -> str:
        return f"{settings.IDEMPOTENCY_NAMESPACE}-refund-{self.pk}"


class PaymentAttempt(models.Model):
    """One try at collecting an issued invoice (renewals). Each attempt has its own idempotency key, so a
    retry of the same attempt is the same payment and a scheduled retry is a new one."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Outcome not known yet")
        SUCCEEDED = "succeeded", _("Succeeded")
        DECLINED = "declined", _("Declined")
        REQUIRES_ACTION = "requires_action", _("Waiting for customer authentication")
        CANCELED = "canceled", _("Not taken")

    OPEN = (Status.PENDING, Status.REQUIRES_ACTION)

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payment_attempts")
    number = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    off_session = models.BooleanField(default=True, help_text="Charged without the customer present (the sweep), "
                                                              "or by the customer from the portal.")
    payment_gateway = models.CharField(max_length=20, blank=True)
    payment_method_reference = models.CharField(max_length=100, blank=True)
    payment_customer_reference = models.CharField(max_length=100, blank=True)
    return_url = models.CharField(max_length=500, blank=True)
    payment_reference = models.CharField(max_length=100, blank=True)
    next_action_url = models.URLField(blank=True, max_length=500)
    failure_code = models.CharField(max_length=50, blank=True)
    failure_message = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["invoice_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "number"], name="payment_attempt_number_unique"),
            # At most one attempt in flight per invoice: two workers never charge one invoice twice.
            models.UniqueConstraint(fields=["invoice"], condition=Q(status__in=["pending", "requires_action"]),
                                    name="one_open_attempt_per_invoice"),
        ]

    def __str__(self) -> str:
        return f"{self.invoice} attempt {self.number} · {self.get_status_display()}"

    @property
    def idempotency_key(self) -> str:
        return f"{settings.IDEMPOTENCY_NAMESPACE}-invoice-{self.invoice_id}-attempt-{self.number}"
