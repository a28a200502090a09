"""Back office for enterprise contracts: contracts, amendments with a live preview, approval policies, and the
approval queue ("waiting for me") with approve and reject. Every action checks its permission and calls a service.
Registered from billing/admin.py."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.errors import BillingError
from billing.models import (
    Amendment,
    ApprovalPolicy,
    ApprovalPolicyStep,
    ApprovalRequest,
    ApprovalStep,
    Contract,
    ContractPrice,
)
from billing.selectors_approvals import approval_requests_waiting_for
from billing.services.approvals import ChangeFacts, approval_hold_for, approval_request_decide, approval_step_refusal
from billing.services.contracts import (
    amendment_cancel,
    amendment_preview,
    amendment_save_draft,
    amendment_submit,
    contract_prices_recorded,
    contract_save,
    contract_term_for,
)

# --- contracts -------------------------------------------------------------------------------------------------


class ContractPriceFormSet(forms.BaseInlineFormSet):
    """Negotiated prices must be prices of the contract's subscription's product, currency and interval."""

    def clean(self):
        super().clean()
        subscription = getattr(self.instance, "subscription", None) if self.instance.subscription_id else None
        if subscription is None or any(self.errors):
            return
        current = subscription.price
        for form in self.forms:
            price = form.cleaned_data.get("price") if form.cleaned_data else None
            if price is None or form.cleaned_data.get("DELETE"):
                continue
            if (price.plan.product_id, price.currency, price.interval) != (current.plan.product_id, current.currency,
                                                                             current.interval):
                raise ValidationError(f"{price} is not a {current.plan.product} price in {current.currency} billed "
                                      f"{current.interval}ly, like the subscription.")


class ContractPriceInline(admin.TabularInline):
    """Set with the contract; afterwards changed only by an approved 'change price' amendment."""

    model = ContractPrice
    formset = ContractPriceFormSet
    extra = 0
    raw_id_fields = ["price"]
    fields = ["price", "unit_amount"]

    def has_add_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AmendmentInline(admin.TabularInline):
    model = Amendment
    extra = 0
    fields = ["kind", "status", "effective_on", "amount_due", "currency", "submitted_at", "applied_at"]
    readonly_fields = fields
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ContractAddForm(forms.ModelForm):
    term_start_on = forms.DateField(label="Term starts on", widget=forms.DateInput(attrs={"type": "date"}),
                                    help_text="A day on which a billing period of the subscription starts (the "
                                              "current one's start or a later one), on the customer's calendar.")
    term_periods = forms.IntegerField(label="Term length (billing periods)", min_value=1, max_value=120,
                                      help_text="e.g. 12 for one year billed monthly, 1 for one year billed yearly.")

    class Meta:
        model = Contract
        fields = ["subscription", "number", "committed_seats", "minimum_spend", "purchase_order", "budget_cap",
                  "auto_renew", "renewal_term_months", "renewal_notice_days", "notes"]

    def clean(self):
        data = super().clean()
        subscription = data.get("subscription")
        if subscription is None or not data.get("term_start_on") or not data.get("term_periods"):
            return data
        if Contract.objects.filter(subscription=subscription).exists():
            raise ValidationError("This subscription has a contract already: amend that one.")
        if subscription.status == subscription.Status.CANCELLED:
            raise ValidationError("This subscription has ended: a contract governs a live subscription.")
        start, end = contract_term_for(subscription=subscription, start_on=data["term_start_on"],
                                       periods=data["term_periods"])
        self.instance.term_start, self.instance.term_end = start, end
        self.instance.customer_id = subscription.customer_id
        self.instance.currency = subscription.price.currency
        self.instance.billing_interval = subscription.price.interval
        return data


class ContractChangeForm(forms.ModelForm):
    class Meta:
        model = Contract
        fields = ["committed_seats", "minimum_spend", "purchase_order", "budget_cap", "auto_renew",
                  "renewal_term_months", "renewal_notice_days", "notes"]


@admin.register(Contract)
class ContractAdmin(admin.ModelAdmin):
    list_display = ["number", "customer", "subscription", "term_start", "term_end", "billing_interval",
                    "committed_seats", "minimum_spend", "budget_cap", "purchase_order"]
    list_select_related = ["customer", "subscription__price__plan__product"]
    search_fields = ["number", "customer__name", "purchase_order"]
    raw_id_fields = ["subscription"]
    inlines = [ContractPriceInline, AmendmentInline]
    change_form_template = "admin/billing/contract/change_form.html"

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = ContractChangeForm if obj is not None else ContractAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["subscription", "number", "term_start_on", "term_periods", "committed_seats", "minimum_spend",
                    "purchase_order", "budget_cap", "auto_renew", "renewal_term_months", "renewal_notice_days",
                    "notes"]
        return ["number", "customer", "subscription", "term_start", "term_end", "billing_interval", "currency",
                *ContractChangeForm.Meta.fields, "created_at", "created_by"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["number", "customer", "subscription", "term_start", "term_end", "billing_interval", "currency",
                "created_at", "created_by"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        contract_save(contract=obj, actor=request.user, now=timezone.now(), created=not change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if not change and form.instance.prices.exists():
            contract_prices_recorded(contract=form.instance, actor=request.user, now=timezone.now())


# --- amendments ---------------------------------------------------------------------------------------------------


AMENDMENT_INPUT = ["contract", "kind", "effective_on", "seats", "to_price", "unit_amount", "extend_periods", "note"]


class AmendmentForm(forms.ModelForm):
    class Meta:
        model = Amendment
        fields = AMENDMENT_INPUT
        widgets = {"effective_on": forms.DateInput(attrs={"type": "date"})}

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        draft = Amendment(pk=self.instance.pk, **{name: data.get(name) for name in AMENDMENT_INPUT})
        try:
            amendment_preview(amendment=draft)
        except BillingError as refusal:
            raise ValidationError(refusal.detail) from None
        return data


def _amendment_from_query(query) -> Amendment:
    """An unsaved amendment from the form's fields as they are being typed (the live preview)."""
    form = AmendmentForm(query)
    form.is_valid()  # partial input previews what it can; field errors are shown by the fragment
    data = {name: form.cleaned_data.get(name) for name in AMENDMENT_INPUT if name in form.cleaned_data}
    return Amendment(**data), form


