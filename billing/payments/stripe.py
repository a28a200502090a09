"""The Stripe gateway: PaymentIntents through the official SDK, behind the same interface as the local one.

Choices worth knowing:
- The saved PaymentMethod id is sent with its Stripe customer (`PaymentMethod.gateway_customer`) when
  known: a method saved for reuse is attached to a customer, and Stripe wants that `customer` on the intent.
- Plan changes are charged on-session: the customer is in the portal, so a confirmation with a `return_url`
  gives `requires_action` + `next_action.redirect_to_url`, a page hosted by Stripe where the customer
  authenticates (card data never touches our server). Renewal attempts are charged `off_session=true`:
  Stripe then answers a card that needs 3-D Secure with a 402 `authentication_required`, which we record as
  a failed attempt and email the customer to pay on-session from the portal.
- `payment_method_types=["card"]`: saved methods are cards, and it lets Stripe confirm without a
  `return_url` (the API then gets no redirect URL for authentication; the portal always sends one).
- The idempotency key is sent as Stripe's Idempotency-Key and stored in the intent's metadata, so a
  retry is the same payment and `find` can look the payment up by key. Stripe's search is eventually
  consistent (under a minute): the reconciler only asks after PAYMENT_RECONCILE_AFTER.
- A retry must send the same parameters (Stripe answers 400 idempotency_error otherwise); the amount,
  currency and method come from the plan change, so only a different `return_url` could differ.
"""

from __future__ import annotations

from typing import Any

import stripe
from django.conf import settings

from billing.money import Money
from billing.payments.base import GatewayUnavailable, PaymentResult, RefundResult, assert_outside_transaction

METADATA_KEY = "crossgrade_idempotency_key"
# Errors after which the payment's outcome is unknown: resume later with the same key.
UNKNOWN_OUTCOME = (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError)


class StripeAmountUnsupported(ValueError):
    pass


# Stripe's own rules at the API boundary (its "special cases" for currencies): ISK is sent as a two-decimal
# amount of whole krónur; three-decimal currencies must end in 0 (multiples of 10 minor units).
STRIPE_TWO_DECIMAL_WHOLE = {"ISK"}
STRIPE_THREE_DECIMAL = {"BHD", "JOD", "KWD", "OMR", "TND"}


def stripe_amount(amount: Money) -> int:
    """Our exact amount in the integer unit Stripe expects for that currency, or refused (never rounded)."""
    minor = amount.to_minor_units()
    if amount.currency in STRIPE_TWO_DECIMAL_WHOLE:
        return minor * 100
    if amount.currency in STRIPE_THREE_DECIMAL and minor % 10:
        raise StripeAmountUnsupported(
            f"Stripe accepts {amount.currency} amounts only in multiples of 0.010; {amount} cannot be charged exactly.")
    return minor


