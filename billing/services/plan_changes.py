"""Executing plan changes: accept a quote, pay, apply atomically; schedule, cancel, sweep, reconcile.

Lock order everywhere: customer → subscription → plan change (STYLE.md). The gateway is only
called outside any transaction, with a key derived from the plan change, so a retry is the same payment.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from billing.errors import ChangeConflict, ChangeRefused
from billing.models import BalanceEntry, Customer, Direction, PlanChange, Quote, Subscription, Timing
from billing.money import Money, format_amount
from billing.payments import GatewayUnavailable, PaymentResult, get_gateway
from billing.selectors import (
    billing_date,
    customer_balance,
    payment_method_default,
)
from billing.selectors_context import ReadContext
from billing.services.audit import audit_event_record, subscription_snapshot
from billing.services.invoices import invoice_for_plan_change
from entitlements.selectors import Entitlement, entitlements_compute, entitlements_gained
from entitlements.services import entitlements_sync

logger = logging.getLogger(__name__)


def _lock(customer_id: int, subscription_id: int, plan_change_id: int | None = None):
    """Lock customer → subscription → plan change. `of=("self",)`: never the joined catalog rows,
    which every customer shares (locking them would serialise and deadlock unrelated customers). `no_key`
    (FOR NO KEY UPDATE): we never change a key, and it lets the foreign-key checks of a quote being saved
    for the same subscription (FOR KEY SHARE, taken in another order) pass instead of deadlocking."""
    customer = Customer.objects.select_for_update(no_key=True).get(pk=customer_id)
    subscription = (Subscription.objects.select_for_update(of=("self",), no_key=True).select_related("price__plan")
                    .get(pk=subscription_id))
    plan_change = None
    if plan_change_id is not None:
        plan_change = PlanChange.objects.select_for_update().get(pk=plan_change_id)
    return customer, subscription, plan_change


def _change_snapshot(change: PlanChange) -> dict:
    return {
        "status": change.status,
        "to_price_id": change.to_price_id,
        "to_quantity": change.to_quantity,
        "effective_at": change.effective_at.isoformat(),
        "amount_due": format_amount(change.amount_due, change.currency),
        "currency": change.currency,
        "payment_reference": change.payment_reference,
    }


def quote_accept(*, quote: Quote, actor: AbstractBaseUser | None, now: datetime, return_url: str = "",
                 ctx: ReadContext | None = None) -> PlanChange:
    """Execute exactly the quote's amounts, or fail with a reason and change nothing.

    Returns the plan change: applied, scheduled, failed (payment declined) or requires_action.
    Accepting a quote whose payment is already under way resumes that same payment. `return_url` is
    where the customer's browser comes back to after authenticating the payment at the gateway.
    """
    ctx = ctx or ReadContext()
    change = _plan_change_open(quote_id=quote.pk, actor=actor, now=now, return_url=return_url, ctx=ctx,
                               ids=(quote.customer_id, quote.subscription_id))
    if change.status == PlanChange.Status.PENDING:
        change = plan_change_collect_payment(plan_change=change, now=now, actor=actor, ctx=ctx)
    return change


def _plan_change_open(*, quote_id: int, actor: AbstractBaseUser | None, now: datetime,
                      return_url: str = "", off_session: bool = False, reason_code: str = "",
                      ctx: ReadContext | None = None, ids: tuple[int, int] | None = None) -> PlanChange:
    """Record the change (pending, scheduled, or applied when nothing is due). `off_session` and `reason_code`
    are for staff acting without the customer (billing.services.emergency). `ids`: the quote's (customer id,
    subscription id) when the caller has them (they never change)."""
    ctx = ctx or ReadContext()
    if ids is None:
        ids = Quote.objects.values_list("customer_id", "subscription_id").get(pk=quote_id)
    with transaction.atomic():
        customer, subscription, _no_change = _lock(*ids)
        quote = Quote.objects.select_for_update(of=("self",)).get(pk=quote_id)
        quote.to_price = ctx.price(quote.to_price_id)  # with its plan, product and tiers
        existing = quote.plan_changes.filter(status__in=PlanChange.LIVE).first()
        if existing is not None:
            if existing.status == PlanChange.Status.PENDING:
                return existing  # its payment outcome is unknown: resume it with the same key
            raise ChangeConflict("quote_already_accepted", _("This quote has already been accepted."),
                                 plan_change=existing.pk)
        if now >= quote.expires_at:
            raise ChangeConflict("quote_expired", _("This quote has expired; request a new one."))
        if subscription.version != quote.subscription_version:
            raise ChangeConflict(
                "subscription_changed", _("The subscription changed since this quote was made; request a new quote.")
            )
        if subscription.status == Subscription.Status.PAST_DUE:  # no upgrade on an unpaid invoice
            raise ChangeRefused("invoice_unpaid", _("A renewal invoice of this subscription is unpaid; pay it on the "
                                                    "billing page before changing plans."))
        if subscription.status not in (Subscription.Status.ACTIVE, Subscription.Status.TRIALING):
            raise ChangeRefused("subscription_not_active", _("This subscription can no longer change plans."))
        if PlanChange.objects.filter(customer=customer, status__in=PlanChange.IN_FLIGHT).exists():
            raise ChangeConflict("change_in_progress",
                                 _("Another plan change is waiting for its payment; finish or cancel it first."))
        if customer_balance(customer=customer, currency=quote.currency) != quote.balance_before:
            raise ChangeConflict("balance_changed",
                                 _("Your account balance changed since this quote was made; request a new quote."))
        # Approval policies, a rule requiring approval or the contract's budget cap: held instead of charged.
        from billing.services.approvals import approval_hold_for_quote, approval_request_open, plan_change_summary

        hold = approval_hold_for_quote(quote=quote, subscription=subscription, policies=ctx.approval_policies())
        if quote.timing == Timing.NOW and quote.lines and ctx.legal_entity() is None:
            raise ChangeRefused("no_legal_entity", _("Invoicing is not set up yet; contact support."))
        decision = ctx.tax_decision_for(customer=customer, on=billing_date(customer=customer, moment=quote.created_at))
        if (decision.rate, decision.reverse_charge) != (quote.tax_rate, quote.reverse_charge):
            # The rate or the customer's VAT status changed since the quote: its tax no longer holds.
            raise ChangeConflict("tax_changed", _("The tax that applies to you changed since this quote was made; "
                                                  "request a new quote."))
        payment_method = None
        if quote.amount_due > 0:
            payment_method = payment_method_default(customer=customer)
            if payment_method is None:
                raise ChangeRefused("no_payment_method", _("Add a payment method before making this change."))
        scheduled = quote.timing == Timing.PERIOD_END
        from retention.services.exit_flow import exit_survey_for_quote

        survey = exit_survey_for_quote(quote=quote)  # the exit survey that led here: its reason is the change's
        if survey is not None and not reason_code:
            reason_code = survey.reason.code
        try:
            with transaction.atomic():
                change = PlanChange.objects.create(
                    customer=customer, subscription=subscription, quote=quote,
                    status=PlanChange.Status.PENDING_APPROVAL if hold else
                    PlanChange.Status.SCHEDULED if scheduled else PlanChange.Status.PENDING,
                    direction=quote.direction, timing=quote.timing,
                    from_price_id=quote.from_price_id, from_quantity=quote.from_quantity,
                    to_price_id=quote.to_price_id, to_quantity=quote.to_quantity,
                    effective_at=quote.effective_at, new_period_start=quote.new_period_start,
                    new_period_end=quote.new_period_end, currency=quote.currency, lines=quote.lines,
                    subtotal=quote.subtotal, tax_rate=quote.tax_rate, reverse_charge=quote.reverse_charge,
                    tax=quote.tax, total=quote.total, return_url=return_url[:500],
                    balance_applied=quote.balance_applied, amount_due=quote.amount_due,
                    balance_after=quote.balance_after, target_discount_percent=quote.target_discount_percent,
                    payment_method=payment_method,
                    payment_gateway=payment_method.gateway if payment_method else "",
                    payment_method_reference=payment_method.reference if payment_method else "",
                    off_session=off_session, reason_code=reason_code or f"customer_{quote.direction}",
                    created_by=actor if actor is not None and actor.is_authenticated else None,
                    created_at=now,
                )
        except IntegrityError:
            raise ChangeConflict("change_in_progress", _("Another change of this account is under way.")) from None
        quote.status = Quote.Status.ACCEPTED
        quote.save(update_fields=["status"])
        if survey is not None:
            from retention.services.exit_flow import exit_survey_link

            exit_survey_link(survey=survey, plan_change=change)
        if hold:
            approval_request_open(customer=customer, hold=hold, plan_change=change, actor=actor, now=now,
                                  summary=plan_change_summary(change))
            audit_event_record(actor=actor, action="plan_change.held", target=change, now=now, customer=customer,
                               reason_code=change.reason_code, after=_change_snapshot(change),
                               message="Held for approval; nothing charged until it is approved")
        elif scheduled:
            _supersede_scheduled(subscription=subscription, keep=change, actor=actor, now=now)
            audit_event_record(actor=actor, action="plan_change.scheduled", target=change, now=now,
                               customer=customer, reason_code=change.reason_code, before=None,
                               after=_change_snapshot(change),
                               message=f"Scheduled for {change.effective_at.isoformat()}")
        elif change.amount_due == 0:
            _apply(change=change, customer=customer, subscription=subscription, actor=actor, now=now, ctx=ctx)
        else:
            audit_event_record(actor=actor, action="plan_change.requested", target=change, now=now,
                               customer=customer, reason_code=change.reason_code, after=_change_snapshot(change))
    return change


def plan_change_collect_payment(*, plan_change: PlanChange, now: datetime,
                                actor: AbstractBaseUser | None = None, ctx: ReadContext | None = None) -> PlanChange:
    """Charge the pending change's amount (outside any transaction), then record the outcome. Every retry sends
    exactly the same request (key, amount, method, return address), as idempotent gateways require."""
    result = plan_change_charge(plan_change=plan_change)
    return plan_change_record_payment(plan_change_id=plan_change.pk, result=result, now=now, actor=actor, ctx=ctx,
                                      ids=(plan_change.customer_id, plan_change.subscription_id))


def plan_change_charge(*, plan_change: PlanChange) -> PaymentResult:
    """The gateway call of plan_change_collect_payment (outside any transaction), nothing recorded: ChangeConflict
    payment_unavailable when the outcome is unknown. The set-based staff step charges a chunk's changes with it."""
    gateway = get_gateway(plan_change.payment_gateway)
    try:
        return gateway.charge(
            payment_method=plan_change.payment_method_reference,
            amount=Money(plan_change.amount_due, plan_change.currency),
            idempotency_key=plan_change.payment_idempotency_key,
            description=f"Crossgrade plan change {plan_change.pk}",
            return_url=plan_change.return_url, off_session=plan_change.off_session,
            customer_reference=plan_change.payment_method.gateway_customer if plan_change.payment_method else "",
        )
    except GatewayUnavailable as exc:
        logger.warning("payment for plan change %s has an unknown outcome: %s", plan_change.pk, exc)
        raise ChangeConflict(
            "payment_unavailable",
            _("We could not reach the payment provider, so the change is not applied yet. Retrying is safe: "
              "you will never be charged twice."),
            status=503, plan_change=plan_change.pk,
        ) from None


