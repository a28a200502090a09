from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from django.conf import settings
from django.db import connection

from billing.money import Money

PaymentStatus = Literal["succeeded", "declined", "requires_action", "canceled"]


@dataclass(frozen=True, slots=True)
class PaymentResult:
    status: PaymentStatus
    reference: str
    failure_code: str = ""
    failure_message: str = ""
    next_action_url: str = ""


class GatewayUnavailable(Exception):
    """The gateway could not be reached or timed out: the payment's outcome is unknown."""


class PaymentGateway(Protocol):
    name: str

    def charge(self, *, payment_method: str, amount: Money, idempotency_key: str, description: str,
               return_url: str, off_session: bool = False, customer_reference: str = "") -> PaymentResult:
        """Charge a saved method. The same idempotency key is the same payment.

        On-session (the customer is in the portal): a card that needs authentication answers requires_action
        with a page to confirm on. Off-session (renewals, no one present): such a card is declined with
        failure_code ``authentication_required``, and the customer is asked to come and pay."""

    def retrieve(self, *, reference: str) -> PaymentResult:
        """The payment's current state (after the customer authenticated, say)."""

    def find(self, *, idempotency_key: str) -> PaymentResult | None:
        """The payment made with this key, or None if the gateway never took one (reconciling a timeout)."""

    def cancel(self, *, reference: str) -> PaymentResult:
        """Cancel a payment still waiting for the customer. Returns its final state: canceled, or
        succeeded if the customer authenticated first."""

    def refund(self, *, reference: str, amount: Money, idempotency_key: str) -> RefundResult:
        """Refund (part of) a succeeded payment. The same idempotency key is the same refund."""


@dataclass(frozen=True, slots=True)
class RefundResult:
    status: Literal["succeeded", "pending", "failed"]
    reference: str
    failure_message: str = ""


def assert_outside_transaction() -> None:
    """STYLE.md: never call the gateway while holding a lock. Test-case wrappers don't count."""
    if any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks):
        raise RuntimeError("the payment gateway must not be called inside a database transaction")


def get_gateway(name: str | None = None) -> PaymentGateway:
    name = name or settings.PAYMENT_GATEWAY
    if name == "local":
        from billing.payments.local import LocalGateway

        return LocalGateway()
    if name == "stripe":
        from billing.payments.stripe import StripeGateway

        return StripeGateway()
    raise ValueError(f"unknown payment gateway {name!r}")
