"""The local gateway's own page: where a customer authenticates a payment (Stripe's 3-D Secure test page)."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from billing.models import LocalPayment
from billing.money import Money
from billing.payments.local import local_payment_authenticate
from billing.tasks import payment_updated


@require_http_methods(["GET", "POST"])
def local_gateway_authenticate(request: HttpRequest, reference: str) -> HttpResponse:
    if settings.PAYMENT_GATEWAY != "local":
        raise Http404("The local gateway is not in use.")
    payment = get_object_or_404(LocalPayment, reference=reference)
    if request.method == "POST":
        answer = request.POST.get("answer")
        if answer not in ("approve", "fail"):
            return render(request, "billing/local_authenticate.html",
                          {"payment": payment, "error": "Choose to complete or fail the authentication."},
                          status=400)
        payment = local_payment_authenticate(reference=reference, approve=answer == "approve")
        # Like Stripe's webhook: the gateway tells billing the payment moved on.
        payment_updated.delay(gateway="local", reference=reference)
        if payment.return_url:  # like Stripe's 3-D Secure redirect back to the merchant
            return redirect(payment.return_url)
    amount = Money.from_minor_units(payment.amount_minor, payment.currency)
    return render(request, "billing/local_authenticate.html", {"payment": payment, "amount": amount})
