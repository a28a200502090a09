"""Rolling back an applied plan change: staff only, within ROLLBACK_WINDOW_DAYS, with a reason, exactly once.

In one transaction, under the customer → subscription → plan change locks:
- the subscription gets back the price, seats, status and period it had before the change (read from the change's
  own `plan_change.applied` audit event, written in the transaction that applied it); its version is bumped, so
  quotes priced on the rolled-back terms can no longer be accepted;
- the change's document is reversed by the opposite document, which references it and copies its lines, tax and
  parties (a full reversal): a credit note for the invoice of an upgrade, credited to the balance like every credit
  note (the balance the change used comes back, the card part is held as credit); an invoice for the credit note
  of an immediate downgrade, paid from the balance (the downgrade's credit is taken back);
- entitlements follow (entitlements_sync bumps their version in this transaction);
- the change is `rolled_back`, one PlanChangeRollback row (one per change: a second rollback cannot exist) and an
  audit event that names the change's own event.
After commit, and only when staff ask for it, the card part is paid back in cash through `credit_note_refund`
(the gateway is never called inside the transaction).

A rollback is refused, with a reason, when anything already built on the change (see `_refusal_checks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q

from billing.errors import BillingError, ChangeConflict, ChangeRefused
from billing.models import (
    AuditEvent,
    BalanceEntry,
    CashRefund,
    Customer,
    Invoice,
    InvoiceLine,
    PlanChange,
    PlanChangeRollback,
    Price,
    Subscription,
    Timing,
)
from billing.money import format_amount
from billing.selectors import customer_balance
from billing.services.audit import audit_event_record, subscription_snapshot
from billing.services.invoices import _enqueue_pdf, invoice_issue
from billing.services.plan_changes import _lock
from billing.services.refunds import credit_note_refund
from entitlements.services import entitlements_sync

ROLLBACK_PERMISSION = "billing.rollback_plan_change"
REFUND_PERMISSION = "billing.refund_credit_note"
TERMS = ("price_id", "quantity", "status")
PERIOD = ("current_period_start", "current_period_end")


@dataclass(frozen=True)
class RollbackPlan:
    """Exactly what a rollback of `plan_change` would do now: shown to staff before they confirm, and executed."""

    plan_change: PlanChange
    subscription: Subscription
    change_event: AuditEvent
    restore_price: Price
    restore_quantity: int
    restore_status: str
    restore_period_start: datetime
    restore_period_end: datetime
    document: Invoice | None  # the change's invoice or credit note
    reversal_kind: str | None  # the kind of the reversing document (None: the change billed nothing)
    reversal_total: Decimal  # the reversing document's total, in its own kind's sense (as the original's)
    balance_amount: Decimal  # written to the customer balance: +credit, −credit taken back
    balance_before: Decimal
    refundable: Decimal  # what the card paid for the change, which staff may pay back in cash
    window_ends: datetime
    superseded: list[PlanChange] = field(default_factory=list)  # scheduled changes it replaced: they stay cancelled

    @property
    def currency(self) -> str:
        return self.plan_change.currency

    @property
    def balance_after(self) -> Decimal:
        return self.balance_before + self.balance_amount

    @property
    def balance_from_change(self) -> Decimal:
        """The part of the reversed charge that came from the customer balance (it goes back there)."""
        return self.plan_change.balance_applied if self.reversal_kind == Invoice.Kind.CREDIT_NOTE else Decimal(0)


@dataclass(frozen=True)
class RollbackOutcome:
    rollback: PlanChangeRollback
    refund: CashRefund | None = None
    refund_error: str = ""  # the rollback stands; the cash refund was refused or failed (credit kept as balance)


def _refuse(code: str, detail: str, **extra) -> ChangeRefused:
    return ChangeRefused(code, detail, **extra)


def _applied_event(change: PlanChange) -> AuditEvent | None:
    return (AuditEvent.objects.filter(action="plan_change.applied", object_type=PlanChange._meta.label,
                                      object_id=str(change.pk)).order_by("pk").first())


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _same_terms(snapshot: dict, subscription: Subscription) -> bool:
    now = subscription_snapshot(subscription)
    return (all(now[key] == snapshot.get(key) for key in TERMS)
            and all(_instant(now[key]) == _instant(snapshot[key]) for key in PERIOD))


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%d %b %Y %H:%M UTC")


def _rollback_plan(*, change: PlanChange, subscription: Subscription, customer: Customer,
                   now: datetime) -> RollbackPlan:
    """The rollback of `change` at `now`, or ChangeRefused naming what stands in the way.

    "Built on it" means: a later applied change of the subscription, a renewal since, a scheduled or in-flight
    change made after it (priced on its terms), a period that has ended, or any other edit of the terms."""
    label = f"Plan change {change.pk}"
    if change.status == PlanChange.Status.ROLLED_BACK:
        done = PlanChangeRollback.objects.filter(plan_change=change).select_related("created_by").first()
        by = f" by {done.created_by.get_username()} on {_when(done.created_at)}" if done else ""
        raise _refuse("already_rolled_back", f"{label} was already rolled back{by}.")
    if change.status != PlanChange.Status.APPLIED:
        raise _refuse("not_applied", f"{label} is {change.get_status_display().lower()}: only an applied change can "
                                     "be rolled back.")
    if change.timing != Timing.NOW:
        raise _refuse("applied_at_renewal", f"{label} took effect at the period end, in the renewal step that billed "
                                            "the new period on its terms: that renewal built on it. Make a new change "
                                            "instead.")
    window_ends = change.applied_at + timedelta(days=settings.ROLLBACK_WINDOW_DAYS)
    if now > window_ends:
        raise _refuse("window_passed", f"{label} applied on {_when(change.applied_at)}; changes can be rolled back for "
                                       f"{settings.ROLLBACK_WINDOW_DAYS} days, until {_when(window_ends)}.")
    event = _applied_event(change)
    if event is None or not event.before or not event.after:
        raise _refuse("no_record", f"The terms before {label.lower()} were not recorded, so they cannot be restored.")
    in_flight = PlanChange.objects.filter(customer=customer, status__in=PlanChange.IN_FLIGHT).first()
    if in_flight is not None:
        raise _refuse("change_in_progress", f"Plan change {in_flight.pk} of this customer is waiting for its "
                                            "payment; it was priced on the current balance. Let it finish or cancel "
                                            "it first.")
    later = (PlanChange.objects.filter(subscription=subscription, status=PlanChange.Status.APPLIED)
             .filter(Q(applied_at__gt=change.applied_at) | Q(applied_at=change.applied_at, pk__gt=change.pk))
             .order_by("applied_at", "pk").first())
    if later is not None:
        raise _refuse("later_change", f"Plan change {later.pk}, applied on {_when(later.applied_at)}, built on the "
                                      f"terms of {label.lower()}: roll that one back first.")
    scheduled = (PlanChange.objects.filter(subscription=subscription, status=PlanChange.Status.SCHEDULED)
                 .order_by("created_at", "pk").first())
    if scheduled is not None:  # applying `change` cancelled every earlier one: this one was priced on its terms
        raise _refuse("later_change", f"Plan change {scheduled.pk}, scheduled for {_when(scheduled.effective_at)}, was "
                                      f"made on the terms of {label.lower()}: cancel it first.")
    renewed = (Invoice.objects.filter(subscription=subscription, billing_reason=Invoice.Reason.RENEWAL,
                                      created_at__gte=change.applied_at).exists()
               or AuditEvent.objects.filter(action="subscription.renewed", object_type=Subscription._meta.label,
                                            object_id=str(subscription.pk), created_at__gte=change.applied_at).exists())
    if renewed:
        raise _refuse("renewed_since", f"The subscription was renewed on the terms of {label.lower()} since it "
                                       "applied: that renewal built on it.")
    if now >= subscription.current_period_end:
        raise _refuse("period_ended", f"The period {label.lower()} started ended on "
                                      f"{_when(subscription.current_period_end)}; its renewal builds on it.")
    if not _same_terms(event.after, subscription):
        raise _refuse("subscription_changed", f"The subscription's terms changed after {label.lower()} applied; "
                                              "they are not the ones it left, so restoring the earlier ones would "
                                              "undo more than this change.")
    before = event.before
    restore_price = Price.objects.select_related("plan__product").get(pk=before["price_id"])
    restore_start, restore_end = _instant(before["current_period_start"]), _instant(before["current_period_end"])
    if restore_end <= now:
        raise _refuse("previous_period_ended", f"The period {label.lower()} replaced ended on {_when(restore_end)}: "
                                               "there is no current period to go back to. Make a new change instead.")
    if restore_price.pricing == Price.Pricing.PER_SEAT and subscription.seats_in_use > before["quantity"]:
        raise _refuse("seats_in_use", f"{subscription.seats_in_use} seats are in use; the terms before "
                                      f"{label.lower()} had {before['quantity']}.")
    if before["status"] != Subscription.Status.CANCELLED and Subscription.objects.filter(
        customer=customer, product_id=restore_price.plan.product_id,
    ).exclude(status=Subscription.Status.CANCELLED).exclude(pk=subscription.pk).exists():
        raise _refuse("already_subscribed", f"The customer subscribes to {restore_price.plan.product} again; "
                                            "restoring this subscription would make two.")
    document = (Invoice.objects.filter(plan_change=change, billing_reason=Invoice.Reason.PLAN_CHANGE)
                .exclude(status=Invoice.Status.DRAFT).select_related("legal_entity").first())
    balance = customer_balance(customer=customer, currency=change.currency)
    reversal_kind, reversal_total, balance_amount, refundable = None, Decimal(0), Decimal(0), Decimal(0)
    if document is None:
        if change.total or change.amount_due or change.balance_applied:
            raise _refuse("no_document", f"{label} moved money but has no invoice or credit note to reverse.")
    elif document.kind == Invoice.Kind.INVOICE:  # an upgrade: its whole total back to the balance
        reversal_kind, reversal_total, balance_amount = Invoice.Kind.CREDIT_NOTE, document.total, document.total
        refundable = change.amount_due if change.payment_reference else Decimal(0)
    else:  # an immediate downgrade's credit note: its credit taken back, paid from the balance
        if CashRefund.objects.filter(credit_note=document).exclude(status=CashRefund.Status.FAILED).exists():
            raise _refuse("credit_refunded", f"The credit of {label.lower()} ({document.number}) was paid back to the "
                                             "card; a rollback would have to charge the card again. Make a new change "
                                             "instead.")
        if balance < document.total:
            raise _refuse("credit_used", f"Only {format_amount(balance, change.currency)} {change.currency} of credit "
                                         f"is left; taking back the {format_amount(document.total, change.currency)} "
                                         f"{change.currency} that {label.lower()} credited would leave the balance "
                                         "negative (part of it already paid for later charges).")
        reversal_kind, reversal_total, balance_amount = Invoice.Kind.INVOICE, document.total, -document.total
    superseded = list(PlanChange.objects.filter(subscription=subscription, status=PlanChange.Status.CANCELLED,
                                                failure_code="superseded", closed_at=change.applied_at)
                      .select_related("to_price__plan").order_by("pk"))
    return RollbackPlan(
        plan_change=change, subscription=subscription, change_event=event, restore_price=restore_price,
        restore_quantity=before["quantity"], restore_status=before["status"], restore_period_start=restore_start,
        restore_period_end=restore_end, document=document, reversal_kind=reversal_kind, reversal_total=reversal_total,
        balance_amount=balance_amount, balance_before=balance, refundable=refundable, window_ends=window_ends,
        superseded=superseded,
    )


def plan_change_rollback_preview(*, plan_change: PlanChange, now: datetime) -> RollbackPlan:
    """What rolling back `plan_change` would do now (nothing is written), or ChangeRefused with the reason."""
    change = (PlanChange.objects.select_related("customer", "subscription__price__plan", "from_price__plan",
                                                "to_price__plan").get(pk=plan_change.pk))
    return _rollback_plan(change=change, subscription=change.subscription, customer=change.customer, now=now)


def _reversal_issue(*, plan: RollbackPlan, customer: Customer, actor: AbstractBaseUser, now: datetime) -> Invoice:
    """The document reversing the change's document in full: the opposite kind, referencing it, with its parties,
    lines, tax and totals (a credit note states credited amounts as the invoice stated charged ones)."""
    original = plan.document
    credit = plan.reversal_kind == Invoice.Kind.CREDIT_NOTE
    reversal = Invoice.objects.create(
        kind=plan.reversal_kind, billing_reason=Invoice.Reason.ROLLBACK, legal_entity=original.legal_entity,
        customer=customer, plan_change=plan.plan_change, subscription_id=plan.subscription.pk,
        related_invoice=original, supply_start=original.supply_start, supply_end=original.supply_end,
        currency=original.currency, language=original.language, billing_timezone=original.billing_timezone,
        seller_name=original.seller_name, seller_address=original.seller_address,
        seller_country=original.seller_country, seller_vat_id=original.seller_vat_id,
        buyer_name=original.buyer_name, buyer_address=original.buyer_address, buyer_country=original.buyer_country,
        buyer_vat_id=original.buyer_vat_id, tax_inclusive=original.tax_inclusive,
        reverse_charge=original.reverse_charge, legal_mention=original.legal_mention,
        subtotal=original.subtotal, tax_total=original.tax_total, total=original.total,
        tax_breakdown=original.tax_breakdown,
        # An invoice taking back a credit is paid from that credit; a credit note is credited to the balance.
        balance_applied=Decimal(0) if credit else original.total, amount_paid=Decimal(0), amount_due=Decimal(0),
        created_at=now, created_by=actor,
    )
    InvoiceLine.objects.bulk_create([
        InvoiceLine(invoice=reversal, position=line.position, description=line.description, detail=line.detail,
                    quantity=line.quantity, unit_amount=line.unit_amount, amount=line.amount, tax_rate=line.tax_rate)
        for line in original.lines.order_by("position")
    ])
    invoice_issue(invoice=reversal, now=now)
    if not credit:
        reversal.status = Invoice.Status.PAID
        reversal.paid_at = now
        reversal.save(update_fields=["status", "paid_at"])
    transaction.on_commit(lambda: _enqueue_pdf(reversal.pk), robust=True)
    return reversal


def plan_change_rollback(*, plan_change: PlanChange, actor: AbstractBaseUser, reason: str, now: datetime,
                         refund: bool = False) -> RollbackOutcome:
    """Roll back an applied change (see the module's docstring); `refund` also pays the card part back in cash."""
    reason = (reason or "").strip()
    if not actor.has_perm(ROLLBACK_PERMISSION):
        raise BillingError("permission_denied", "Rolling back a plan change needs the 'rollback plan change' "
                                                "permission.", status=403)
    if refund and not actor.has_perm(REFUND_PERMISSION):
        raise BillingError("permission_denied", "Paying a rollback back in cash needs the 'refund credit note' "
                                                "permission; roll back without it to keep the credit as balance.",
                           status=403)
    if not reason:
        raise _refuse("reason_required", "Give the reason for the rollback; it goes into the audit trail.")
    try:
        with transaction.atomic():
            customer, subscription, change = _lock(plan_change.customer_id, plan_change.subscription_id, plan_change.pk)
            plan = _rollback_plan(change=change, subscription=subscription, customer=customer, now=now)
            if refund and plan.refundable <= 0:
                raise _refuse("nothing_to_refund", f"Plan change {change.pk} was not paid by card, so there is "
                                                   "nothing to pay back in cash; roll back without the refund.")
            rollback = _rollback_apply(plan=plan, customer=customer, subscription=subscription, actor=actor,
                                       reason=reason, refund=refund, now=now)
    except IntegrityError:  # the one-to-one keys: another rollback of this change won the race
        raise ChangeConflict("already_rolled_back", f"Plan change {plan_change.pk} was already rolled back.") from None
    if not refund:
        return RollbackOutcome(rollback=rollback)
    try:
        cash = credit_note_refund(credit_note=rollback.document, actor=actor, reason=reason, now=now)
    except BillingError as error:
        return RollbackOutcome(rollback=rollback, refund_error=error.detail)
    return RollbackOutcome(rollback=rollback, refund=cash, refund_error=cash.failure_message)


def _rollback_apply(*, plan: RollbackPlan, customer: Customer, subscription: Subscription, actor: AbstractBaseUser,
                    reason: str, refund: bool, now: datetime) -> PlanChangeRollback:
    change = plan.plan_change
    replaced = subscription_snapshot(subscription)
    subscription.price = plan.restore_price
    subscription.product_id = plan.restore_price.plan.product_id
    subscription.quantity = plan.restore_quantity
    subscription.status = plan.restore_status
    subscription.current_period_start = plan.restore_period_start
    subscription.current_period_end = plan.restore_period_end
    subscription.version += 1
    subscription.save()
    change.status = PlanChange.Status.ROLLED_BACK
    change.closed_at = now
    change.save(update_fields=["status", "closed_at"])
    document = None
    if plan.reversal_kind is not None:
        document = _reversal_issue(plan=plan, customer=customer, actor=actor, now=now)
    if plan.balance_amount:
        credit = plan.balance_amount > 0
        BalanceEntry.objects.create(
            customer=customer, currency=change.currency, amount=plan.balance_amount, plan_change=change,
            invoice=document, created_at=now, created_by=actor,
            kind=BalanceEntry.Kind.ROLLBACK_CREDIT if credit else BalanceEntry.Kind.ROLLBACK_DEBIT,
            description=(f"{document.number} reverses {plan.document.number}: plan change {change.pk} rolled back"
                         if credit else
                         f"{document.number} takes back the credit of {plan.document.number}: plan change "
                         f"{change.pk} rolled back"),
        )
    restored = subscription_snapshot(subscription)
    rollback = PlanChangeRollback.objects.create(
        plan_change=change, customer=customer, subscription=subscription, document=document,
        currency=change.currency, balance_amount=plan.balance_amount, refund_requested=refund,
        restored=restored, replaced=replaced, change_event=plan.change_event, reason=reason[:300],
        created_by=actor, created_at=now,
    )
    entitlements_sync(customer=customer)
    amounts = (f"{document.get_kind_display().lower()} {document.number} of "
               f"{format_amount(document.total, document.currency)} {document.currency}" if document else "nothing billed")
    audit_event_record(
        actor=actor, action="plan_change.rolled_back", target=change, now=now, customer=customer,
        reason_code="staff_rollback", before=replaced,
        after={**restored, "rollback_id": rollback.pk, "rolls_back_event": plan.change_event.pk,
               "document": document.number if document else None,
               "balance_amount": format_amount(plan.balance_amount, change.currency), "refund_requested": refund},
        message=f"{reason} ({amounts})",
    )
    return rollback
