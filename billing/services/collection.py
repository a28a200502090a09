"""Collecting renewal invoices: payment attempts, the retry schedule (dunning) and the customer's emails.

An unpaid renewal invoice makes the subscription past due. Attempts follow settings.RENEWAL_RETRY_SCHEDULE
(days after each failure); when the schedule runs out, the subscription is cancelled (nothing deleted) and
the invoice stays open for finance. Each attempt has its own idempotency key, taken under the invoice's lock
in a row of its own, so two workers or a retried task never charge an invoice twice; the gateway is only
called outside any transaction, like every other payment here.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.urls import reverse

from billing.errors import BillingError
from billing.models import BalanceEntry, Customer, Invoice, PaymentAttempt, Subscription
from billing.money import Money, format_amount
from billing.payments import GatewayUnavailable, PaymentResult, get_gateway
from billing.selectors import payment_method_default
from billing.services.audit import audit_event_record, subscription_snapshot
from billing.services.notifications import absolute_url, notification_queue
from entitlements.services import entitlements_sync

logger = logging.getLogger(__name__)


def _portal_billing_url(invoice: Invoice) -> str:
    return absolute_url(reverse("portal:billing", args=[invoice.customer_id]))


def _attempt_open(*, invoice_id: int, now: datetime, on_session: bool, return_url: str) -> PaymentAttempt | None:
    """Under the invoice's lock: the open attempt to resume, a new one when one is due, or None."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update(of=("self",)).select_related("customer").get(pk=invoice_id)
        if invoice.status != Invoice.Status.ISSUED or invoice.kind != Invoice.Kind.INVOICE or invoice.amount_due <= 0:
            return None
        current = invoice.payment_attempts.filter(status__in=PaymentAttempt.OPEN).first()
        if current is not None:
            return current  # its outcome is not recorded yet: resume it with the same key
        if not on_session and (invoice.next_payment_attempt_at is None or invoice.next_payment_attempt_at > now):
            return None
        number = invoice.payment_attempts.count() + 1
        method = payment_method_default(customer=invoice.customer)
        if method is None and on_session:
            raise BillingError("no_payment_method", "Add a payment method to pay this invoice.", status=409)
        attempt = PaymentAttempt(invoice=invoice, number=number, off_session=not on_session, created_at=now,
                                 return_url=return_url[:500] if on_session else "")
        if method is None:
            attempt.status = PaymentAttempt.Status.DECLINED
            attempt.failure_code = "no_payment_method"
            attempt.failure_message = "No payment method is saved for this account."
            attempt.completed_at = now
        else:
            attempt.payment_gateway = method.gateway
            attempt.payment_method_reference = method.reference
            attempt.payment_customer_reference = method.gateway_customer
        try:
            with transaction.atomic():
                attempt.save()
        except IntegrityError:  # another worker opened this attempt a moment ago: resume it instead
            return invoice.payment_attempts.filter(status__in=PaymentAttempt.OPEN).first()
        if not on_session:  # the customer's own try leaves the automatic schedule as it was
            invoice.next_payment_attempt_at = None
            invoice.save(update_fields=["next_payment_attempt_at"])
        if method is None:
            _attempt_failed(attempt=attempt, invoice=invoice, now=now)
        return attempt


def invoice_collect(*, invoice_id: int, now: datetime, on_session: bool = False, return_url: str = "",
                    actor: AbstractBaseUser | None = None) -> PaymentAttempt | None:
    """Try to collect an issued invoice once: the scheduled attempt (the sweep, off-session) or, with
    `on_session`, the customer paying from the portal now. Returns the attempt, or None if nothing was due."""
    attempt = _attempt_open(invoice_id=invoice_id, now=now, on_session=on_session, return_url=return_url)
    if attempt is not None and _abandoned(attempt=attempt, now=now, on_session=on_session):
        # The customer left an authentication unfinished (or now pays with another card): cancel it at the
        # gateway first, so it can never be paid on top of the next attempt, then go on with the schedule.
        attempt = _attempt_cancel(attempt=attempt, now=now, actor=actor)
        if attempt.status != PaymentAttempt.Status.SUCCEEDED:
            attempt = _attempt_open(invoice_id=invoice_id, now=now, on_session=on_session, return_url=return_url)
    if attempt is None or attempt.status not in PaymentAttempt.OPEN:
        return attempt
    gateway = get_gateway(attempt.payment_gateway)
    try:
        if attempt.status == PaymentAttempt.Status.REQUIRES_ACTION:
            result = gateway.retrieve(reference=attempt.payment_reference)
        elif attempt.created_at <= now - settings.PAYMENT_RECONCILE_AFTER:
            # An attempt whose answer we lost: look it up by its key rather than send it again.
            found = gateway.find(idempotency_key=attempt.idempotency_key)
            if found is None:
                if attempt.created_at > now - settings.PAYMENT_NOT_TAKEN_AFTER:
                    return attempt  # a search may lag behind the charge: ask again on a later run
                return _attempt_not_taken(attempt_id=attempt.pk, now=now)
            result = found
        else:
            result = gateway.charge(
                payment_method=attempt.payment_method_reference,
                amount=Money(attempt.invoice.amount_due, attempt.invoice.currency),
                idempotency_key=attempt.idempotency_key, description=f"Crossgrade invoice {attempt.invoice.number}",
                return_url=attempt.return_url, off_session=attempt.off_session,
                customer_reference=attempt.payment_customer_reference,
            )
    except GatewayUnavailable as exc:  # outcome unknown: the same attempt is resumed with the same key later
        logger.warning("payment attempt %s for invoice %s has an unknown outcome: %s", attempt.number,
                       attempt.invoice_id, exc)
        if on_session:
            raise BillingError("payment_unavailable", "We could not reach the payment provider. Retrying is safe: "
                               "you will never be charged twice.", status=503) from None
        return attempt
    return invoice_payment_record(attempt_id=attempt.pk, result=result, now=now, actor=actor)


