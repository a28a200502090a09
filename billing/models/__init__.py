from billing.models.approvals import ApprovalPolicy, ApprovalPolicyStep, ApprovalRequest, ApprovalStep
from billing.models.bulk import BulkJob, ScheduledChange
from billing.models.catalog import (
    INTERVAL_DAYS,
    INTERVAL_RANK,
    ChangeRule,
    Direction,
    Feature,
    Interval,
    Mode,
    Plan,
    PlanFeature,
    Price,
    PriceTier,
    Product,
    Timing,
)
from billing.models.contracts import Amendment, Contract, ContractPrice
from billing.models.customers import Customer, Membership, PaymentMethod, TaxRate
from billing.models.invoices import (
    CashRefund,
    DocumentSeries,
    ExchangeRate,
    Invoice,
    InvoiceLine,
    LegalEntity,
    PaymentAttempt,
)
from billing.models.notifications import Notification
from billing.models.rollbacks import PlanChangeRollback
from billing.models.stripe_events import StripeEvent
from billing.models.subscriptions import (
    AuditEvent,
    BalanceEntry,
    IdempotencyKey,
    LocalPayment,
    LocalRefund,
    PlanChange,
    Quote,
    Subscription,
)
from billing.models.usage import FeatureUsage

__all__ = [
    "Amendment", "ApprovalPolicy", "ApprovalPolicyStep", "ApprovalRequest", "ApprovalStep", "Contract", "ContractPrice",
    "INTERVAL_DAYS", "INTERVAL_RANK", "AuditEvent", "BalanceEntry", "ChangeRule", "Customer", "Direction",
    "CashRefund", "DocumentSeries", "ExchangeRate", "Invoice", "InvoiceLine", "LegalEntity", "LocalRefund",
    "Notification", "PaymentAttempt", "BulkJob", "ScheduledChange",
    "Feature", "IdempotencyKey", "Interval", "LocalPayment", "Membership", "Mode", "PaymentMethod", "Plan",
    "PlanChange", "PlanFeature", "Price", "PriceTier", "Product", "Quote", "StripeEvent", "Subscription", "TaxRate",
    "Timing", "PlanChangeRollback", "FeatureUsage",
]