def render_amendment_preview(amendment: Amendment, *, form=None, stored: bool = False) -> str:
    context = {"amendment": amendment, "form_errors": form.errors if form is not None else None}
    if stored:
        context["priced"] = amendment.priced
    else:
        try:
            preview = amendment_preview(amendment=amendment)
        except BillingError as refusal:
            context["refusal"] = refusal.detail
        except Contract.DoesNotExist:
            context["refusal"] = "Choose the contract to amend."
        else:
            context["priced"] = preview.as_json()
            contract = Contract.objects.get(pk=amendment.contract_id)
            try:
                hold = approval_hold_for(facts=ChangeFacts(
                    subject=ApprovalPolicy.AppliesTo.AMENDMENTS, currency=preview.currency,
                    amount_due=preview.amount_due, discount_percent=preview.discount_percent,
                    price_override=preview.price_override, term_change=preview.term_change,
                    budget_cap=contract.budget_cap))
            except BillingError as refusal:
                context["hold_refusal"] = refusal.detail
            else:
                context["hold"] = hold
    return render_to_string("admin/billing/amendment/_preview.html", context)


@admin.register(Amendment)
class AmendmentAdmin(admin.ModelAdmin):
    form = AmendmentForm
    list_display = ["id", "contract", "kind", "status", "effective_on", "amount_due", "currency", "created_by",
                    "submitted_at", "applied_at"]
    list_filter = ["status", "kind"]
    list_select_related = ["contract__customer", "created_by"]
    search_fields = ["contract__number", "contract__customer__name"]
    raw_id_fields = ["to_price"]
    change_form_template = "admin/billing/amendment/change_form.html"

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("effective_on", timezone.localdate())
        return initial

    DONE = ["status", "preview", "approval", "plan_change", "created_by", "created_at", "submitted_by", "submitted_at",
            "applied_at", "failure_code", "failure_message"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return AMENDMENT_INPUT
        if obj.status == Amendment.Status.DRAFT:
            return [*AMENDMENT_INPUT, "status", "created_by", "created_at"]
        return [*AMENDMENT_INPUT, *self.DONE]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        if obj.status == Amendment.Status.DRAFT:
            return ["status", "created_by", "created_at"]
        return [*AMENDMENT_INPUT, *self.DONE]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        """Drafts get the live preview (priced as saved until the form is edited); others show it as submitted."""
        obj = self.get_object(request, object_id) if object_id else None
        draft = obj is None or obj.status == Amendment.Status.DRAFT
        extra_context = {**(extra_context or {}), "open_statuses": list(Amendment.OPEN), "live_preview": draft,
                         "live_preview_html": render_amendment_preview(obj) if obj is not None and draft else "",
                         "can_act": super().has_change_permission(request, obj)}
        return super().changeform_view(request, object_id, form_url, extra_context)

    def has_change_permission(self, request, obj=None) -> bool:
        """Only drafts are edited; a submitted amendment is read-only (it can still be cancelled while open)."""
        if obj is not None and obj.status != Amendment.Status.DRAFT:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Preview (as it would apply)")
    def preview(self, obj: Amendment) -> str:
        return format_html("{}", render_amendment_preview(obj, stored=obj.status != Amendment.Status.DRAFT)) \
            if obj.pk else "–"

    @admin.display(description="Approval")
    def approval(self, obj: Amendment) -> str:
        request = obj.approval_requests.order_by("-pk").first()
        if request is None:
            return "–"
        url = reverse("admin:billing_approvalrequest_change", args=[request.pk])
        return format_html('<a href="{}">Request {}</a>: {}', url, request.pk, request.get_status_display())

    def save_model(self, request, obj, form, change):
        amendment_save_draft(amendment=obj, actor=request.user, now=timezone.now())

    def get_urls(self):
        return [
            path("preview/", self.admin_site.admin_view(self.preview_view), name="billing_amendment_preview"),
            path("<int:amendment_id>/submit/", self.admin_site.admin_view(self.submit_view),
                 name="billing_amendment_submit"),
            path("<int:amendment_id>/cancel/", self.admin_site.admin_view(self.cancel_view),
                 name="billing_amendment_cancel"),
            *super().get_urls(),
        ]

    def preview_view(self, request):
        """The live preview: an HTML fragment priced from the form's current fields."""
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            raise PermissionDenied
        amendment, form = _amendment_from_query(request.GET)
        return HttpResponse(render_amendment_preview(amendment, form=form))

    def _post_action(self, request, amendment_id: int, action, done: str):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        get_object_or_404(Amendment, pk=amendment_id)
        try:
            amendment = action(amendment_id=amendment_id, actor=request.user, now=timezone.now())
        except BillingError as error:
            messages.error(request, error.detail)
        else:
            messages.success(request, f"Amendment {amendment.pk} {done}: {amendment.get_status_display().lower()}.")
        return HttpResponseRedirect(reverse("admin:billing_amendment_change", args=[amendment_id]))

    def submit_view(self, request, amendment_id: int):
        return self._post_action(request, amendment_id, amendment_submit, "submitted")

    def cancel_view(self, request, amendment_id: int):
        return self._post_action(request, amendment_id, amendment_cancel, "cancelled")


# --- approval policies ----------------------------------------------------------------------------------------------


class ApprovalPolicyStepInline(admin.TabularInline):
    model = ApprovalPolicyStep
    extra = 1
    fields = ["position", "group"]


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(admin.ModelAdmin):
    list_display = ["position", "name", "applies_to", "trigger", "threshold", "currency", "roles", "in_order",
                    "decide_within_hours", "is_active"]
    list_display_links = ["name"]
    list_editable = ["position", "is_active"]
    inlines = [ApprovalPolicyStepInline]
    fieldsets = [
        (None, {"fields": ["position", "name", "is_active"],
                "description": "Every active policy that matches a change asks for its roles' approval; a role "
                               "named by two policies is asked once. Steps go in order when any matching policy "
                               "says so; the shortest deadline wins. A change rule requiring approval or a change "
                               "over the contract's budget cap with no policy to approve it is refused."}),
        ("When", {"fields": ["applies_to", "trigger", ("threshold", "currency")]}),
        ("Who and how", {"fields": ["in_order", "decide_within_hours"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("steps__group")

    @admin.display(description="Approved by")
    def roles(self, obj: ApprovalPolicy) -> str:
        return " → ".join(step.group.name for step in obj.steps.all()) or "–"


# --- the approval queue ---------------------------------------------------------------------------------------------


class QueueFilter(admin.SimpleListFilter):
    """'Waiting for me' by default: the requests with a step this user may decide now."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [("pending", "All waiting for approval"), ("all", "All requests")]

    def choices(self, changelist):
        yield {"selected": self.value() is None, "display": "Waiting for me",
               "query_string": changelist.get_query_string(remove=[self.parameter_name])}
        for lookup, title in self.lookup_choices:
            yield {"selected": self.value() == lookup, "display": title,
                   "query_string": changelist.get_query_string({self.parameter_name: lookup})}

    def queryset(self, request, queryset):
        if self.value() is None:
            waiting = approval_requests_waiting_for(user=request.user, now=timezone.now())
            return queryset.filter(pk__in=waiting.values("pk"))
        if self.value() == "pending":
            return queryset.filter(status=ApprovalRequest.Status.PENDING)
        return queryset


class DecisionForm(forms.Form):
    step = forms.IntegerField(widget=forms.HiddenInput)
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                              help_text="Required to reject: the requester and the customer's billing contact read it.")


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(admin.ModelAdmin):
    """Read-only records; decisions go through the decide view (permission, role and separation of duties)."""

    list_display = ["id", "customer", "summary", "amount", "progress", "status", "expires_at", "requested_by_label"]
    list_filter = [QueueFilter, "status"]
    list_select_related = ["customer"]
    search_fields = ["customer__name", "summary", "requested_by_label"]
    change_form_template = "admin/billing/approvalrequest/change_form.html"
    fields = ["customer", "summary", "subject", "status", "amount", "reasons_text", "in_order", "requested_by_label",
              "created_at", "expires_at", "decided_at"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        """Approvers see the queue they decide from."""
        return super().has_view_permission(request, obj) or request.user.has_perm("billing.decide_approvalrequest")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("steps")

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "title": "Approval requests"}
        return super().changelist_view(request, extra_context)

    @admin.display(description="Amount due")
    def amount(self, obj: ApprovalRequest) -> str:
        from billing.templatetags.billing_format import money

        return money(obj.amount_due, obj.currency)

    @admin.display(description="Steps")
    def progress(self, obj: ApprovalRequest) -> str:
        marks = {"approved": "✔", "rejected": "✘", "pending": "…"}
        arrow = " → " if obj.in_order else " + "
        return arrow.join(f"{marks[step.status]} {step.group_name}" for step in obj.steps.all())

    @admin.display(description="What")
    def subject(self, obj: ApprovalRequest) -> str:
        if obj.amendment_id:
            url = reverse("admin:billing_amendment_change", args=[obj.amendment_id])
            return format_html('<a href="{}">Amendment {}</a>', url, obj.amendment_id)
        url = reverse("admin:billing_planchange_change", args=[obj.plan_change_id])
        return format_html('<a href="{}">Customer plan change {}</a> (held: nothing charged yet)', url,
                           obj.plan_change_id)

    @admin.display(description="Why")
    def reasons_text(self, obj: ApprovalRequest) -> str:
        return "; ".join(f"{reason['policy']} ({reason['detail']})" for reason in obj.reasons)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        request_obj = self.get_object(request, object_id)
        if request_obj is None:
            raise Http404("No such approval request.")
        now = timezone.now()
        steps = list(request_obj.steps.select_related("decided_by").order_by("position"))
        drafter = request_obj.amendment.created_by_id if request_obj.amendment_id else None
        rows = [(step, approval_step_refusal(request=request_obj, steps=steps, step=step, user=request.user, now=now,
                                             drafter_id=drafter))
                for step in steps]
        extra_context = {**(extra_context or {}), "steps": rows,
                         "decide_url": reverse("admin:billing_approvalrequest_decide", args=[request_obj.pk]),
                         "can_decide": any(refusal is None for _step, refusal in rows),
                         "preview_html": format_html("{}", render_amendment_preview(request_obj.amendment, stored=True))
                         if request_obj.amendment_id else ""}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [path("<int:request_id>/decide/", self.admin_site.admin_view(self.decide_view),
                     name="billing_approvalrequest_decide"),
                *super().get_urls()]

    def decide_view(self, request, request_id: int):
        """Approve or reject one step (POST). The service checks permission, role, order and separation of duties."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("billing.decide_approvalrequest"):
            raise PermissionDenied("Deciding approval requests needs the 'decide approval requests' permission.")
        get_object_or_404(ApprovalRequest, pk=request_id)
        form = DecisionForm(request.POST)
        back = HttpResponseRedirect(reverse("admin:billing_approvalrequest_change", args=[request_id]))
        if not form.is_valid():
            messages.error(request, "Choose approve or reject.")
            return back
        approve = form.cleaned_data["decision"] == "approve"
        if not ApprovalStep.objects.filter(pk=form.cleaned_data["step"], request_id=request_id).exists():
            raise Http404("No such step.")
        try:
            decided = approval_request_decide(request_id=request_id, step_id=form.cleaned_data["step"],
                                              actor=request.user, approve=approve,
                                              comment=form.cleaned_data["comment"], now=timezone.now())
        except BillingError as error:
            messages.error(request, error.detail)
            return back
        messages.success(request, f"{'Approved' if approve else 'Rejected'}. The request is "
                                  f"{decided.get_status_display().lower()}.")
        return HttpResponseRedirect(reverse("admin:billing_approvalrequest_changelist"))