def plan_change_refresh_payment(*, plan_change: PlanChange, now: datetime,
                                actor: AbstractBaseUser | None = None) -> PlanChange:
    """Ask the gateway where a change's payment stands (after authentication) and act on it."""
    if plan_change.status == PlanChange.Status.PENDING:
        return plan_change_collect_payment(plan_change=plan_change, now=now, actor=actor)
    if plan_change.status != PlanChange.Status.REQUIRES_ACTION:
        return plan_change
    result = get_gateway(plan_change.payment_gateway).retrieve(reference=plan_change.payment_reference)
    return plan_change_record_payment(plan_change_id=plan_change.pk, result=result, now=now, actor=actor)


def plan_change_record_payment(*, plan_change_id: int, result: PaymentResult, now: datetime,
                               actor: AbstractBaseUser | None = None, ctx: ReadContext | None = None,
                               ids: tuple[int, int] | None = None) -> PlanChange:
    """Record a payment outcome: succeeded → apply; declined → failed, nothing changed; else wait. `ids`: the
    change's (customer id, subscription id) when the caller has them (they never change)."""
    if ids is None:
        ids = PlanChange.objects.values_list("customer_id", "subscription_id").get(pk=plan_change_id)
    with transaction.atomic():
        customer, subscription, change = _lock(*ids, plan_change_id)
        if change.status not in PlanChange.IN_FLIGHT:
            if result.status == "succeeded" and change.status in (PlanChange.Status.CANCELLED,
                                                                  PlanChange.Status.FAILED):
                _credit_payment_for_closed_change(change=change, customer=customer, reference=result.reference,
                                                  actor=actor, now=now)
            return change  # otherwise another request or worker already recorded it
        change.payment_reference = result.reference
        if result.status == "succeeded":
            _apply(change=change, customer=customer, subscription=subscription, actor=actor, now=now, ctx=ctx)
        elif result.status in ("declined", "canceled"):
            change.status = PlanChange.Status.FAILED
            change.failure_code = result.failure_code or "payment_declined"
            change.failure_message = result.failure_message or "The payment was declined."
            change.closed_at = now
            change.save()
            Quote.objects.filter(pk=change.quote_id).update(status=Quote.Status.OPEN)
            audit_event_record(actor=actor, action="plan_change.payment_declined", target=change, now=now,
                               customer=customer, reason_code=change.failure_code,
                               after=_change_snapshot(change), message=change.failure_message)
        else:
            change.status = PlanChange.Status.REQUIRES_ACTION
            change.next_action_url = result.next_action_url
            change.failure_code = result.failure_code
            change.failure_message = result.failure_message
            change.save()
    return change