def _abandoned(*, attempt: PaymentAttempt, now: datetime, on_session: bool) -> bool:
    if attempt.status != PaymentAttempt.Status.REQUIRES_ACTION:
        return False
    if attempt.created_at <= now - settings.PAYMENT_ACTION_TIMEOUT:
        return True
    method = payment_method_default(customer=attempt.invoice.customer) if on_session else None
    return method is not None and method.reference != attempt.payment_method_reference


def _attempt_cancel(*, attempt: PaymentAttempt, now: datetime, actor: AbstractBaseUser | None) -> PaymentAttempt:
    try:
        result = get_gateway(attempt.payment_gateway).cancel(reference=attempt.payment_reference)
    except GatewayUnavailable:
        return attempt  # try again on the next run; nothing new is opened meanwhile
    return invoice_payment_record(attempt_id=attempt.pk, result=result, now=now, actor=actor)


def payment_attempt_refresh(*, attempt: PaymentAttempt, now: datetime,
                            actor: AbstractBaseUser | None = None) -> PaymentAttempt:
    """Where an attempt's payment stands at the gateway, recorded (webhooks, the portal's return address).
    Never charges anything."""
    if not attempt.payment_reference:
        return attempt
    result = get_gateway(attempt.payment_gateway).retrieve(reference=attempt.payment_reference)
    return invoice_payment_record(attempt_id=attempt.pk, result=result, now=now, actor=actor)


def payment_attempt_for_gateway_payment(*, gateway: str, reference: str, idempotency_key: str = "") -> PaymentAttempt | None:
    """The attempt a gateway payment belongs to: by the payment's id, or by the key in its metadata when the
    charge's answer never reached us."""
    attempt = PaymentAttempt.objects.filter(payment_gateway=gateway, payment_reference=reference).first()
    if attempt is None and idempotency_key.startswith(f"{settings.IDEMPOTENCY_NAMESPACE}-invoice-"):
        invoice_part, _sep, number = idempotency_key.removeprefix(f"{settings.IDEMPOTENCY_NAMESPACE}-invoice-") \
            .partition("-attempt-")
        if invoice_part.isdigit() and number.isdigit():
            attempt = PaymentAttempt.objects.filter(invoice_id=int(invoice_part), number=int(number),
                                                    payment_gateway=gateway).first()
            if attempt is not None and not attempt.payment_reference:
                PaymentAttempt.objects.filter(pk=attempt.pk, payment_reference="").update(payment_reference=reference)
                attempt.payment_reference = reference
    return attempt


