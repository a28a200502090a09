"""Back office: catalog and change rules are editable; money records and the audit trail are read-only."""

from __future__ import annotations

from datetime import date

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.admin_back_office import (
    EmergencyUpgradeAdminMixin,
    RollbackAdminMixin,
    SupportViewAdminMixin,
    roll_back_plan_change,
)
from billing.admin_bulk import bulk_change_customers
from billing.errors import BillingError
from billing.models import (
    AuditEvent,
    BalanceEntry,
    CashRefund,
    ChangeRule,
    Customer,
    DocumentSeries,
    ExchangeRate,
    Feature,
    Invoice,
    InvoiceLine,
    LegalEntity,
    LocalPayment,
    Membership,
    Notification,
    PaymentAttempt,
    PaymentMethod,
    Plan,
    PlanChange,
    PlanFeature,
    Price,
    PriceTier,
    Product,
    Quote,
    StripeEvent,
    Subscription,
    TaxRate,
)
from billing.reports import documents_zip, report_csv, report_rows, report_xlsx
from billing.selectors import legal_entity_default
from billing.services.invoice_pdfs import invoice_pdf_render
from billing.services.plan_changes import plan_change_cancel
from billing.services.refunds import credit_note_refund
from billing.services.renewals import sweep_retry
from billing.services.subscriptions import subscription_save_by_staff


class PaymentAttemptInline(admin.TabularInline):
    """Every try at collecting a renewal invoice, with the gateway's answer (read-only)."""

    model = PaymentAttempt
    extra = 0
    can_delete = False
    fields = ["number", "status", "off_session", "created_at", "completed_at", "payment_gateway",
              "payment_reference", "failure_code", "failure_message"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Browsable, never edited: records of money and history."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class PlanInline(admin.TabularInline):
    model = Plan
    extra = 0
    fields = ["code", "name", "rank", "is_active"]
    show_change_link = True


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "is_active", "sort_order"]
    prepopulated_fields = {"code": ["name"]}
    inlines = [PlanInline]


PRICE_TERMS = ["currency", "interval", "unit_amount", "pricing", "tax_behavior", "tiers_mode"]


def price_in_use(price: Price) -> bool:
    return (Subscription.objects.filter(price=price).exists() or Quote.objects.filter(to_price=price).exists()
            or PlanChange.objects.filter(to_price=price).exists())


class PriceInline(admin.TabularInline):
    """Prices are listed here; they are added and edited on their own page, where terms in use are frozen."""

    model = Price
    extra = 0
    fields = ["currency", "interval", "unit_amount", "pricing", "tiers_mode", "min_quantity", "max_quantity",
              "tax_behavior", "is_active"]
    readonly_fields = fields
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class PlanFeatureInline(admin.TabularInline):
    model = PlanFeature
    extra = 0
    autocomplete_fields = ["feature"]


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "product", "rank", "code", "is_active"]
    list_filter = ["product", "is_active"]
    list_select_related = ["product"]
    search_fields = ["name", "code", "product__name"]
    inlines = [PriceInline, PlanFeatureInline]


class PriceTierFormSet(forms.BaseInlineFormSet):
    """The bands are checked together, against the price as submitted (Price.clean_tiers)."""

    def clean(self):
        if any(self.errors) or (self.instance.pk is not None and price_in_use(self.instance)):
            return  # field errors first; a price in use shows its frozen bands read-only
        tiers = [form.instance for form in self.forms
                 if form.cleaned_data and not form.cleaned_data.get("DELETE")]
        tiers.sort(key=lambda tier: (tier.up_to is None, tier.up_to or 0))
        self.instance.clean_tiers(tiers)
        super().clean()