def _credit_payment_for_closed_change(*, change: PlanChange, customer: Customer, reference: str,
                                     actor: AbstractBaseUser | None, now: datetime) -> None:
    """Money arrived for a change that will not be applied: hold it for the customer, once, and say so."""
    kind = BalanceEntry.Kind.PAYMENT_CREDIT
    if BalanceEntry.objects.filter(plan_change=change, kind=kind).exists():
        return
    BalanceEntry.objects.create(
        customer=customer, currency=change.currency, amount=change.amount_due, kind=kind, plan_change=change,
        created_at=now, description=f"Payment {reference} for plan change {change.pk}, which was not applied",
    )
    audit_event_record(actor=actor, action="plan_change.payment_credited", target=change, now=now,
                       customer=customer, reason_code="payment_after_close", after=_change_snapshot(change),
                       message=f"{format_amount(change.amount_due, change.currency)} {change.currency} held as "
                               "customer balance")


def _supersede_scheduled(*, subscription: Subscription, keep: PlanChange | None,
                         actor: AbstractBaseUser | None, now: datetime) -> None:
    superseded = PlanChange.objects.filter(subscription=subscription, status=PlanChange.Status.SCHEDULED)
    if keep is not None:
        superseded = superseded.exclude(pk=keep.pk)
    for old in superseded.select_for_update().order_by("pk"):
        old.status = PlanChange.Status.CANCELLED
        old.closed_at = now
        old.failure_code = "superseded"
        old.failure_message = f"Replaced by plan change {keep.pk}." if keep else "Replaced by a later change."
        old.save()
        audit_event_record(actor=actor, action="plan_change.superseded", target=old, now=now,
                           customer=subscription.customer, reason_code="superseded",
                           after=_change_snapshot(old), message=old.failure_message)


