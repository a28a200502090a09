"""Back office: bulk plan changes (a CSV or a customer selection → preview with the total → confirm → workers run it
in chunks, with progress and a results file) and staff changes at a date. Views parse, call one service, render."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.errors import BillingError
from billing.models import BulkJob, Interval, Product, ScheduledChange
from billing.services.bulk_jobs import (
    CSV_COLUMNS,
    MAX_ROWS,
    bulk_job_cancel,
    bulk_job_confirm,
    bulk_job_from_csv,
    bulk_job_from_selection,
    bulk_job_progress,
    bulk_job_results_csv,
)
from billing.services.scheduled_changes import scheduled_change_cancel, scheduled_change_create

MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class BulkUploadForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="A name to find the job again, e.g. 'Q3 repricing'.")
    reason = forms.CharField(max_length=300, help_text="Why these changes are made; recorded on every change.")
    file = forms.FileField(help_text=f"CSV with a header row: {', '.join(CSV_COLUMNS)}. customer = id or exact name; "
                                     "seats empty = keep; effective_date empty = now, or YYYY-MM-DD (midnight on the "
                                     f"customer's billing calendar). Up to {MAX_ROWS:,} rows.")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The file is {upload.size // 1024:,} KB; at most {MAX_UPLOAD_BYTES // 1024:,} KB.")
        return upload


class BulkSelectionForm(forms.Form):
    name = forms.CharField(max_length=200)
    reason = forms.CharField(max_length=300, help_text="Why these changes are made; recorded on every change.")
    product = forms.ModelChoiceField(queryset=Product.objects.filter(is_active=True), to_field_name="code")
    plan = forms.SlugField(help_text="The target plan's code within the product, e.g. 'pro'.")
    interval = forms.ChoiceField(choices=Interval.choices)
    seats = forms.IntegerField(required=False, min_value=1, help_text="Empty keeps each subscription's seats.")
    effective_date = forms.DateField(required=False, help_text="Empty: now. A date: midnight on each customer's "
                                                               "billing calendar.")


@admin.action(description="Bulk change selected customers…", permissions=["view"])
def bulk_change_customers(modeladmin, request, queryset):
    if not request.user.has_perm("billing.add_bulkjob"):
        raise PermissionDenied("Bulk changes need the 'add bulk job' permission.")
    if "apply" in request.POST:
        form = BulkSelectionForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = bulk_job_from_selection(
                    name=data["name"], reason=data["reason"], customers=list(queryset), product=data["product"].code,
                    plan=data["plan"], interval=data["interval"], seats=data["seats"],
                    effective=data["effective_date"].isoformat() if data["effective_date"] else "",
                    actor=request.user, now=timezone.now())
            except BillingError as error:
                messages.error(request, error.detail)
            else:
                return HttpResponseRedirect(reverse("admin:billing_bulkjob_job", args=[job.pk]))
    else:
        form = BulkSelectionForm()
    return TemplateResponse(request, "admin/billing/bulkjob/selection.html", {
        **modeladmin.admin_site.each_context(request), "form": form, "customers": queryset,
        "title": f"Bulk change {queryset.count()} customer(s)", "opts": modeladmin.model._meta,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME})


@admin.register(BulkJob)
class BulkJobAdmin(admin.ModelAdmin):
    """Upload or select → preview (amount due now per currency, every row's check) → confirm → progress → results."""

    list_display = ["name", "status", "progress", "created_by", "created_at", "confirmed_at", "finished_at"]
    list_filter = ["status"]
    list_select_related = ["created_by"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Progress")
    def progress(self, obj: BulkJob) -> str:
        p = bulk_job_progress(job=obj)
        return f"{p['finished']:,} / {p['total']:,}"

    def get_urls(self):
        return [
            path("upload/", self.admin_site.admin_view(self.upload_view), name="billing_bulkjob_upload"),
            path("<int:job_id>/", self.admin_site.admin_view(self.job_view), name="billing_bulkjob_job"),
            path("<int:job_id>/progress/", self.admin_site.admin_view(self.progress_view),
                 name="billing_bulkjob_progress"),
            path("<int:job_id>/results.csv", self.admin_site.admin_view(self.results_view),
                 name="billing_bulkjob_results"),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:billing_bulkjob_upload"))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:billing_bulkjob_job", args=[object_id]))

    def upload_view(self, request):
        if not request.user.has_perm("billing.add_bulkjob"):
            raise PermissionDenied("Bulk changes need the 'add bulk job' permission.")
        form = BulkUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = bulk_job_from_csv(name=form.cleaned_data["name"], reason=form.cleaned_data["reason"],
                                        data=form.cleaned_data["file"].read(), actor=request.user, now=timezone.now())
            except BillingError as error:
                form.add_error("file", error.detail)
            else:
                return HttpResponseRedirect(reverse("admin:billing_bulkjob_job", args=[job.pk]))
        return TemplateResponse(request, "admin/billing/bulkjob/upload.html", {
            **self.admin_site.each_context(request), "form": form, "title": "Bulk change from a CSV",
            "opts": self.model._meta})

    def _job(self, request, job_id: int) -> BulkJob:
        if not self.has_view_permission(request):
            raise PermissionDenied("Viewing bulk jobs needs the 'view bulk job' permission.")
        return get_object_or_404(BulkJob, pk=job_id)

    def job_view(self, request, job_id: int):
        job = self._job(request, job_id)
        if request.method == "POST":
            if not request.user.has_perm("billing.run_bulk_job"):
                raise PermissionDenied("Confirming bulk changes needs the 'run bulk job' permission.")
            try:
                if "confirm" in request.POST:
                    bulk_job_confirm(job=job, actor=request.user, now=timezone.now())
                    messages.success(request, "Confirmed: the workers are applying the changes.")
                elif "discard" in request.POST:
                    bulk_job_cancel(job=job, actor=request.user, now=timezone.now())
                    messages.info(request, "Discarded: nothing was changed.")
            except BillingError as error:
                messages.error(request, error.detail)
            return HttpResponseRedirect(reverse("admin:billing_bulkjob_job", args=[job.pk]))
        rows = job.rows.select_related("customer", "to_price__plan__product").order_by("line_number", "id")
        return TemplateResponse(request, "admin/billing/bulkjob/job.html", {
            **self.admin_site.each_context(request), "job": job, "title": f"Bulk job: {job.name}",
            "opts": self.model._meta, "progress": bulk_job_progress(job=job), "rows": rows[:200],
            "invalid": job.rows.filter(status=ScheduledChange.Status.INVALID).count(),
            "can_run": request.user.has_perm("billing.run_bulk_job")})

    def progress_view(self, request, job_id: int):
        job = self._job(request, job_id)
        return TemplateResponse(request, "admin/billing/bulkjob/_progress.html", {
            "job": job, "progress": bulk_job_progress(job=job)})

    def results_view(self, request, job_id: int):
        job = self._job(request, job_id)
        return HttpResponse(bulk_job_results_csv(job=job), headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="bulk-job-{job.pk}-results.csv"'})


class ScheduledChangeForm(forms.ModelForm):
    class Meta:
        model = ScheduledChange
        fields = ["subscription", "to_price", "to_quantity", "effective_at", "reason"]
        help_texts = {"effective_at": "Any date from now on; the sweep applies due changes every minute, in date "
                                      "order, through a quote (priced then) and its acceptance.",
                      "reason": "Why (audited)."}

    def clean(self):
        data = super().clean()
        for field in ("subscription", "to_price", "to_quantity", "effective_at", "reason"):
            if not data.get(field):
                self.add_error(field, "Required.")
        return data


@admin.register(ScheduledChange)
class ScheduledChangeAdmin(admin.ModelAdmin):
    form = ScheduledChangeForm
    list_display = ["id", "customer", "to_price", "to_quantity", "effective_at", "status", "job", "result_code",
                    "needs_attention", "plan_change_link"]
    list_filter = ["status", "needs_attention", "job"]
    list_select_related = ["customer", "to_price__plan__product", "job"]
    search_fields = ["customer__name"]
    raw_id_fields = ["subscription"]
    actions = ["cancel_selected", "retry_selected"]

    @admin.display(description="Plan change")
    def plan_change_link(self, obj: ScheduledChange) -> str:
        if not obj.plan_change_id:
            return "–"
        return format_html('<a href="{}">{}</a>', reverse("admin:billing_planchange_change", args=[obj.plan_change_id]),
                           obj.plan_change_id)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:  # created once; afterwards it is a record
            return [f.name for f in self.model._meta.fields]
        return []

    def save_model(self, request, obj, form, change):
        if change:
            raise PermissionDenied("A scheduled change is not edited; cancel it and schedule another.")
        try:
            created = scheduled_change_create(
                subscription=form.cleaned_data["subscription"], to_price=form.cleaned_data["to_price"],
                quantity=form.cleaned_data["to_quantity"], effective_at=form.cleaned_data["effective_at"],
                actor=request.user, reason=form.cleaned_data["reason"], now=timezone.now())
        except BillingError as error:
            raise forms.ValidationError(error.detail) from None
        obj.pk = created.pk

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except forms.ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return HttpResponseRedirect(request.get_full_path())

    @admin.action(description="Cancel selected scheduled changes", permissions=["change"])
    def cancel_selected(self, request, queryset):
        done = 0
        for row in queryset.filter(status=ScheduledChange.Status.SCHEDULED):
            scheduled_change_cancel(row=row, actor=request.user, now=timezone.now())
            done += 1
        messages.success(request, f"Cancelled {done} change(s).")

    @admin.action(description="Retry selected (clears “needs attention”)", permissions=["change"])
    def retry_selected(self, request, queryset):
        count = queryset.filter(status__in=ScheduledChange.OPEN).update(needs_attention=False, retry_at=None, attempts=0)
        messages.success(request, f"{count} change(s) back in the sweep.")