class PriceTierInline(admin.TabularInline):
    """Bands of a tiered per-seat price; frozen, like the amount, once the price is in use."""

    model = PriceTier
    formset = PriceTierFormSet
    extra = 0
    fields = ["up_to", "unit_amount", "flat_amount"]
    verbose_name = "volume tier band"
    verbose_name_plural = "volume tier bands (one row per band; the last band's 'up to' stays empty)"

    def _frozen(self, obj) -> bool:
        return obj is not None and obj.pk is not None and price_in_use(obj)

    def has_add_permission(self, request, obj=None) -> bool:
        return super().has_add_permission(request, obj) and not self._frozen(obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return super().has_change_permission(request, obj) and not self._frozen(obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return super().has_delete_permission(request, obj) and not self._frozen(obj)


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = ["plan", "currency", "interval", "unit_amount", "pricing", "tiers_mode", "min_quantity",
                    "max_quantity", "tax_behavior", "is_active"]
    list_filter = ["currency", "interval", "pricing", "tiers_mode", "is_active", "plan__product"]
    list_select_related = ["plan__product"]
    inlines = [PriceTierInline]

    def get_readonly_fields(self, request, obj=None):
        # Customers were charged and credited at these terms: a new amount is a new price.
        if obj is not None and price_in_use(obj):
            return ["plan", *PRICE_TERMS]
        return []


@admin.register(Feature)
class FeatureAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "kind", "unit", "sort_order"]
    search_fields = ["name", "code"]


@admin.register(ChangeRule)
class ChangeRuleAdmin(admin.ModelAdmin):
    list_display = ["position", "name", "direction", "from_product", "from_plan", "from_interval", "to_product",
                    "to_plan", "to_interval", "allowed", "timing", "charge", "credit", "requires_approval",
                    "is_active"]
    list_display_links = ["name"]
    list_editable = ["position", "is_active"]
    list_select_related = ["from_product", "from_plan__product", "to_product", "to_plan__product"]
    fieldsets = [
        (None, {"fields": ["position", "name", "is_active"],
                "description": "Rules are tried in ascending position; the first active rule that matches a "
                               "change decides it. Empty match fields match anything. A change no rule matches "
                               "is refused."}),
        ("Matches", {"fields": ["direction", ("from_product", "from_plan", "from_interval"),
                                ("to_product", "to_plan", "to_interval")]}),
        ("Decision", {"fields": ["allowed", "refusal_reason", "timing", "charge", "credit", "requires_approval"]}),
    ]


@admin.register(TaxRate)
class TaxRateAdmin(admin.ModelAdmin):
    list_display = ["country", "name", "rate", "valid_from"]
    list_filter = ["country"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class PaymentMethodInline(admin.TabularInline):
    model = PaymentMethod
    extra = 0


class SubscriptionInline(admin.TabularInline):
    model = Subscription
    extra = 0
    fields = ["product", "price", "quantity", "status", "current_period_start", "current_period_end", "version"]
    readonly_fields = fields
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Customer)
class CustomerAdmin(SupportViewAdminMixin, admin.ModelAdmin):
    list_display = ["name", "email", "country", "currency", "timezone", "granularity", "support_link"]
    list_filter = ["country", "currency"]
    search_fields = ["name", "email", "vat_id"]
    readonly_fields = ["entitlements_version", "created_at"]
    inlines = [MembershipInline, PaymentMethodInline, SubscriptionInline]
    actions = [bulk_change_customers]


class SubscriptionAdminForm(forms.ModelForm):
    class Meta:
        model = Subscription
        fields = ["customer", "product", "price", "quantity", "seats_in_use", "discount_percent", "status",
                  "current_period_start", "current_period_end"]

    def clean(self):
        data = super().clean()
        price, product = data.get("price"), data.get("product")
        if price and product and price.plan.product_id != product.pk:
            raise forms.ValidationError(f"{price} belongs to {price.plan.product}, not {product}.")
        if price and data.get("customer") and price.currency != data["customer"].currency:
            raise forms.ValidationError(f"The customer is billed in {data['customer'].currency}; "
                                        f"this price is in {price.currency}.")
        return data


@admin.action(description="Retry the period-end step (clears “needs attention”)", permissions=["change"])
def retry_period_end_step(modeladmin, request, queryset):
    now = timezone.now()
    parked = list(queryset.filter(Q(needs_attention=True) | Q(sweep_failures__gt=0)))
    for row in parked:
        sweep_retry(row=row, actor=request.user, now=now)
    messages.success(request, f"{len(parked)} taken back into the sweep; it runs every minute.")


@admin.register(Subscription)
class SubscriptionAdmin(EmergencyUpgradeAdminMixin, admin.ModelAdmin):
    form = SubscriptionAdminForm
    list_display = ["customer", "product", "price", "quantity", "status", "current_period_end", "version",
                    "needs_attention"]
    list_filter = ["status", "needs_attention", "product"]
    list_select_related = ["customer", "product", "price__plan__product"]
    search_fields = ["customer__name"]
    readonly_fields = ["version", "created_at", "updated_at", "sweep_failures", "sweep_error", "sweep_retry_at",
                       "needs_attention", "pause_starts_at", "paused_until"]  # a pause: retention offers only
    actions = [retry_period_end_step]
    raw_id_fields = ["customer", "price"]

    def get_readonly_fields(self, request, obj=None):
        # Plan, seats, period and status change only through quotes and plan changes (paid, audited).
        if obj is not None:
            return [*self.readonly_fields, "customer", "product", "price", "quantity", "current_period_start",
                    "current_period_end", "discount_percent", "status"]
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        subscription_save_by_staff(subscription=obj, actor=request.user, now=timezone.now(), created=not change)


@admin.register(Quote)
class QuoteAdmin(ReadOnlyAdmin):
    list_display = ["id", "customer", "direction", "from_price", "to_price", "to_quantity", "amount_due",
                    "currency", "status", "created_at", "expires_at"]
    list_filter = ["status", "direction", "timing"]
    list_select_related = ["customer", "from_price__plan__product", "to_price__plan__product"]
    search_fields = ["customer__name"]


@admin.action(description="Cancel selected scheduled changes", permissions=["change"])
def cancel_scheduled_changes(modeladmin, request, queryset):
    now = timezone.now()
    done = 0
    for change in queryset.filter(status__in=[PlanChange.Status.SCHEDULED, PlanChange.Status.REQUIRES_ACTION]):
        try:
            plan_change_cancel(plan_change=change, actor=request.user, now=now, reason_code="staff_cancelled")
            done += 1
        except BillingError as exc:
            messages.error(request, f"Plan change {change.pk}: {exc.detail}")
    messages.success(request, f"Cancelled {done} change(s).")


@admin.register(PlanChange)
class PlanChangeAdmin(RollbackAdminMixin, admin.ModelAdmin):
    list_display = ["id", "customer", "direction", "from_price", "to_price", "to_quantity", "status",
                    "amount_due", "currency", "effective_at", "applied_at", "needs_attention"]
    list_filter = ["status", "needs_attention", "direction", "timing"]
    list_select_related = ["customer", "from_price__plan__product", "to_price__plan__product"]
    search_fields = ["customer__name", "payment_reference"]
    actions = [cancel_scheduled_changes, retry_period_end_step, roll_back_plan_change]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]


