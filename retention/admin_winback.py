"""Win-back in admin: campaigns with their steps, enrolments and opt-outs (read-only records), and the staff report
(offers shown, accepted, declined, revenue saved; win-back emails and conversions) with a CSV download."""

from __future__ import annotations

import csv
from datetime import timedelta

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.template.loader import select_template
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from billing.admin import ReadOnlyAdmin
from retention.models import EmailOptOut, WinBackCampaign, WinBackEnrolment, WinBackSend, WinBackStep
from retention.selectors.report import retention_report_csv_rows, retention_report_get

REPORT_PERMISSION = "retention.view_retention_report"


class WinBackStepForm(forms.ModelForm):
    class Meta:
        model = WinBackStep
        fields = ["position", "delay_days", "offer", "email_kind", "subject"]

    def clean_email_kind(self) -> str:
        kind = self.cleaned_data["email_kind"]
        try:
            select_template([f"emails/{kind}.subject.txt"])
            select_template([f"emails/{kind}.txt"])
            select_template([f"emails/{kind}.html"])
        except Exception:
            raise ValidationError(f"No email templates emails/{kind}.subject.txt, .txt and .html exist.") from None
        return kind


class WinBackStepInline(admin.TabularInline):
    model = WinBackStep
    form = WinBackStepForm
    extra = 0
    autocomplete_fields = []


@admin.register(WinBackCampaign)
class WinBackCampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "trigger", "is_active", "stop_on_return", "max_age_days"]
    list_filter = ["trigger", "is_active"]
    inlines = [WinBackStepInline]

    def get_urls(self):
        return [path("report/", self.admin_site.admin_view(self.report_view), name="retention_report"),
                *super().get_urls()]

    def report_view(self, request):
        if not request.user.has_perm(REPORT_PERMISSION):
            raise PermissionDenied("The retention report needs the 'view retention and win-back report' permission.")
        today = timezone.localdate()
        form = ReportPeriodForm(request.GET or None, initial={"start": today - timedelta(days=29), "end": today})
        if request.GET and form.is_valid():
            start, end = form.cleaned_data["start"], form.cleaned_data["end"]
        else:
            start, end = today - timedelta(days=29), today
        report = retention_report_get(start=start, end=end) if not (request.GET and form.errors) else None
        if report is not None and request.GET.get("format") == "csv":
            response = HttpResponse(content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="retention-{start}-{end}.csv"'
            csv.writer(response).writerows(retention_report_csv_rows(report))
            return response
        return TemplateResponse(request, "admin/retention/report.html", {
            **self.admin_site.each_context(request), "title": "Retention and win-back report",
            "opts": self.model._meta, "form": form, "report": report, "start": start, "end": end})


class ReportPeriodForm(forms.Form):
    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To (included)", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end"):
            if data["start"] > data["end"]:
                raise ValidationError("'From' must be on or before 'To'.")
            if (data["end"] - data["start"]).days > 3660:
                raise ValidationError("Choose a period of at most ten years.")
        return data



@admin.register(WinBackEnrolment)
class WinBackEnrolmentAdmin(ReadOnlyAdmin):
    list_display = ["customer", "campaign", "status", "triggered_at", "next_position", "next_send_at",
                    "converted_at", "revenue_won_back", "currency"]
    list_filter = ["status", "campaign"]
    list_select_related = ["customer", "campaign"]
    search_fields = ["customer__name", "customer__email"]
    date_hierarchy = "triggered_at"


@admin.register(WinBackSend)
class WinBackSendAdmin(ReadOnlyAdmin):
    list_display = ["enrolment", "step", "notification", "created_at"]
    list_select_related = ["enrolment__customer", "enrolment__campaign", "step__campaign", "notification"]


@admin.register(EmailOptOut)
class EmailOptOutAdmin(admin.ModelAdmin):
    list_display = ["customer", "source", "created_at"]
    list_select_related = ["customer"]
    search_fields = ["customer__name", "customer__email"]
    readonly_fields = ["created_at"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        from retention.services.winback import winback_opt_out

        winback_opt_out(customer_id=obj.customer_id, source=EmailOptOut.Source.STAFF, now=timezone.now())