class StripeGateway:
    name = "stripe"

    def __init__(self, client: stripe.StripeClient | None = None) -> None:
        self.client = client or stripe.StripeClient(
            settings.STRIPE_SECRET_KEY,
            base_addresses={"api": settings.STRIPE_API_BASE},
            max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES,
            http_client=stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS),
        )

    def charge(self, *, payment_method: str, amount: Money, idempotency_key: str, description: str = "",
               return_url: str = "", off_session: bool = False, customer_reference: str = "") -> PaymentResult:
        assert_outside_transaction()
        try:
            stripe_minor = stripe_amount(amount)
        except StripeAmountUnsupported as exc:
            return PaymentResult(status="declined", reference="", failure_code="amount_not_supported",
                                 failure_message=str(exc))
        params: dict[str, Any] = {
            "amount": stripe_minor,
            "currency": amount.currency.lower(),
            "payment_method": payment_method,
            "payment_method_types": ["card"],
            "confirm": True,
            "description": description,
            "metadata": {METADATA_KEY: idempotency_key},
        }
        if customer_reference:
            params["customer"] = customer_reference
        if off_session:
            params["off_session"] = True  # a card needing 3-D Secure is then a 402 authentication_required
        elif return_url:
            params["return_url"] = return_url
        try:
            intent = self.client.v1.payment_intents.create(params, {"idempotency_key": idempotency_key})
        except stripe.CardError as exc:
            return _declined(exc)
        except stripe.InvalidRequestError as exc:
            if exc.param != "payment_method":
                raise
            return _declined(exc)  # e.g. the saved method no longer exists at Stripe
        except UNKNOWN_OUTCOME as exc:
            raise GatewayUnavailable(str(exc)) from exc
        return _result(intent)

    def retrieve(self, *, reference: str) -> PaymentResult:
        assert_outside_transaction()
        try:
            return _result(self.client.v1.payment_intents.retrieve(reference))
        except UNKNOWN_OUTCOME as exc:
            raise GatewayUnavailable(str(exc)) from exc

    def find(self, *, idempotency_key: str) -> PaymentResult | None:
        assert_outside_transaction()
        query = f'metadata["{METADATA_KEY}"]:"{idempotency_key}"'
        try:
            found = self.client.v1.payment_intents.search({"query": query, "limit": 1})
        except UNKNOWN_OUTCOME as exc:
            raise GatewayUnavailable(str(exc)) from exc
        return _result(found.data[0]) if found.data else None

    def cancel(self, *, reference: str) -> PaymentResult:
        assert_outside_transaction()
        try:
            return _result(self.client.v1.payment_intents.cancel(reference))
        except stripe.InvalidRequestError as exc:
            if exc.code != "payment_intent_unexpected_state":
                raise
            # Already succeeded (the customer authenticated first) or canceled: report where it stands.
            return self.retrieve(reference=reference)
        except UNKNOWN_OUTCOME as exc:
            raise GatewayUnavailable(str(exc)) from exc

    def refund(self, *, reference: str, amount: Money, idempotency_key: str) -> RefundResult:
        assert_outside_transaction()
        try:
            stripe_minor = stripe_amount(amount)
        except StripeAmountUnsupported as exc:
            return RefundResult(status="failed", reference="", failure_message=str(exc))
        params = {"payment_intent": reference, "amount": stripe_minor,
                  "metadata": {METADATA_KEY: idempotency_key}}
        try:
            refund = self.client.v1.refunds.create(params, {"idempotency_key": idempotency_key})
        except stripe.InvalidRequestError as exc:  # already refunded, more than was paid, …
            return RefundResult(status="failed", reference="", failure_message=exc.user_message or str(exc))
        except UNKNOWN_OUTCOME as exc:
            raise GatewayUnavailable(str(exc)) from exc
        status = {"succeeded": "succeeded", "failed": "failed", "canceled": "failed"}.get(refund.status, "pending")
        return RefundResult(status=status, reference=refund.id,
                            failure_message=getattr(refund, "failure_reason", None) or "")


def _declined(exc: stripe.StripeError) -> PaymentResult:
    error = exc.error
    intent = getattr(error, "payment_intent", None) if error is not None else None
    decline_code = getattr(error, "decline_code", None) if error is not None else None
    return PaymentResult(
        status="declined", reference=intent.id if intent is not None else "",
        failure_code=decline_code or exc.code or "card_declined",
        failure_message=exc.user_message or "The payment was declined.",
    )


def _result(intent: Any) -> PaymentResult:
    """Map a PaymentIntent onto the interface's four outcomes."""
    status = intent.status
    if status == "succeeded":
        return PaymentResult(status="succeeded", reference=intent.id)
    if status == "canceled":
        return PaymentResult(status="canceled", reference=intent.id, failure_code="canceled",
                             failure_message="The payment was canceled.")
    error = getattr(intent, "last_payment_error", None)
    if status == "requires_payment_method" and error is not None:  # a failed attempt (decline, failed 3DS)
        return PaymentResult(status="declined", reference=intent.id,
                             failure_code=getattr(error, "decline_code", None) or error.code or "payment_failed",
                             failure_message=getattr(error, "message", None) or "The payment was declined.")
    if status == "requires_action":
        next_action = getattr(intent, "next_action", None)
        redirect = getattr(next_action, "redirect_to_url", None) if next_action is not None else None
        return PaymentResult(status="requires_action", reference=intent.id, failure_code="authentication_required",
                             failure_message="Your bank asks you to confirm this payment.",
                             next_action_url=redirect.url if redirect is not None else "")
    # processing (or a state we never put an intent in): not final; the webhook or the reconciler settles it.
    return PaymentResult(status="requires_action", reference=intent.id, failure_code=status,
                         failure_message="The payment is being processed.")