@admin.register(BalanceEntry)
class BalanceEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "customer", "amount", "currency", "kind", "description"]
    list_filter = ["kind", "currency"]
    list_select_related = ["customer"]
    search_fields = ["customer__name"]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """Customer emails (the outbox): what was sent to whom and when, and what is still waiting or failing."""

    list_display = ["created_at", "customer", "kind", "to_email", "language", "status", "sent_at", "attempts",
                    "last_error"]
    list_filter = ["status", "kind", "language"]
    list_select_related = ["customer"]
    search_fields = ["customer__name", "to_email", "key"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_label", "action", "reason_code", "customer", "object_type", "object_id"]
    list_filter = ["action", "reason_code"]
    list_select_related = ["customer"]
    search_fields = ["customer__name", "actor_label", "object_id"]
    date_hierarchy = "created_at"


@admin.register(LegalEntity)
class LegalEntityAdmin(admin.ModelAdmin):
    list_display = ["name", "country", "vat_id", "base_currency", "invoice_prefix", "credit_note_prefix", "is_default"]


@admin.register(DocumentSeries)
class DocumentSeriesAdmin(ReadOnlyAdmin):
    list_display = ["legal_entity", "kind", "year", "prefix", "next_number"]


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    can_delete = False
    fields = ["position", "description", "detail", "quantity", "unit_amount", "amount", "tax_rate"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class FinanceExportForm(forms.Form):
    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"}))
    format = forms.ChoiceField(choices=[("csv", "CSV"), ("xlsx", "Excel (XLSX)")])

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["end"] < data["start"]:
            raise forms.ValidationError("The period ends before it starts.")
        return data


class CashRefundForm(forms.Form):
    reason = forms.CharField(max_length=300, widget=forms.Textarea(attrs={"rows": 3}),
                             help_text="Why the customer gets cash instead of account credit (kept in the audit trail).")


class FinanceZipForm(forms.Form):
    month = forms.CharField(label="Month", widget=forms.DateInput(attrs={"type": "month"}),
                            help_text="YYYY-MM: every invoice and credit note issued that month.")

    def clean_month(self) -> tuple[int, int]:
        try:
            year, month = (int(part) for part in self.cleaned_data["month"].split("-"))
            date(year, month, 1)
        except (ValueError, TypeError):
            raise forms.ValidationError("Give the month as YYYY-MM, e.g. 2026-11.") from None
        return year, month


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    """Issued documents are immutable: corrections are credit notes. Finance downloads and exports here."""

    list_display = ["number", "kind", "billing_reason", "status", "customer", "issued_at", "total", "amount_due",
                    "currency", "next_payment_attempt_at", "pdf_link"]
    list_filter = ["kind", "billing_reason", "status", "currency", "reverse_charge"]
    list_select_related = ["customer"]
    search_fields = ["number", "customer__name", "buyer_vat_id"]
    date_hierarchy = "issued_at"
    inlines = [InvoiceLineInline, PaymentAttemptInline]
    change_list_template = "admin/billing/invoice/change_list.html"

    @admin.display(description="PDF")
    def pdf_link(self, obj: Invoice) -> str:
        if obj.status == Invoice.Status.DRAFT:
            return "–"
        links = format_html('<a href="{}">PDF</a>', reverse("admin:billing_invoice_pdf", args=[obj.pk]))
        if obj.kind == Invoice.Kind.CREDIT_NOTE:
            links += format_html(' · <a href="{}">Refund in cash</a>',
                                 reverse("admin:billing_invoice_refund", args=[obj.pk]))
        return links

    def get_urls(self):
        return [
            path("<int:invoice_id>/pdf/", self.admin_site.admin_view(self.pdf_view), name="billing_invoice_pdf"),
            path("export/", self.admin_site.admin_view(self.export_view), name="billing_invoice_export"),
            path("zip/", self.admin_site.admin_view(self.zip_view), name="billing_invoice_zip"),
            path("<int:invoice_id>/refund/", self.admin_site.admin_view(self.refund_view),
                 name="billing_invoice_refund"),
            *super().get_urls(),
        ]

    def pdf_view(self, request, invoice_id: int):
        if not request.user.has_perm("billing.download_invoice"):
            raise PermissionDenied("Downloading documents needs the 'download invoice' permission.")
        invoice = Invoice.objects.exclude(status=Invoice.Status.DRAFT).filter(pk=invoice_id).first()
        if invoice is None:
            raise Http404("No such issued document.")
        invoice = invoice_pdf_render(invoice_id=invoice.pk)
        return FileResponse(invoice.pdf.open("rb"), as_attachment=True, filename=f"{invoice.number}.pdf",
                            content_type="application/pdf")

    def refund_view(self, request, invoice_id: int):
        """Pay an issued credit note back to the card, with a mandatory reason (audited)."""
        if not request.user.has_perm("billing.refund_credit_note"):
            raise PermissionDenied("Cash refunds need the 'refund credit note' permission.")
        credit_note = Invoice.objects.filter(pk=invoice_id, kind=Invoice.Kind.CREDIT_NOTE).first()
        if credit_note is None:
            raise Http404("No such credit note.")
        form = CashRefundForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                refund = credit_note_refund(credit_note=credit_note, actor=request.user,
                                            reason=form.cleaned_data["reason"], now=timezone.now())
            except BillingError as exc:
                messages.error(request, exc.detail)
            else:
                level = messages.SUCCESS if refund.status == "succeeded" else messages.ERROR
                messages.add_message(request, level, f"Refund of {credit_note.number}: {refund.get_status_display()}"
                                     f"{' (' + refund.failure_message + ')' if refund.failure_message else ''}.")
                return HttpResponseRedirect(reverse("admin:billing_invoice_change", args=[credit_note.pk]))
        return self._finance_page(request, form, f"Refund {credit_note.number} ({credit_note.total} "
                                                 f"{credit_note.currency}) to the card")

    def _finance_page(self, request, form, title: str):
        return TemplateResponse(request, "admin/billing/invoice/finance_form.html", {
            **self.admin_site.each_context(request), "form": form, "title": title, "opts": self.model._meta})

    def export_view(self, request):
        if not request.user.has_perm("billing.export_invoices"):
            raise PermissionDenied("Exports need the 'export invoices' permission.")
        form = FinanceExportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            entity = legal_entity_default()
            rows = report_rows(entity=entity, start=form.cleaned_data["start"], end=form.cleaned_data["end"])
            name = f"documents-{form.cleaned_data['start']}-{form.cleaned_data['end']}"
            if form.cleaned_data["format"] == "xlsx":
                return HttpResponse(report_xlsx(rows), headers={
                    "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    "Content-Disposition": f'attachment; filename="{name}.xlsx"'})
            return HttpResponse(report_csv(rows), headers={
                "Content-Type": "text/csv; charset=utf-8", "Content-Disposition": f'attachment; filename="{name}.csv"'})
        return self._finance_page(request, form, "Export invoices and credit notes")

    def zip_view(self, request):
        if not request.user.has_perm("billing.export_invoices"):
            raise PermissionDenied("Exports need the 'export invoices' permission.")
        form = FinanceZipForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            year, month = form.cleaned_data["month"]
            content = documents_zip(entity=legal_entity_default(), year=year, month=month)
            return HttpResponse(content, headers={
                "Content-Type": "application/zip",
                "Content-Disposition": f'attachment; filename="documents-{year}-{month:02d}.zip"'})
        return self._finance_page(request, form, "A month's documents as one ZIP")


@admin.register(ExchangeRate)
class ExchangeRateAdmin(admin.ModelAdmin):
    list_display = ["base_currency", "quote_currency", "rate", "valid_on"]
    list_filter = ["base_currency", "quote_currency"]


@admin.register(CashRefund)
class CashRefundAdmin(ReadOnlyAdmin):
    list_display = ["credit_note", "customer", "amount", "currency", "status", "created_by", "created_at", "reason"]
    list_filter = ["status", "currency"]
    list_select_related = ["credit_note", "customer", "created_by"]


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "type", "received_at", "processed_at"]
    list_filter = ["type"]
    search_fields = ["event_id"]


@admin.register(LocalPayment)
class LocalPaymentAdmin(ReadOnlyAdmin):
    list_display = ["reference", "status", "amount_minor", "currency", "payment_method", "created_at"]
    list_filter = ["status"]
from billing import admin_contracts  # noqa: E402,F401 - contracts, amendments and approvals (registers them)
