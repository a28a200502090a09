"""Admin for the exit flow: reasons and offers are edited here (validated so every offer can be applied as shown);
surveys and the offers shown in them are records, read-only. Django's model permissions apply to each."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import admin

from billing.admin import ReadOnlyAdmin
from billing.models import Price
from billing.money import is_currency, minor_unit
from retention.models import ExitReason, ExitSurvey, OfferPresentation, RetentionOffer


@admin.register(ExitReason)
class ExitReasonAdmin(admin.ModelAdmin):
    list_display = ["label", "code", "asks_details", "position", "is_active"]
    list_editable = ["position", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["code", "label"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # surveys keep their reason: deactivate a reason instead


class RetentionOfferForm(forms.ModelForm):
    class Meta:
        model = RetentionOffer
        fields = ["name", "headline", "kind", "is_active", "priority", "percent_off", "amount_off", "currency",
                  "periods", "target_plan", "trial_days", "flow", "reasons", "plans", "min_tenure_days",
                  "cooldown_days"]
        help_texts = {
            "amount_off": "Discount: an amount off each of the next N renewal invoices (credited to the customer's "
                          "balance just before each, at most its total), instead of percent off. Offered only to "
                          "subscriptions billed in its currency (docs/retention.md).",
            "currency": "With amount off only: a currency the catalog sells (ISO 4217, e.g. EUR).",
        }

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        errors: dict[str, str] = {}
        percent, amount, periods = data.get("percent_off"), data.get("amount_off"), data.get("periods")
        currency = (data.get("currency") or "").strip().upper()
        if currency:
            data["currency"] = currency
        if kind == RetentionOffer.Kind.DISCOUNT:
            if percent is not None and amount is not None:
                errors["amount_off"] = "Give either percent off or an amount off, not both."
            elif amount is not None:
                errors.update(_amount_off_errors(amount, currency))
            elif percent is None:
                errors["percent_off"] = "A discount needs percent off or an amount off."
            elif not (0 < percent <= 100):
                errors["percent_off"] = "Percent off must be more than 0 and at most 100."
            if percent is not None and currency:
                errors["currency"] = "A currency goes with an amount off only."
            if not periods:
                errors["periods"] = "A discount needs the number of billing periods it lasts (at least 1)."
        elif kind == RetentionOffer.Kind.PAUSE:
            if not periods:
                errors["periods"] = "A pause needs the number of billing periods it lasts (at least 1)."
            if periods and periods > 12:
                errors["periods"] = "A pause lasts at most 12 billing periods."
        if kind in (RetentionOffer.Kind.CROSSGRADE, RetentionOffer.Kind.TRIAL) and data.get("target_plan") is None:
            errors["target_plan"] = ("A cross-grade needs the cheaper plan to offer." if kind == "crossgrade"
                                     else "A trial needs the higher plan to try.")
        if kind == RetentionOffer.Kind.TRIAL and not data.get("trial_days"):
            errors["trial_days"] = "A trial needs its length in days (at least 1)."
        if kind != RetentionOffer.Kind.DISCOUNT and (percent is not None or amount is not None):
            errors["percent_off"] = "Only a discount has percent or amount off."
        if currency and not is_currency(currency) and "currency" not in errors:
            errors["currency"] = f"{currency} is not an ISO 4217 currency code."
        if errors:
            raise forms.ValidationError(errors)
        return data


def _amount_off_errors(amount: Decimal, currency: str) -> dict[str, str]:
    """An amount off must be positive, in a currency the catalog sells, with at most that currency's minor-unit
    digits (the credit is money the invoice applies as it is: never rounded on the way)."""
    if not currency:
        return {"currency": "An amount off needs its currency."}
    if not is_currency(currency):
        return {"currency": f"{currency} is not an ISO 4217 currency code."}
    if not Price.objects.filter(currency=currency).exists():
        return {"currency": f"Nothing in the catalog is sold in {currency}."}
    if amount <= 0:
        return {"amount_off": "The amount off must be more than zero."}
    digits = minor_unit(currency)
    if amount != amount.quantize(Decimal(1).scaleb(-digits)):
        return {"amount_off": f"{currency} has {digits} digit(s) after the decimal point; the amount off cannot have "
                              "more."}
    return {}


@admin.register(RetentionOffer)
class RetentionOfferAdmin(admin.ModelAdmin):
    form = RetentionOfferForm
    list_display = ["name", "kind", "headline", "flow", "priority", "min_tenure_days", "cooldown_days", "is_active"]
    list_filter = ["kind", "flow", "is_active"]
    list_select_related = ["target_plan__product"]
    search_fields = ["name", "headline"]
    filter_horizontal = ["reasons", "plans"]
    fieldsets = [
        (None, {"fields": ["name", "headline", "kind", "is_active", "priority"]}),
        ("Effect", {"fields": ["percent_off", "amount_off", "currency", "periods", "target_plan", "trial_days"],
                    "description": "Discount: percent off, or an amount off each invoice, for N renewals, starting at "
                                   "the next renewal. Pause: N "
                                   "periods without an invoice, then billing resumes by itself. Cross-grade: the "
                                   "cheaper plan, same currency, interval and seats. Trial: the higher plan, N days."}),
        ("Who sees it", {"fields": ["flow", "reasons", "plans", "min_tenure_days", "cooldown_days"]}),
    ]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # shown offers are history: deactivate instead


class OfferPresentationInline(admin.TabularInline):
    model = OfferPresentation
    extra = 0
    can_delete = False
    fields = ["offer", "status", "currency", "revenue_at_risk", "effect", "shown_at", "decided_at", "decided_by"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ExitSurvey)
class ExitSurveyAdmin(ReadOnlyAdmin):  # what the customer said: viewable with the view permission, never edited
    list_display = ["customer", "flow", "reason", "created_at", "plan_change"]
    list_filter = ["flow", "reason"]
    list_select_related = ["customer", "reason", "plan_change"]
    search_fields = ["customer__name", "details"]
    date_hierarchy = "created_at"
    inlines = [OfferPresentationInline]
    readonly_fields = ["customer", "subscription", "flow", "reason", "details", "target_price", "target_quantity",
                       "quote", "plan_change", "created_by", "created_at"]


@admin.register(OfferPresentation)
class OfferPresentationAdmin(ReadOnlyAdmin):
    list_display = ["offer", "customer", "status", "revenue_at_risk", "currency", "shown_at", "decided_at"]
    list_filter = ["status", "offer"]
    list_select_related = ["offer", "customer"]
    date_hierarchy = "shown_at"
    readonly_fields = ["survey", "offer", "customer", "status", "currency", "revenue_at_risk", "effect", "quote",
                       "shown_at", "decided_at", "decided_by"]
