"""Payment gateways behind one interface: the local gateway (default) and, later, Stripe."""

from billing.payments.base import GatewayUnavailable, PaymentGateway, PaymentResult, RefundResult, get_gateway

__all__ = ["GatewayUnavailable", "PaymentGateway", "PaymentResult", "RefundResult", "get_gateway"]