def _apply(*, change: PlanChange, customer: Customer, subscription: Subscription,
           actor: AbstractBaseUser | None, now: datetime, ctx: ReadContext | None = None) -> None:
    """Apply the change's terms, ledger and audit in the caller's transaction (locks held)."""
    ctx = ctx or ReadContext()
    subscription.price = ctx.price(subscription.price_id)  # with its product, for the snapshots
    before = subscription_snapshot(subscription)
    entitled_before = entitlements_compute(customer_id=customer.pk)
    _apply_terms(change=change, subscription=subscription, ctx=ctx)
    if change.direction != Direction.CANCEL and change.target_discount_percent is not None:
        _discount_for_first_period(change=change, customer=customer, subscription=subscription, actor=actor, now=now)
    subscription.save()
    if change.balance_applied > 0:
        BalanceEntry.objects.create(
            customer=customer, currency=change.currency, amount=-change.balance_applied,
            kind=BalanceEntry.Kind.APPLIED_TO_CHANGE, plan_change=change, created_at=now,
            description=f"Applied to plan change {change.pk}",
            created_by=actor if actor is not None and actor.is_authenticated else None,
        )
    if change.total < 0:
        BalanceEntry.objects.create(
            customer=customer, currency=change.currency, amount=-change.total,
            kind=BalanceEntry.Kind.CHANGE_CREDIT, plan_change=change, created_at=now,
            description=f"Credit for unused time, plan change {change.pk}",
            created_by=actor if actor is not None and actor.is_authenticated else None,
        )
    _mark_applied(change=change, now=now, entitled_before=entitled_before,
                  entitled_after=entitlements_compute(customer_id=customer.pk))
    change.save()
    if change.timing == Timing.NOW:
        _supersede_scheduled(subscription=subscription, keep=change, actor=actor, now=now)
        invoice_for_plan_change(change=change, customer=customer, now=now, actor=actor, ctx=ctx)
    entitlements_sync(customer=customer)
    audit_event_record(actor=actor, action="plan_change.applied", target=change, now=now, customer=customer,
                       reason_code=change.reason_code, before=before, after=subscription_snapshot(subscription),
                       message=applied_message(change))
    from retention.services.winback import winback_plan_change_applied  # win-back enrolment / conversion, one insert

    winback_plan_change_applied(change=change, now=now)


