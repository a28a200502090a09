"""Cash refunds of credit notes: by staff only, with a reason, through the gateway, exactly once.

Immediate downgrades credit the customer balance by default (a credit note). Staff may instead pay the
credit back to the card that paid for the account: record the refund and debit the balance (one
transaction), refund at the gateway with a key derived from the refund (no lock held), record the outcome;
a failed refund restores the balance.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Sum

from billing.errors import ChangeConflict, ChangeRefused
from billing.models import BalanceEntry, CashRefund, Customer, Invoice, PlanChange, PlanChangeRollback
from billing.money import Money, format_amount
from billing.payments import GatewayUnavailable, get_gateway
from billing.selectors import customer_balance
from billing.services.audit import audit_event_record


def _snapshot(refund: CashRefund) -> dict:
    return {"status": refund.status, "amount": format_amount(refund.amount, refund.currency),
            "currency": refund.currency, "payment_reference": refund.payment_reference,
            "refund_reference": refund.refund_reference}


def credit_note_refund(*, credit_note: Invoice, actor: AbstractBaseUser, reason: str, now: datetime) -> CashRefund:
    """Pay a credit note back to the customer's card instead of keeping it as balance.

    A credit note that reverses a rolled-back change pays back only what the card paid for that change, to that
    very payment: the part of the charge that came from the customer's balance goes back to the balance."""
    reason = (reason or "").strip()
    if not reason:
        raise ChangeRefused("reason_required", "Give the reason for the cash refund; it goes into the audit trail.")
    if credit_note.kind != Invoice.Kind.CREDIT_NOTE or credit_note.status == Invoice.Status.DRAFT:
        raise ChangeRefused("not_a_credit_note", "Only issued credit notes can be refunded in cash.")
    amount, currency, reversed_change = credit_note.total, credit_note.currency, None
    rollback = PlanChangeRollback.objects.filter(document=credit_note).select_related("plan_change").first()
    if rollback is not None:
        amount, reversed_change = rollback.plan_change.amount_due, rollback.plan_change
        if amount <= 0:
            raise ChangeRefused("nothing_to_refund", f"{credit_note.number} reverses a charge paid from the customer "
                                                     "balance, not by card: the credit stays balance.")
    pending = CashRefund.objects.filter(credit_note=credit_note, status=CashRefund.Status.PENDING).first()
    if pending is not None:  # its outcome is unknown: ask again with the same key, never a second refund
        return _cash_refund_settle(refund=pending, actor=actor, now=now)
    with transaction.atomic():
        customer = Customer.objects.select_for_update(no_key=True).get(pk=credit_note.customer_id)
        if CashRefund.objects.filter(credit_note=credit_note).exclude(status=CashRefund.Status.FAILED).exists():
            raise ChangeConflict("already_refunded", f"{credit_note.number} has already been refunded in cash.")
        if customer_balance(customer=customer, currency=currency) < amount:
            raise ChangeRefused("balance_used", f"Less than {format_amount(amount, currency)} {currency} of credit is "
                                                "left: part of it has already paid for later charges.")
        if reversed_change is not None:
            payment = reversed_change if _refundable(reversed_change) >= amount else None
        else:
            payment = _payment_to_refund(customer=customer, amount=amount, currency=currency)
        if payment is None:
            raise ChangeRefused("no_payment_to_refund", f"No single card payment of at least "
                                f"{format_amount(amount, currency)} {currency} is left to refund; keep it as balance.")
        refund = CashRefund.objects.create(
            customer=customer, credit_note=credit_note, currency=currency, amount=amount,
            payment_gateway=payment.payment_gateway, payment_reference=payment.payment_reference, reason=reason[:300],
            created_by=actor, created_at=now)
        BalanceEntry.objects.create(customer=customer, currency=currency, amount=-amount,
                                    kind=BalanceEntry.Kind.CASH_REFUND, created_at=now, created_by=actor,
                                    description=f"{credit_note.number} paid back to the card ({payment.payment_reference})")
        audit_event_record(actor=actor, action="credit_note.cash_refund_requested", target=refund, now=now,
                           customer=customer, reason_code="staff_refund", after=_snapshot(refund), message=reason)
    return _cash_refund_settle(refund=refund, actor=actor, now=now)


def _cash_refund_settle(*, refund: CashRefund, actor: AbstractBaseUser, now: datetime) -> CashRefund:
    """Refund at the gateway with the refund's own key (no lock held), then record the outcome once."""
    amount, currency, credit_note = refund.amount, refund.currency, refund.credit_note
    try:
        result = get_gateway(refund.payment_gateway).refund(
            reference=refund.payment_reference, amount=Money(amount, currency), idempotency_key=refund.idempotency_key)
    except GatewayUnavailable:
        raise ChangeConflict("payment_unavailable", "The payment provider did not answer; the refund is recorded as "
                             "pending. Refund again to ask once more: it will not be paid twice.", status=503) from None
    with transaction.atomic():
        customer = Customer.objects.select_for_update(no_key=True).get(pk=refund.customer_id)
        refund = CashRefund.objects.select_for_update().get(pk=refund.pk)
        if refund.status != CashRefund.Status.PENDING:
            return refund
        refund.closed_at = now
        if result.status == "pending":  # accepted by the gateway, not settled yet: ask again later
            refund.refund_reference = result.reference
            refund.save(update_fields=["refund_reference"])
            return refund
        if result.status == "failed":
            refund.status, refund.failure_message = CashRefund.Status.FAILED, result.failure_message[:300]
            BalanceEntry.objects.create(customer=customer, currency=currency, amount=amount, created_at=now,
                                        kind=BalanceEntry.Kind.CASH_REFUND_REVERSED, created_by=actor,
                                        description=f"Card refund of {credit_note.number} failed; credit restored")
        else:
            refund.status, refund.refund_reference = CashRefund.Status.SUCCEEDED, result.reference
        refund.save()
        audit_event_record(actor=actor, action=f"credit_note.cash_refund_{refund.status}", target=refund, now=now,
                           customer=customer, reason_code="staff_refund", after=_snapshot(refund),
                           message=refund.failure_message or refund.reason)
    return refund


def _refundable(payment: PlanChange) -> Decimal:
    """What is left of a change's card payment after the cash refunds already made from it."""
    if not payment.payment_reference or payment.applied_at is None:
        return Decimal(0)
    refunded = (CashRefund.objects.filter(payment_reference=payment.payment_reference)
                .exclude(status=CashRefund.Status.FAILED).aggregate(s=Sum("amount"))["s"] or 0)
    return payment.amount_due - refunded


def _payment_to_refund(*, customer: Customer, amount, currency: str) -> PlanChange | None:
    """The latest card payment of this customer in this currency with enough left to refund (a rolled-back
    change's payment was taken all the same)."""
    payments = (PlanChange.objects.filter(customer=customer, currency=currency, amount_due__gt=0,
                                          status__in=[PlanChange.Status.APPLIED, PlanChange.Status.ROLLED_BACK])
                .exclude(payment_reference="").order_by("-applied_at"))
    for payment in payments:
        if _refundable(payment) >= amount:
            return payment
    return None
