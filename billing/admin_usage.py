"""Feature usage reported by the products (storage, API calls …): what staff look at when a customer is over a limit.
Usage is never cut to a limit; above it the excess is read-only (see docs/retention-trials.md)."""

from __future__ import annotations

from django.contrib import admin

from billing.models import FeatureUsage


@admin.register(FeatureUsage)
class FeatureUsageAdmin(admin.ModelAdmin):
    list_display = ["customer", "feature", "used", "reported_at"]
    list_filter = ["feature"]
    list_select_related = ["customer", "feature"]
    search_fields = ["customer__name"]
    raw_id_fields = ["customer"]
