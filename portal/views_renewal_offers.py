"""The renewal offer card's two actions: switch (a quote, then the usual review and confirm) and "Not now".

Both are plain POST forms (no JavaScript needed); with htmx "Not now" swaps the card out in place. Only owners
and billing admins may act (403 otherwise); another customer's subscription answers 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from billing.errors import BillingError
from portal.views import _billing_membership, _subscription, login_required_post
from retention.services.renewal_offers import renewal_offer_dismiss, renewal_offer_quote_create


@login_required_post
@require_POST
def renewal_offer_switch(request: HttpRequest, customer_id: int, subscription_id: int) -> HttpResponse:
    """Price the offer now and show the review of that quote (confirming there charges exactly it)."""
    membership = _billing_membership(request, customer_id)
    subscription = _subscription(membership, subscription_id)
    try:
        quote = renewal_offer_quote_create(subscription=subscription, actor=request.user, now=timezone.now())
    except BillingError as error:
        messages.error(request, error.detail)
        return redirect("portal:overview", customer_id=customer_id)
    return redirect("portal:review", customer_id=customer_id, quote_id=quote.pk)


@login_required_post
@require_POST
def renewal_offer_not_now(request: HttpRequest, customer_id: int, subscription_id: int) -> HttpResponse:
    membership = _billing_membership(request, customer_id)
    subscription = _subscription(membership, subscription_id)
    renewal_offer_dismiss(subscription=subscription, actor=request.user, now=timezone.now())
    text = _("Hidden until your next renewal. Your subscription renews monthly as before.")
    if request.htmx:
        return HttpResponse(format_html('<p class="msg info" role="status">{}</p>', text))
    messages.info(request, text)
    return redirect("portal:overview", customer_id=customer_id)
