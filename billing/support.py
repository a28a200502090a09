"""Reads for the support view: everything support needs about one customer, in a fixed, small number of queries.

Each section is one field here and one template partial (templates/admin/billing/customer/support/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db.models import Prefetch

from billing.models import (
    ApprovalRequest,
    AuditEvent,
    Contract,
    Customer,
    Invoice,
    Membership,
    Notification,
    PaymentAttempt,
    PaymentMethod,
    PlanChange,
    ScheduledChange,
    Subscription,
)
from billing.selectors import customer_balances
from entitlements.selectors import Entitlement, entitlements_for_customer

RECENT_CHANGES = 15
RECENT_INVOICES = 25
RECENT_NOTIFICATIONS = 25
RECENT_AUDIT_EVENTS = 60
RECENT_APPROVALS = 15


@dataclass(frozen=True)
class SupportView:
    customer: Customer
    members: list[Membership]
    payment_methods: list[PaymentMethod]
    subscriptions: list[Subscription]
    open_changes: list[PlanChange]  # waiting for payment or authentication, and scheduled
    recent_changes: list[PlanChange]  # the latest of every status, with their rollback
    staff_changes: list[ScheduledChange]  # staff changes at a date and bulk-job rows not finished yet
    invoices: list[Invoice]
    unpaid_invoices: list[Invoice]  # issued, not paid, with every payment attempt (dunning)
    balances: dict[str, Decimal]
    entitlements: list[Entitlement]
    notifications: list[Notification]
    audit_events: list[AuditEvent]  # each with `.linked_event_id`: a change's event ↔ its rollback's
    retry_schedule_days: list[int]
    contracts: list = field(default_factory=list)  # with their negotiated prices and amendments
    approvals: list = field(default_factory=list)  # the latest approval requests, with their steps

    @property
    def past_due(self) -> list[Subscription]:
        return [s for s in self.subscriptions if s.status == Subscription.Status.PAST_DUE]

    @property
    def needs_attention(self) -> list[Subscription | PlanChange]:
        return [*(s for s in self.subscriptions if s.needs_attention),
                *(c for c in self.open_changes if c.needs_attention),
                *(c for c in self.staff_changes if c.needs_attention)]


def _link_rollback_events(events: list[AuditEvent]) -> None:
    """A rollback's event names the event of the change it rolled back (`after.rolls_back_event`); link both ways."""
    for event in events:
        event.linked_event_id = None
    by_id = {event.pk: event for event in events}
    for event in events:
        if event.action == "plan_change.rolled_back" and isinstance(event.after, dict):
            event.linked_event_id = event.after.get("rolls_back_event")
            target = by_id.get(event.linked_event_id)
            if target is not None:
                target.linked_event_id = event.pk


def support_view_get(*, customer_id: int) -> SupportView:
    """One customer's subscriptions, changes, documents, money, entitlements, emails and audit trail."""
    customer = Customer.objects.get(pk=customer_id)
    changes = PlanChange.objects.filter(customer=customer).select_related(
        "subscription", "from_price__plan__product", "to_price__plan__product", "rollback__created_by",
        "rollback__document")
    open_changes = list(changes.filter(status__in=(*PlanChange.IN_FLIGHT, PlanChange.Status.SCHEDULED))
                        .order_by("effective_at", "pk"))
    recent_changes = list(changes.order_by("-created_at", "-pk")[:RECENT_CHANGES])
    documents = (Invoice.objects.filter(customer=customer).exclude(status=Invoice.Status.DRAFT)
                 .select_related("related_invoice"))
    invoices = list(documents.order_by("-issued_at", "-pk")[:RECENT_INVOICES])
    unpaid = list(documents.filter(kind=Invoice.Kind.INVOICE, status=Invoice.Status.ISSUED, amount_due__gt=0)
                  .select_related("subscription__price__plan")
                  .prefetch_related(Prefetch("payment_attempts", queryset=PaymentAttempt.objects.order_by("number")))
                  .order_by("issued_at", "pk"))
    events = list(AuditEvent.objects.filter(customer=customer).order_by("-created_at", "-pk")[:RECENT_AUDIT_EVENTS])
    _link_rollback_events(events)
    return SupportView(
        customer=customer,
        members=list(Membership.objects.filter(customer=customer).select_related("user").order_by("role", "user_id")),
        payment_methods=list(PaymentMethod.objects.filter(customer=customer).order_by("-is_default", "pk")),
        subscriptions=list(Subscription.objects.filter(customer=customer).select_related("price__plan__product")
                           .order_by("status", "product_id")),
        open_changes=open_changes,
        recent_changes=recent_changes,
        staff_changes=list(ScheduledChange.objects.filter(customer=customer, status__in=ScheduledChange.OPEN)
                           .select_related("to_price__plan", "job").order_by("effective_at", "pk")),
        invoices=invoices,
        unpaid_invoices=unpaid,
        balances=customer_balances(customer=customer),
        entitlements=entitlements_for_customer(customer=customer),  # cached per entitlements version
        notifications=list(Notification.objects.filter(customer=customer)
                           .order_by("-created_at", "-pk")[:RECENT_NOTIFICATIONS]),
        audit_events=events,
        retry_schedule_days=list(settings.RENEWAL_RETRY_SCHEDULE),
        contracts=list(Contract.objects.filter(customer=customer).select_related("subscription__price__plan")
                       .prefetch_related("prices__price__plan", "amendments").order_by("-term_start")),
        approvals=list(ApprovalRequest.objects.filter(customer=customer).prefetch_related("steps__decided_by")
                       .order_by("-created_at", "-pk")[:RECENT_APPROVALS]),
    )
