"""Admin for renewal-window offers: staff edit the offers; dismissals and offer quotes are read-only records."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, Q

from billing.admin import ReadOnlyAdmin
from retention.models import RenewalOffer, RenewalOfferDismissal, RenewalOfferQuote


@admin.register(RenewalOffer)
class RenewalOfferAdmin(admin.ModelAdmin):
    list_display = ["name", "target_interval", "window_days", "email_after_days", "discount_percent", "priority",
                    "is_active", "quotes_made", "switched", "dismissed"]
    list_editable = ["priority", "is_active"]
    list_filter = ["is_active", "target_interval"]
    filter_horizontal = ["products", "plans"]
    fieldsets = [
        (None, {"fields": ["name", "headline", "is_active", "priority"],
                "description": "A monthly subscriber sees the first active offer (lowest priority) that fits their "
                               "product and plan, in the window before their renewal: the same plan billed on the "
                               "target interval, with the saving as an amount and a percentage. Amounts come from "
                               "the quote service (PRORATION.md): switching resets the billing anchor, charges the "
                               "full first period and credits the unused part of the month."}),
        ("Who sees it", {"fields": ["products", "plans"]}),
        ("When", {"fields": ["window_days", "send_email", "email_after_days"]}),
        ("Terms", {"fields": ["target_interval", "discount_percent"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            _quotes=Count("quotes", distinct=True),
            _switched=Count("quotes", filter=Q(quotes__quote__plan_changes__status="applied"), distinct=True),
            _dismissed=Count("dismissals", distinct=True))

    @admin.display(description="Quotes made", ordering="_quotes")
    def quotes_made(self, obj: RenewalOffer) -> int:
        return obj._quotes

    @admin.display(description="Switched", ordering="_switched")
    def switched(self, obj: RenewalOffer) -> int:
        return obj._switched

    @admin.display(description="Not now", ordering="_dismissed")
    def dismissed(self, obj: RenewalOffer) -> int:
        return obj._dismissed



@admin.register(RenewalOfferDismissal)
class RenewalOfferDismissalAdmin(ReadOnlyAdmin):
    list_display = ["subscription", "period_end", "offer", "dismissed_by", "dismissed_at"]
    list_select_related = ["subscription__customer", "subscription__price__plan", "offer", "dismissed_by"]
    date_hierarchy = "dismissed_at"


@admin.register(RenewalOfferQuote)
class RenewalOfferQuoteAdmin(ReadOnlyAdmin):
    list_display = ["quote", "offer", "subscription", "period_end", "created_at"]
    list_select_related = ["quote__customer", "offer", "subscription__customer", "subscription__price__plan"]
    date_hierarchy = "created_at"