def invoice_payment_record(*, attempt_id: int, result: PaymentResult, now: datetime,
                           actor: AbstractBaseUser | None = None) -> PaymentAttempt:
    """Record an attempt's outcome once: paid → the subscription is in good standing again; declined → the
    next retry is planned (or the subscription ends); authentication needed → the customer is asked."""
    attempt = PaymentAttempt.objects.select_related("invoice").get(pk=attempt_id)
    with transaction.atomic():
        Customer.objects.select_for_update(no_key=True).get(pk=attempt.invoice.customer_id)
        if attempt.invoice.subscription_id:
            Subscription.objects.select_for_update(of=("self",), no_key=True).get(pk=attempt.invoice.subscription_id)
        invoice = Invoice.objects.select_for_update(of=("self",)).select_related("customer", "subscription__price__plan") \
            .get(pk=attempt.invoice_id)
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.status not in PaymentAttempt.OPEN:
            if result.status == "succeeded" and attempt.status != PaymentAttempt.Status.SUCCEEDED:
                _late_success(attempt=attempt, invoice=invoice, reference=result.reference, actor=actor, now=now)
            return attempt  # another worker or request already recorded it
        attempt.payment_reference = result.reference or attempt.payment_reference
        attempt.failure_code, attempt.failure_message = result.failure_code, result.failure_message[:300]
        if result.status == "succeeded":
            attempt.status = PaymentAttempt.Status.SUCCEEDED
            attempt.completed_at = now
            attempt.save()
            _invoice_paid(invoice=invoice, attempt=attempt, actor=actor, now=now)
        elif result.status == "requires_action":
            attempt.status = PaymentAttempt.Status.REQUIRES_ACTION
            attempt.next_action_url = result.next_action_url
            attempt.save()
        elif result.status == "canceled":  # an unfinished authentication, cancelled: no part of the schedule
            attempt.status = PaymentAttempt.Status.CANCELED
            attempt.completed_at = now
            attempt.failure_code = "authentication_abandoned"
            attempt.failure_message = "The payment was not authenticated in time and was cancelled."
            attempt.save()
        else:
            attempt.status = PaymentAttempt.Status.DECLINED
            attempt.completed_at = now
            attempt.failure_code = attempt.failure_code or "payment_declined"
            attempt.failure_message = attempt.failure_message or "The payment was declined."
            attempt.save()
            if attempt.off_session:  # the customer's own failed try leaves the schedule as it was
                _attempt_failed(attempt=attempt, invoice=invoice, now=now)
    return attempt


def _attempt_not_taken(*, attempt_id: int, now: datetime) -> PaymentAttempt:
    """The gateway never received this attempt: close it and let the next one run now (same schedule)."""
    with transaction.atomic():
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.status != PaymentAttempt.Status.PENDING:
            return attempt
        attempt.status = PaymentAttempt.Status.CANCELED
        attempt.failure_code = "payment_not_taken"
        attempt.failure_message = "The payment provider never received this attempt; nothing was charged."
        attempt.completed_at = now
        attempt.save()
        Invoice.objects.filter(pk=attempt.invoice_id, status=Invoice.Status.ISSUED).update(next_payment_attempt_at=now)
    return attempt


def _late_success(*, attempt: PaymentAttempt, invoice: Invoice, reference: str, actor: AbstractBaseUser | None,
                  now: datetime) -> None:
    """Money arrived for an attempt we had closed (authenticated just as it was cancelled, say): it pays the
    invoice if that is still open, else it is held as the customer's balance. Never dropped, never twice."""
    attempt.status = PaymentAttempt.Status.SUCCEEDED
    attempt.payment_reference = reference or attempt.payment_reference
    attempt.completed_at = now
    attempt.save()
    if invoice.status == Invoice.Status.ISSUED:
        _invoice_paid(invoice=invoice, attempt=attempt, actor=actor, now=now)
        return
    BalanceEntry.objects.create(customer=invoice.customer, currency=invoice.currency, amount=invoice.amount_due,
                                kind=BalanceEntry.Kind.PAYMENT_CREDIT, invoice=invoice, created_at=now,
                                description=f"Payment {attempt.payment_reference} for invoice {invoice.number}, "
                                            "which was already paid")
    audit_event_record(actor=actor, action="invoice.payment_credited", target=invoice, now=now,
                       customer=invoice.customer, reason_code="payment_after_close",
                       message=f"{format_amount(invoice.amount_due, invoice.currency)} {invoice.currency} held as "
                               "customer balance")


def _next_retry(*, invoice: Invoice, now: datetime) -> datetime | None:
    """When to try again after an automatic attempt failed: settings.RENEWAL_RETRY_SCHEDULE[n − 1] days after
    the n-th failed automatic attempt; None when the schedule is used up. Attempts the gateway never took and
    the customer's own tries from the portal do not count."""
    failed = invoice.payment_attempts.filter(off_session=True, status=PaymentAttempt.Status.DECLINED).count()
    schedule = settings.RENEWAL_RETRY_SCHEDULE
    if failed > len(schedule):
        return None
    return now + timedelta(days=schedule[failed - 1])


