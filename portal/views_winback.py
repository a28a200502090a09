"""Win-back links from emails: the offer page (signed link, the customer's billing member signs in and lands here)
and unsubscribe (signed link, no sign-in; one button, or the mail client's RFC 8058 one-click POST)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from billing.errors import BillingError
from portal.views import _membership, _page
from retention.models import EmailOptOut, WinBackEnrolment
from retention.services.winback import (
    WinBackLinkError,
    winback_customer_from_unsubscribe_token,
    winback_offer_accept,
    winback_offer_effect,
    winback_offer_from_token,
    winback_opt_out,
)


def _link_error(request: HttpRequest, error: BillingError) -> HttpResponse:
    return render(request, "portal/winback_link_error.html", {"detail": error.detail, "code": error.code}, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def winback_offer(request: HttpRequest, token: str) -> HttpResponse:
    try:
        enrolment, step = winback_offer_from_token(token=token)
    except WinBackLinkError as error:
        return _link_error(request, error)
    membership = _membership(request, enrolment.customer_id)  # another account's link: 404
    can_accept = membership.role in membership.BILLING_ROLES
    now = timezone.now()
    if request.method == "POST":
        if not can_accept:
            return _page(request, membership, "portal/winback_offer.html", status=403, step=step, offer=step.offer,
                         enrolment=enrolment, effect=None,
                         error=_("Only the account's owners and billing admins can accept offers."))
        try:
            winback_offer_accept(enrolment_id=enrolment.pk, step_id=step.pk, actor=request.user, now=now)
        except BillingError as error:
            messages.error(request, error.detail)
        return redirect("portal:winback-offer", token=token)
    effect = error = None
    if enrolment.offer_accepted_at is None:
        if enrolment.status == WinBackEnrolment.Status.CONVERTED:
            error = _("You are already back with us, so this offer no longer applies.")
        elif not step.offer.is_active:
            error = _("This offer has ended.")
        else:
            try:
                effect = winback_offer_effect(enrolment=enrolment, step=step, now=now)
            except BillingError as failure:
                error = failure.detail
    return _page(request, membership, "portal/winback_offer.html", step=step, offer=step.offer, enrolment=enrolment,
                 effect=effect, error=error, can_accept=can_accept,
                 accepted_same_step=enrolment.converted_step_id == step.pk)


@csrf_exempt  # the signed token is the credential; mail clients' one-click POST (RFC 8058) carries no CSRF token
@require_http_methods(["GET", "POST"])
def winback_unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    try:
        customer = winback_customer_from_unsubscribe_token(token=token)
    except WinBackLinkError as error:
        return _link_error(request, error)
    if request.method == "POST":
        one_click = request.POST.get("List-Unsubscribe") == "One-Click"
        winback_opt_out(customer_id=customer.pk, source=EmailOptOut.Source.ONE_CLICK if one_click
                        else EmailOptOut.Source.LINK, now=timezone.now())
        return render(request, "portal/winback_unsubscribe.html", {"done": True, "customer_name": customer.name})
    done = EmailOptOut.objects.filter(customer=customer).exists()
    return render(request, "portal/winback_unsubscribe.html", {"done": done, "customer_name": customer.name,
                                                               "token": token})