def _apply_terms(*, change: PlanChange, subscription: Subscription, ctx: ReadContext) -> None:
    """The change's terms on the subscription, in memory (shared with the set-based period-end step)."""
    if change.direction == Direction.CANCEL:
        # Nothing is deleted: the subscription ends, its history and the customer's data stay.
        subscription.status = Subscription.Status.CANCELLED
    else:
        to_price = ctx.price(change.to_price_id)
        change.to_price = to_price
        subscription.price = to_price
        subscription.product_id = to_price.plan.product_id
        subscription.quantity = change.to_quantity
        subscription.current_period_start = change.new_period_start
        subscription.current_period_end = change.new_period_end
    subscription.version += 1


def _mark_applied(*, change: PlanChange, now: datetime, entitled_before: list[Entitlement],
                  entitled_after: list[Entitlement]) -> None:
    change.entitlements_added = entitlements_gained(before=entitled_before, after=entitled_after)
    change.status = PlanChange.Status.APPLIED
    change.applied_at = now
    change.next_action_url = ""
    change.failure_code = change.failure_message = ""


def applied_message(change: PlanChange) -> str:
    return f"{change.get_direction_display()}: {format_amount(change.amount_due, change.currency)} {change.currency} charged"


def _discount_for_first_period(*, change: PlanChange, customer: Customer, subscription: Subscription,
                               actor: AbstractBaseUser | None, now: datetime) -> None:
    """The period just entered was charged at the offer's discount: keep it for that period only (no periods left,
    so the next renewal resets it to 0 % before invoicing), and say so in the audit trail."""
    before = {"discount_percent": str(subscription.discount_percent),
              "discount_periods_left": subscription.discount_periods_left,
              "next_discount_percent": None if subscription.next_discount_percent is None
              else str(subscription.next_discount_percent),
              "next_discount_periods": subscription.next_discount_periods}
    subscription.discount_percent = change.target_discount_percent
    subscription.discount_periods_left = 0
    subscription.next_discount_percent = subscription.next_discount_periods = None
    audit_event_record(actor=actor, action="subscription.discount_set", target=subscription, now=now,
                       customer=customer, reason_code=change.reason_code,
                       before=before, after={"discount_percent": str(subscription.discount_percent),
                                             "discount_periods_left": 0, "next_discount_percent": None,
                                             "next_discount_periods": None},
                       message=f"{change.target_discount_percent.normalize():f} % off the first period of the new "
                               f"terms (plan change {change.pk}); list price from the next renewal")


