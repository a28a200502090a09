"""Emergency upgrades: staff move a customer up at once, charged off-session and invoiced, with a reason.

The change is priced like any other (`quote_create`: eligibility, change rules, exact amounts) and shown to staff
before they confirm; it then goes through the customer's own accept/pay flow (`_plan_change_open`,
`plan_change_collect_payment`), so the amounts charged and invoiced are the quote's, the locks and idempotency
keys are the usual ones, and a declined card changes nothing. The card is charged off-session: nobody is there to
authenticate, so a card that needs it is declined rather than left waiting.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from billing.errors import BillingError, ChangeConflict, ChangeRefused
from billing.models import Direction, PlanChange, Price, Quote, Subscription, Timing
from billing.services.audit import audit_event_record
from billing.services.plan_changes import (
    _change_snapshot,
    _plan_change_open,
    plan_change_cancel,
    plan_change_collect_payment,
)
from billing.services.quotes import quote_create

PERMISSION = "billing.emergency_upgrade"
REASON_CODE = "staff_emergency_upgrade"


def _check_permission(actor: AbstractBaseUser) -> None:
    if not actor.has_perm(PERMISSION):
        raise BillingError("permission_denied", "Emergency upgrades need the 'emergency upgrade' permission.",
                           status=403)


def _check_quote(quote: Quote) -> None:
    """An emergency upgrade is an upgrade that takes effect now; anything else goes its usual way."""
    if quote.direction != Direction.UPGRADE:
        raise ChangeRefused("not_an_upgrade", f"This change is a {quote.get_direction_display().lower()}, not an "
                                              "upgrade: an emergency upgrade only moves a customer up.")
    if quote.timing != Timing.NOW:
        rule = quote.change_rule.name if quote.change_rule else "the change rules"
        raise ChangeRefused("not_immediate", f"'{rule}' makes this change take effect at the period end; an "
                                             "emergency upgrade takes effect now.")
    if quote.requires_approval:
        raise ChangeRefused("approval_required", "This change needs approval; an emergency upgrade does not bypass it.")


def emergency_upgrade_quote(*, subscription: Subscription, to_price: Price, quantity: int,
                            actor: AbstractBaseUser, now: datetime) -> Quote:
    """Price the upgrade as a stored quote (what staff confirm), or refuse with the reason."""
    _check_permission(actor)
    quote = quote_create(subscription=subscription, to_price=to_price, quantity=quantity, now=now, actor=actor)
    _check_quote(quote)
    return quote


def emergency_upgrade_confirm(*, quote: Quote, actor: AbstractBaseUser, reason: str, now: datetime) -> PlanChange:
    """Execute the quote now, charging the saved card off-session. Returns the plan change: applied (invoiced),
    failed (declined: nothing changed) or cancelled (the card needs the customer to authenticate: nothing changed).
    Raises ChangeConflict `payment_unavailable` when the gateway's answer is unknown (the reconciler settles it)."""
    _check_permission(actor)
    reason = (reason or "").strip()
    if not reason:
        raise ChangeRefused("reason_required", "Give the reason for the emergency upgrade; it goes into the audit "
                                               "trail.")
    _check_quote(quote)
    change = _plan_change_open(quote_id=quote.pk, actor=actor, now=now, off_session=True, reason_code=REASON_CODE)
    with transaction.atomic():
        audit_event_record(actor=actor, action="plan_change.emergency_upgrade", target=change, now=now,
                           customer=change.customer, reason_code=REASON_CODE, after=_change_snapshot(change),
                           message=reason)
    if change.status == PlanChange.Status.PENDING:
        change = plan_change_collect_payment(plan_change=change, now=now, actor=actor)
    if change.status == PlanChange.Status.REQUIRES_ACTION:  # a gateway that asks anyway: nobody is there to answer
        try:
            change = plan_change_cancel(plan_change=change, actor=actor, now=now, reason_code="authentication_required")
        except ChangeConflict:
            change.refresh_from_db()
    return change
