"""The local gateway: Crossgrade's embedded stand-in for Stripe, with Stripe's test payment methods.

pm_card_visa / pm_card_mastercard succeed; pm_card_chargeDeclined (and …InsufficientFunds) are
declined; pm_card_authenticationRequired needs the customer to authenticate on a page of the
gateway (/gateway/local/authenticate/<reference>/) before it succeeds.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse

from billing.models import LocalPayment, LocalRefund
from billing.money import Money
from billing.payments.base import PaymentResult, RefundResult, assert_outside_transaction

SUCCEEDS = {"pm_card_visa", "pm_card_mastercard", "pm_card_amex"}
DECLINES = {
    "pm_card_chargeDeclined": ("card_declined", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": ("insufficient_funds", "Your card has insufficient funds."),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "Your card has expired."),
}
NEEDS_AUTHENTICATION = {"pm_card_authenticationRequired"}
TEST_METHODS = sorted(SUCCEEDS | set(DECLINES) | NEEDS_AUTHENTICATION)


class IdempotencyMismatch(Exception):
    """The same idempotency key was used for a different payment (Stripe answers 400)."""


class LocalGateway:
    name = "local"

    def charge(self, *, payment_method: str, amount: Money, idempotency_key: str, description: str = "",
               return_url: str = "", off_session: bool = False, customer_reference: str = "") -> PaymentResult:
        assert_outside_transaction()
        minor = amount.to_minor_units()
        existing = LocalPayment.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            status, code, message = self._outcome(payment_method)
            if off_session and status == LocalPayment.Status.REQUIRES_ACTION:  # as Stripe: 402, nobody to ask
                status, message = LocalPayment.Status.DECLINED, "This payment needs the customer to authenticate it."
            try:
                with transaction.atomic():
                    existing = LocalPayment.objects.create(
                        reference=f"pi_local_{secrets.token_hex(12)}", idempotency_key=idempotency_key,
                        payment_method=payment_method, amount_minor=minor, currency=amount.currency,
                        status=status, failure_code=code, failure_message=message, return_url=return_url,
                    )
            except IntegrityError:  # a concurrent request with the same key won: replay it
                existing = LocalPayment.objects.get(idempotency_key=idempotency_key)
        if (existing.amount_minor, existing.currency, existing.payment_method) != (
            minor, amount.currency, payment_method
        ):
            raise IdempotencyMismatch(f"idempotency key {idempotency_key} was used for a different payment")
        return self._result(existing)

    def retrieve(self, *, reference: str) -> PaymentResult:
        return self._result(LocalPayment.objects.get(reference=reference))

    def find(self, *, idempotency_key: str) -> PaymentResult | None:
        payment = LocalPayment.objects.filter(idempotency_key=idempotency_key).first()
        return self._result(payment) if payment is not None else None

    def cancel(self, *, reference: str) -> PaymentResult:
        assert_outside_transaction()
        with transaction.atomic():
            payment = LocalPayment.objects.select_for_update().get(reference=reference)
            if payment.status == LocalPayment.Status.REQUIRES_ACTION:
                payment.status = LocalPayment.Status.CANCELED
                payment.failure_code = "canceled"
                payment.failure_message = "The payment was canceled."
                payment.save()
        return self._result(payment)

    def refund(self, *, reference: str, amount: Money, idempotency_key: str) -> RefundResult:
        assert_outside_transaction()
        minor = amount.to_minor_units()
        with transaction.atomic():
            existing = LocalRefund.objects.filter(idempotency_key=idempotency_key).first()
            if existing is not None:
                return RefundResult(status="succeeded", reference=existing.reference)
            payment = LocalPayment.objects.select_for_update().get(reference=reference)
            refunded = sum(r.amount_minor for r in payment.refunds.all())
            if payment.status != LocalPayment.Status.SUCCEEDED or payment.currency != amount.currency:
                return RefundResult(status="failed", reference="", failure_message="This payment cannot be refunded.")
            if minor <= 0 or refunded + minor > payment.amount_minor:
                return RefundResult(status="failed", reference="",
                                    failure_message="The refund is larger than what is left of the payment.")
            refund = LocalRefund.objects.create(reference=f"re_local_{secrets.token_hex(12)}", payment=payment,
                                                idempotency_key=idempotency_key, amount_minor=minor)
        return RefundResult(status="succeeded", reference=refund.reference)

    @staticmethod
    def _outcome(payment_method: str) -> tuple[str, str, str]:
        if payment_method in SUCCEEDS:
            return LocalPayment.Status.SUCCEEDED, "", ""
        if payment_method in DECLINES:
            return LocalPayment.Status.DECLINED, *DECLINES[payment_method]
        if payment_method in NEEDS_AUTHENTICATION:
            return LocalPayment.Status.REQUIRES_ACTION, "authentication_required", "Your bank asks you to confirm this payment."
        return LocalPayment.Status.DECLINED, "invalid_payment_method", f"No such payment method: {payment_method}."

    @staticmethod
    def _result(payment: LocalPayment) -> PaymentResult:
        next_action_url = ""
        if payment.status == LocalPayment.Status.REQUIRES_ACTION:
            next_action_url = settings.SITE_URL + reverse("local-gateway-authenticate", args=[payment.reference])
        return PaymentResult(
            status=payment.status, reference=payment.reference, failure_code=payment.failure_code,
            failure_message=payment.failure_message, next_action_url=next_action_url,
        )




def local_payment_authenticate(*, reference: str, approve: bool) -> LocalPayment:
    """The customer's answer on the gateway's authentication page. A canceled payment stays canceled."""
    with transaction.atomic():
        payment = LocalPayment.objects.select_for_update().get(reference=reference)
        if payment.status == LocalPayment.Status.REQUIRES_ACTION:
            if approve:
                payment.status = LocalPayment.Status.SUCCEEDED
                payment.failure_code = payment.failure_message = ""
            else:
                payment.status = LocalPayment.Status.DECLINED
                payment.failure_code = "authentication_failed"
                payment.failure_message = "The payment was not authenticated."
            payment.save()
    return payment
