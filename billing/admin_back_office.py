"""Back-office pages in Django admin: the support view, emergency upgrades and rollbacks.

Mixed into the ModelAdmins of billing/admin.py (customers, subscriptions, plan changes). Each page checks its own
permission (a staff user without it gets 403), parses input, calls one service or selector, and renders; the
rules live in billing/services/emergency.py, billing/services/rollbacks.py and billing/support.py.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.errors import BillingError, ChangeRefused
from billing.models import Customer, PaymentMethod, PlanChange, PlanChangeRollback, Price, Quote, Subscription
from billing.money import format_amount
from billing.services.emergency import PERMISSION as EMERGENCY_PERMISSION
from billing.services.emergency import emergency_upgrade_confirm, emergency_upgrade_quote
from billing.services.rollbacks import (
    REFUND_PERMISSION,
    ROLLBACK_PERMISSION,
    plan_change_rollback,
    plan_change_rollback_preview,
)
from billing.support import support_view_get

SUPPORT_PERMISSION = "billing.support_view"


def _page(model_admin, request, template: str, title: str, **context) -> TemplateResponse:
    return TemplateResponse(request, template, {
        **model_admin.admin_site.each_context(request), "title": title, "opts": model_admin.model._meta, **context})


# --- the support view ---------------------------------------------------------------------------------------------

class SupportViewAdminMixin:
    """Customer admin: a read-only page with everything support needs, linked from the list and the change page."""

    def get_urls(self):
        return [path("<int:customer_id>/support/", self.admin_site.admin_view(self.support_view),
                     name="billing_customer_support"), *super().get_urls()]

    @admin.display(description="Support")
    def support_link(self, obj: Customer) -> str:
        return format_html('<a href="{}">Support view<span class="visually-hidden"> of {}</span></a>',
                           reverse("admin:billing_customer_support", args=[obj.pk]), obj.name)

    def support_view(self, request, customer_id: int):
        if not request.user.has_perm(SUPPORT_PERMISSION):
            raise PermissionDenied("The support view needs the 'support view' permission.")
        try:
            view = support_view_get(customer_id=customer_id)
        except Customer.DoesNotExist:
            raise Http404("No such customer.") from None
        user = request.user
        return _page(self, request, "admin/billing/customer/support.html", f"Support view: {view.customer.name}",
                     view=view, now=timezone.now(), rollback_window_days=settings.ROLLBACK_WINDOW_DAYS,
                     can_rollback=user.has_perm(ROLLBACK_PERMISSION), can_download=user.has_perm("billing.download_invoice"),
                     can_emergency_upgrade=user.has_perm(EMERGENCY_PERMISSION))


# --- emergency upgrades -------------------------------------------------------------------------------------------

class PriceChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, price: Price) -> str:
        return (f"{price.plan.product.name} {price.plan.name} · {price.get_interval_display().lower()} · "
                f"{format_amount(price.unit_amount, price.currency)} {price.currency}"
                f"{' per seat' if price.pricing == Price.Pricing.PER_SEAT else ''}")


class EmergencyUpgradeForm(forms.Form):
    price = PriceChoiceField(queryset=Price.objects.none(), label="Upgrade to",
                             help_text="Active prices in the subscription's currency.")
    quantity = forms.IntegerField(min_value=1, label="Seats", help_text="1 for a flat price.")

    def __init__(self, *args, subscription: Subscription, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["price"].queryset = (
            Price.objects.filter(currency=subscription.price.currency, is_active=True, plan__is_active=True,
                                 plan__product__is_active=True)
            .select_related("plan__product").order_by("plan__product__sort_order", "plan__rank", "interval", "pk"))
        self.fields["quantity"].initial = subscription.quantity


class EmergencyConfirmForm(forms.Form):
    quote = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(max_length=300, widget=forms.Textarea(attrs={"rows": 3}),
                             help_text="Why this customer is upgraded now, without their own confirmation (kept in "
                                       "the audit trail).")


class EmergencyUpgradeAdminMixin:
    """Subscription admin: staff pick a price and seats, see the priced quote, and confirm with a reason."""

    def get_urls(self):
        return [path("<int:subscription_id>/emergency-upgrade/", self.admin_site.admin_view(self.emergency_upgrade_view),
                     name="billing_subscription_emergency_upgrade"), *super().get_urls()]

    def emergency_upgrade_view(self, request, subscription_id: int):
        if not request.user.has_perm(EMERGENCY_PERMISSION):
            raise PermissionDenied("Emergency upgrades need the 'emergency upgrade' permission.")
        subscription = get_object_or_404(Subscription.objects.select_related("customer", "price__plan__product"),
                                         pk=subscription_id)
        now = timezone.now()
        quote, confirm_form = None, None
        pricing = request.method == "POST" and "confirm" not in request.POST
        price_form = EmergencyUpgradeForm(request.POST if pricing else None, subscription=subscription)
        if request.method == "POST" and "confirm" in request.POST:
            confirm_form = EmergencyConfirmForm(request.POST)
            quote = Quote.objects.filter(subscription=subscription, pk=request.POST.get("quote") or 0).select_related(
                "to_price__plan__product", "from_price__plan__product").first()
            if quote is None:
                messages.error(request, "That quote is not for this subscription; price the upgrade again.")
                return HttpResponseRedirect(request.path)
            if confirm_form.is_valid():
                try:
                    change = emergency_upgrade_confirm(quote=quote, actor=request.user, now=now,
                                                       reason=confirm_form.cleaned_data["reason"])
                except BillingError as error:
                    messages.error(request, f"Not applied: {error.detail} Nothing was changed.")
                    return HttpResponseRedirect(request.path)
                return self._emergency_outcome(request, subscription, change)
        elif pricing and price_form.is_valid():
            try:
                quote = emergency_upgrade_quote(subscription=subscription, to_price=price_form.cleaned_data["price"],
                                                quantity=price_form.cleaned_data["quantity"], actor=request.user,
                                                now=now)
            except BillingError as error:
                price_form.add_error(None, error.detail)
            else:
                confirm_form = EmergencyConfirmForm(initial={"quote": quote.pk})
        return _page(self, request, "admin/billing/subscription/emergency_upgrade.html",
                     f"Emergency upgrade: {subscription}", subscription=subscription, price_form=price_form,
                     quote=quote, confirm_form=confirm_form,
                     payment_method=PaymentMethod.objects.filter(customer=subscription.customer, is_default=True).first())

    def _emergency_outcome(self, request, subscription: Subscription, change: PlanChange):
        amount = f"{format_amount(change.amount_due, change.currency)} {change.currency}"
        if change.status == PlanChange.Status.APPLIED:
            invoice = change.invoices.filter(kind="invoice").first()
            messages.success(request, f"Emergency upgrade applied (plan change {change.pk}): {change.to_price.plan} × "
                                      f"{change.to_quantity} from now; {amount} charged off-session"
                                      f"{f'; invoice {invoice.number}' if invoice else ''}.")
            return HttpResponseRedirect(reverse("admin:billing_subscription_change", args=[subscription.pk]))
        if change.status == PlanChange.Status.FAILED:
            messages.error(request, f"The card could not be charged ({change.failure_message or change.failure_code}): "
                                    f"nothing was changed and nothing was charged (plan change {change.pk} failed). "
                                    "Ask the customer to update their card, or to upgrade in the portal.")
        elif change.status == PlanChange.Status.CANCELLED:
            messages.error(request, "The card needs the customer to authenticate the payment, which cannot happen "
                                    f"off-session: nothing was changed and nothing was charged (plan change {change.pk} "
                                    "cancelled). Ask the customer to upgrade in the portal.")
        else:
            messages.warning(request, f"Plan change {change.pk} is {change.get_status_display().lower()}.")
        return HttpResponseRedirect(request.path)


# --- rollbacks ------------------------------------------------------------------------------------------------------

class RollbackForm(forms.Form):
    reason = forms.CharField(max_length=300, widget=forms.Textarea(attrs={"rows": 3}),
                             help_text="Why the change is undone (kept in the audit trail with the rollback).")
    refund = forms.BooleanField(required=False, label="Also pay the card part back in cash",
                                help_text="Refunds what the card paid for this change through the payment provider; "
                                          "without it the amount stays as account credit.")


@admin.action(description="Roll back the selected applied change…", permissions=["rollback"])
def roll_back_plan_change(modeladmin, request, queryset):
    changes = list(queryset[:2])
    if len(changes) != 1:
        messages.error(request, "Select exactly one plan change to roll back: the next page shows what will happen.")
        return None
    return HttpResponseRedirect(reverse("admin:billing_planchange_rollback", args=[changes[0].pk]))


class RollbackAdminMixin:
    """Plan change admin: a confirmation page that states exactly what the rollback will do, then does it."""

    def get_urls(self):
        return [path("<int:plan_change_id>/rollback/", self.admin_site.admin_view(self.rollback_view),
                     name="billing_planchange_rollback"), *super().get_urls()]

    def has_rollback_permission(self, request) -> bool:
        return request.user.has_perm(ROLLBACK_PERMISSION)

    def rollback_view(self, request, plan_change_id: int):
        if not self.has_rollback_permission(request):
            raise PermissionDenied("Rollbacks need the 'rollback plan change' permission.")
        change = get_object_or_404(PlanChange.objects.select_related("customer", "subscription"), pk=plan_change_id)
        form = RollbackForm(request.POST or None)
        can_refund = request.user.has_perm(REFUND_PERMISSION)
        if request.method == "POST" and form.is_valid():
            try:
                outcome = plan_change_rollback(plan_change=change, actor=request.user, now=timezone.now(),
                                               reason=form.cleaned_data["reason"],
                                               refund=form.cleaned_data["refund"] and can_refund)
            except BillingError as error:
                messages.error(request, f"Not rolled back: {error.detail}")
            else:
                self._rollback_messages(request, outcome)
                return HttpResponseRedirect(reverse("admin:billing_planchange_change", args=[change.pk]))
        plan, refusal = None, None
        try:
            plan = plan_change_rollback_preview(plan_change=change, now=timezone.now())
        except ChangeRefused as error:
            refusal = error
        return _page(self, request, "admin/billing/planchange/rollback.html", f"Roll back plan change {change.pk}",
                     change=change, plan=plan, refusal=refusal, form=form, can_refund=can_refund,
                     rollback_window_days=settings.ROLLBACK_WINDOW_DAYS)

    @staticmethod
    def _rollback_messages(request, outcome) -> None:
        rollback: PlanChangeRollback = outcome.rollback
        document = rollback.document
        money = f"{format_amount(abs(rollback.balance_amount), rollback.currency)} {rollback.currency}"
        if document is None:
            detail = "nothing had been billed"
        elif rollback.balance_amount >= 0:
            detail = f"credit note {document.number} reverses {document.related_invoice.number}; {money} credited"
        else:
            detail = f"invoice {document.number} takes back the credit of {document.related_invoice.number}; {money} " \
                     "debited from the balance"
        messages.success(request, f"Plan change {rollback.plan_change_id} rolled back: {detail}.")
        if outcome.refund is not None and outcome.refund.status == "succeeded":
            messages.success(request, f"{format_amount(outcome.refund.amount, outcome.refund.currency)} "
                                      f"{outcome.refund.currency} paid back to the card ({outcome.refund.refund_reference}).")
        elif outcome.refund_error or outcome.refund is not None:
            messages.warning(request, f"The cash refund did not go through ({outcome.refund_error or 'pending'}); the "
                                      "amount stays as account credit. Try again from the credit note.")


@admin.register(PlanChangeRollback)
class PlanChangeRollbackAdmin(admin.ModelAdmin):
    list_display = ["created_at", "plan_change", "customer", "document", "balance_amount", "currency",
                    "refund_requested", "created_by", "reason"]
    list_select_related = ["plan_change", "customer", "document", "created_by"]
    list_filter = ["refund_requested", "currency"]
    search_fields = ["customer__name", "reason"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