def _attempt_failed(*, attempt: PaymentAttempt, invoice: Invoice, now: datetime) -> None:
    """An automatic attempt failed (locks held): past due and the next retry, or the end of the schedule."""
    customer = invoice.customer
    subscription = invoice.subscription
    next_at = _next_retry(invoice=invoice, now=now)
    invoice.next_payment_attempt_at = next_at
    invoice.save(update_fields=["next_payment_attempt_at"])
    context = _email_context(invoice=invoice, attempt=attempt)
    if next_at is not None:
        if subscription is not None and subscription.status != Subscription.Status.PAST_DUE \
                and subscription.status in Subscription.RENEWABLE:
            before = subscription_snapshot(subscription)
            subscription.status = Subscription.Status.PAST_DUE
            subscription.save(update_fields=["status", "updated_at"])
            audit_event_record(actor=None, action="subscription.past_due", target=subscription, now=now,
                               customer=customer, reason_code=attempt.failure_code, before=before,
                               after=subscription_snapshot(subscription),
                               message=f"Invoice {invoice.number} unpaid: {attempt.failure_message}")
        kind = ("renewal_authentication_required" if attempt.failure_code == "authentication_required"
                else "renewal_payment_failed")
        notification_queue(customer=customer, kind=kind, key=f"invoice-{invoice.pk}-attempt-{attempt.number}-failed",
                           context={**context, "next_attempt_at": next_at.isoformat()}, now=now)
        audit_event_record(actor=None, action="invoice.payment_failed", target=invoice, now=now, customer=customer,
                           reason_code=attempt.failure_code,
                           message=f"Attempt {attempt.number} failed: {attempt.failure_message} Next attempt "
                                   f"{next_at.isoformat()}")
        return
    # The schedule ran out: the subscription ends (its data stays); the invoice stays open for finance.
    if subscription is not None and subscription.status in Subscription.RENEWABLE:
        before = subscription_snapshot(subscription)
        subscription.status = Subscription.Status.CANCELLED
        subscription.version += 1
        subscription.save()
        entitlements_sync(customer=customer)
        audit_event_record(actor=None, action="subscription.cancelled_unpaid", target=subscription, now=now,
                           customer=customer, reason_code="payment_retries_exhausted", before=before,
                           after=subscription_snapshot(subscription),
                           message=f"Invoice {invoice.number} still unpaid after {attempt.number} attempts")
    notification_queue(customer=customer, kind="subscription_cancelled_unpaid", key=f"invoice-{invoice.pk}-cancelled",
                       context=context, now=now)


def _invoice_paid(*, invoice: Invoice, attempt: PaymentAttempt, actor: AbstractBaseUser | None,
                  now: datetime) -> None:
    invoice.status = Invoice.Status.PAID
    invoice.paid_at = now
    invoice.amount_paid = invoice.amount_due
    invoice.payment_reference = attempt.payment_reference
    invoice.next_payment_attempt_at = None
    invoice.save(update_fields=["status", "paid_at", "amount_paid", "payment_reference", "next_payment_attempt_at"])
    subscription = invoice.subscription
    recovered = False
    if subscription is not None and subscription.status == Subscription.Status.PAST_DUE and not Invoice.objects.filter(
        subscription=subscription, billing_reason=Invoice.Reason.RENEWAL, status=Invoice.Status.ISSUED,
    ).exists():
        before = subscription_snapshot(subscription)
        subscription.status = Subscription.Status.ACTIVE
        subscription.save(update_fields=["status", "updated_at"])
        recovered = True
        audit_event_record(actor=actor, action="subscription.recovered", target=subscription, now=now,
                           customer=invoice.customer, reason_code="invoice_paid", before=before,
                           after=subscription_snapshot(subscription))
    audit_event_record(actor=actor, action="invoice.paid", target=invoice, now=now, customer=invoice.customer,
                       reason_code="renewal_payment",
                       message=f"{format_amount(invoice.amount_due, invoice.currency)} {invoice.currency} collected "
                               f"(attempt {attempt.number}, {attempt.payment_reference})")
    notification_queue(customer=invoice.customer, kind="renewal_paid", key=f"invoice-{invoice.pk}-paid",
                       context={**_email_context(invoice=invoice, attempt=attempt), "recovered": recovered}, now=now)


def _email_context(*, invoice: Invoice, attempt: PaymentAttempt) -> dict:
    subscription = invoice.subscription
    return {
        "invoice_id": invoice.pk, "invoice_number": invoice.number, "amount": str(invoice.amount_due),
        "currency": invoice.currency, "timezone": invoice.billing_timezone,
        "plan": str(subscription.price.plan) if subscription is not None else "",
        "period_start": invoice.supply_start.isoformat(), "period_end": invoice.supply_end.isoformat(),
        "failure_code": attempt.failure_code, "failure_message": attempt.failure_message, "attempt": attempt.number,
        "billing_url": _portal_billing_url(invoice),
    }


def invoices_collect_due(*, now: datetime) -> list[int]:
    """Invoices whose next automatic attempt is due, and attempts whose outcome we never learned."""
    due = Invoice.objects.filter(status=Invoice.Status.ISSUED, next_payment_attempt_at__lte=now)
    stale = PaymentAttempt.objects.filter(status=PaymentAttempt.Status.PENDING,
                                          created_at__lte=now - settings.PAYMENT_RECONCILE_AFTER)
    return sorted({*due.values_list("pk", flat=True)[:5000], *stale.values_list("invoice_id", flat=True)[:1000]})