def plan_change_cancel(*, plan_change: PlanChange, actor: AbstractBaseUser | None, now: datetime,
                       reason_code: str = "customer_cancelled") -> PlanChange:
    """Cancel a scheduled change, or one waiting for the customer's authentication or for an unknown
    payment outcome. A payment the gateway already took is never left behind: the change applies instead."""
    if plan_change.status in PlanChange.IN_FLIGHT:
        gateway = get_gateway(plan_change.payment_gateway)
        if plan_change.status == PlanChange.Status.REQUIRES_ACTION:
            result = gateway.cancel(reference=plan_change.payment_reference)
        else:
            result = gateway.find(idempotency_key=plan_change.payment_idempotency_key)
        if result is not None and result.status == "succeeded":
            change = plan_change_record_payment(plan_change_id=plan_change.pk, result=result, now=now, actor=actor)
            raise ChangeConflict("not_cancellable", _("The payment was already confirmed, so the change has been "
                                                      "applied."), plan_change=change.pk)
        if result is not None and result.status == "requires_action":
            raise ChangeConflict("not_cancellable", _("The payment could not be cancelled; try again in a moment."))
        if result is None and plan_change.created_at > now - settings.PAYMENT_NOT_TAKEN_AFTER:
            raise ChangeConflict("not_cancellable", _("The payment's outcome is not known yet; try again in a few "
                                                      "minutes."))
    with transaction.atomic():
        customer, subscription, change = _lock(plan_change.customer_id, plan_change.subscription_id, plan_change.pk)
        if change.status not in (PlanChange.Status.SCHEDULED, *PlanChange.IN_FLIGHT):
            raise ChangeConflict(
                "not_cancellable",
                _("This change is %(status)s and can no longer be cancelled.")
                % {"status": change.get_status_display().lower()},
            )
        before = _change_snapshot(change)
        change.status = PlanChange.Status.CANCELLED
        change.closed_at = now
        change.failure_code = reason_code
        change.save()
        Quote.objects.filter(pk=change.quote_id).update(status=Quote.Status.OPEN)
        audit_event_record(actor=actor, action="plan_change.cancelled", target=change, now=now, customer=customer,
                           reason_code=reason_code, before=before, after=_change_snapshot(change))
    return change


def _fail_change(*, change: PlanChange, customer: Customer, code: str, message: str, now: datetime) -> None:
    """Close a change as failed, with its reason, audited (locks held by the caller)."""
    change.status = PlanChange.Status.FAILED
    change.failure_code = code
    change.failure_message = message
    change.closed_at = now
    change.save()
    audit_event_record(actor=None, action="plan_change.failed", target=change, now=now, customer=customer,
                       reason_code=code, after=_change_snapshot(change), message=message)


def plan_changes_reconcile(*, now: datetime) -> dict[str, int]:
    """Settle changes whose payment outcome we missed (crash, timeout) or that wait too long for the customer.

    A pending change is looked up at the gateway by its idempotency key: found → recorded as it stands;
    never taken → the change fails and nothing is charged (the customer is not charged behind their back).
    """
    counts = {"applied": 0, "failed": 0, "cancelled": 0, "waiting": 0, "errors": 0}
    stale = PlanChange.objects.filter(
        status=PlanChange.Status.PENDING, created_at__lte=now - settings.PAYMENT_RECONCILE_AFTER
    )
    waiting = PlanChange.objects.filter(status=PlanChange.Status.REQUIRES_ACTION)
    for change in [*stale, *waiting]:
        try:
            change = _reconcile_one(change=change, now=now)
        except Exception:  # one bad change must not stop the others
            logger.exception("reconciling plan change %s failed", change.pk)
            counts["errors"] += 1
            continue
        key = {"applied": "applied", "failed": "failed", "cancelled": "cancelled"}.get(change.status, "waiting")
        counts[key] += 1
    return counts


def _reconcile_one(*, change: PlanChange, now: datetime) -> PlanChange:
    gateway = get_gateway(change.payment_gateway)
    if change.status == PlanChange.Status.PENDING:
        result = gateway.find(idempotency_key=change.payment_idempotency_key)
        if result is None:
            if change.created_at > now - settings.PAYMENT_NOT_TAKEN_AFTER:
                return change  # a search may lag behind the charge: ask again on a later run
            return _fail_pending(change_id=change.pk, now=now)
        return plan_change_record_payment(plan_change_id=change.pk, result=result, now=now)
    change = plan_change_refresh_payment(plan_change=change, now=now)
    if change.status == PlanChange.Status.REQUIRES_ACTION and change.created_at <= now - settings.PAYMENT_ACTION_TIMEOUT:
        try:
            change = plan_change_cancel(plan_change=change, actor=None, now=now, reason_code="authentication_timeout")
        except ChangeConflict:
            change.refresh_from_db()
    return change


def _fail_pending(*, change_id: int, now: datetime) -> PlanChange:
    change = PlanChange.objects.get(pk=change_id)
    with transaction.atomic():
        customer, _subscription, change = _lock(change.customer_id, change.subscription_id, change.pk)
        if change.status != PlanChange.Status.PENDING:
            return change
        _fail_change(change=change, customer=customer, code="payment_not_taken",
                     message="The payment provider never received the payment; nothing was charged.", now=now)
        Quote.objects.filter(pk=change.quote_id).update(status=Quote.Status.OPEN)
    return change
