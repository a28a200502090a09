from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from billing.models import AuditEvent, Customer, Subscription


def subscription_snapshot(subscription: Subscription) -> dict[str, Any]:
    price = subscription.price
    return {
        "plan": str(price.plan),
        "price_id": price.pk,
        "currency": price.currency,
        "interval": price.interval,
        "unit_amount": str(price.unit_amount),
        "quantity": subscription.quantity,
        "status": subscription.status,
        "current_period_start": subscription.current_period_start.isoformat(),
        "current_period_end": subscription.current_period_end.isoformat(),
        "version": subscription.version,
    }


def audit_event_record(
    *,
    actor: AbstractBaseUser | None,
    action: str,
    target: Any,
    now: datetime,
    customer: Customer | None = None,
    reason_code: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    message: str = "",
) -> AuditEvent:
    """Append one audit event. Call inside the transaction of the change it records."""
    event = audit_event_build(actor=actor, action=action, target=target, now=now, customer=customer,
                              reason_code=reason_code, before=before, after=after, message=message)
    event.save(force_insert=True)
    return event


def audit_event_build(
    *,
    actor: AbstractBaseUser | None,
    action: str,
    target: Any,
    now: datetime,
    customer: Customer | None = None,
    reason_code: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    message: str = "",
) -> AuditEvent:
    """The event audit_event_record appends, unsaved (for a set-based step that inserts many at once)."""
    return AuditEvent(
        created_at=now,
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_label=actor.get_username() if actor is not None and actor.is_authenticated else "system",
        customer=customer,
        action=action,
        reason_code=reason_code,
        object_type=type(target)._meta.label,
        object_id=str(target.pk),
        before=before,
        after=after,
        message=message[:500],
    )
