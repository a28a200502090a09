"""Trials in admin: read-only records (they change only through the services: the portal, the retention offer flow
and the sweep), with staff's one action, ending a running trial now (falls back: nothing charged, nothing deleted)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone

from billing.errors import BillingError
from retention.models import Trial
from retention.services.trials import trial_end_early


@admin.action(description="End the selected running trials now (back to the paid plan, nothing charged)",
              permissions=["change"])
def end_trials_now(modeladmin, request, queryset):
    ended = 0
    for trial in queryset.filter(status=Trial.Status.ACTIVE):
        try:
            trial_end_early(trial=trial, actor=request.user, now=timezone.now())
            ended += 1
        except BillingError as error:
            messages.error(request, f"Trial {trial.pk}: {error.detail}")
    messages.success(request, f"{ended} trial(s) ended.")


@admin.register(Trial)
class TrialAdmin(admin.ModelAdmin):
    list_display = ["customer", "plan", "status", "starts_at", "ends_at", "convert_opt_in", "source", "outcome_code"]
    list_filter = ["status", "source", "convert_opt_in", "product"]
    list_select_related = ["customer", "plan__product"]
    search_fields = ["customer__name"]
    date_hierarchy = "starts_at"
    actions = [end_trials_now]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Trial._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
