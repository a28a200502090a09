"""Renewal invoices collected through the Stripe gateway, the real SDK against the local stand-in of Stripe's API:
off-session attempts, 3-D Secure asked of the customer, their on-session payment and Stripe's webhooks."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from billing.models import AuditEvent, Invoice, Notification, PaymentAttempt, PaymentMethod, StripeEvent, Subscription
from billing.services.collection import invoice_collect, invoices_collect_due
from billing.services.renewals import plan_changes_apply_due
from billing.tests.factories import PERIOD_END, subscription_setup
from billing.tests.test_stripe import deliver

pytestmark = pytest.mark.django_db

INTENTS = "/v1/payment_intents"
RETURN_URL = "http://testserver/c/1/invoices/1/pay/return/"


def stripe_setup(payment_method: str, *, gateway_customer: str = ""):
    s = subscription_setup(payment_method=payment_method)
    PaymentMethod.objects.filter(customer=s.customer).update(gateway="stripe", gateway_customer=gateway_customer)
    return s


def renew(now=PERIOD_END) -> int:
    """What beat does: the period-end sweep, then the payment attempts that are due, in this process."""
    applied = plan_changes_apply_due(now=now)
    for invoice_id in invoices_collect_due(now=now):
        invoice_collect(invoice_id=invoice_id, now=now)
    return applied


def renewal_invoice(s) -> Invoice:
    return Invoice.objects.get(subscription=s.subscription, billing_reason="renewal")


def intent_requests(standin):
    return standin.requests_to("POST", INTENTS)


def test_a_renewal_is_charged_off_session_with_the_stripe_customer_and_the_attempts_key(stripe_standin):
    s = stripe_setup("pm_card_visa", gateway_customer="cus_standin_1")
    assert renew() == 1
    invoice = renewal_invoice(s)
    attempt = invoice.payment_attempts.get()
    [request] = intent_requests(stripe_standin)
    assert request.idempotency_key == f"crossgrade-invoice-{invoice.pk}-attempt-1" == attempt.idempotency_key
    params = request.params
    assert (params["amount"], params["currency"]) == ("17850", "eur")  # 5 × 30.00 + 19 % VAT
    assert (params["payment_method"], params["customer"]) == ("pm_card_visa", "cus_standin_1")
    assert params["off_session"] == "true" and params["confirm"] == "true"
    assert "return_url" not in params  # nobody is there to come back
    assert params["metadata"] == {"crossgrade_idempotency_key": attempt.idempotency_key}
    assert invoice.number in params["description"]
    [intent] = stripe_standin.intents.values()
    assert attempt.status == "succeeded" and attempt.payment_reference == intent["id"]
    assert attempt.payment_customer_reference == "cus_standin_1"
    assert invoice.status == "paid" and invoice.payment_reference == intent["id"]
    assert invoice.amount_paid == Decimal("178.50")
    assert Notification.objects.get().kind == "renewal_paid"


def test_without_a_stripe_customer_none_is_sent(stripe_standin):
    s = stripe_setup("pm_card_visa")
    renew()
    [request] = intent_requests(stripe_standin)
    assert "customer" not in request.params and request.params["off_session"] == "true"
    assert renewal_invoice(s).status == "paid"


def test_a_declined_renewal_at_stripe_makes_the_subscription_past_due(stripe_standin, settings):
    settings.RENEWAL_RETRY_SCHEDULE = [1, 3, 5]
    s = stripe_setup("pm_card_chargeDeclined")
    renew()
    invoice = renewal_invoice(s)
    attempt = invoice.payment_attempts.get()
    assert (attempt.status, attempt.failure_code, attempt.failure_message) == (
        "declined", "generic_decline", "Your card was declined.")
    assert attempt.payment_reference == next(iter(stripe_standin.intents))
    assert invoice.status == "issued" and invoice.next_payment_attempt_at == PERIOD_END + timedelta(days=1)
    assert Subscription.objects.get(pk=s.subscription.pk).status == "past_due"
    assert Notification.objects.get().kind == "renewal_payment_failed"


def test_an_unanswered_renewal_charge_is_resumed_with_the_same_key_and_charged_once(stripe_standin, settings):
    settings.STRIPE_TIMEOUT_SECONDS = 0.5
    stripe_standin.timeout_sleep = 1.5
    s = stripe_setup("pm_card_timeout")
    renew()
    invoice = renewal_invoice(s)
    attempt = invoice.payment_attempts.get()
    assert attempt.status == "pending" and invoice.status == "issued"  # outcome unknown: nothing recorded yet
    assert Subscription.objects.get(pk=s.subscription.pk).status == "active"  # no dunning for an unknown outcome
    invoice_collect(invoice_id=invoice.pk, now=PERIOD_END + timedelta(seconds=30))  # the task's retry
    requests = intent_requests(stripe_standin)
    assert [r.idempotency_key for r in requests] == [attempt.idempotency_key] * 2
    assert requests[0].params == requests[1].params  # Stripe replays only the very same request
    assert len(stripe_standin.intents) == 1
    invoice.refresh_from_db()
    assert invoice.status == "paid" and invoice.payment_attempts.get().status == "succeeded"


# --- 3-D Secure: off-session refused, the customer pays on-session ------------------------------------------------


def authentication_declined_off_session(s, standin) -> Invoice:
    renew()
    invoice = renewal_invoice(s)
    attempt = invoice.payment_attempts.get()
    assert (attempt.status, attempt.failure_code) == ("declined", "authentication_required")
    [request] = intent_requests(standin)
    assert request.params["off_session"] == "true"
    assert standin.intents[attempt.payment_reference]["status"] == "requires_payment_method"
    return invoice


def pay_on_session(invoice, standin, *, hours: int = 1) -> PaymentAttempt:
    attempt = invoice_collect(invoice_id=invoice.pk, now=PERIOD_END + timedelta(hours=hours), on_session=True,
                              return_url=RETURN_URL)
    assert attempt.status == "requires_action" and not attempt.off_session and attempt.number == 2
    assert attempt.next_action_url == f"{standin.url}/standin/authenticate/{attempt.payment_reference}"
    request = intent_requests(standin)[-1]
    assert request.idempotency_key == attempt.idempotency_key
    assert request.params["return_url"] == RETURN_URL and "off_session" not in request.params
    return attempt


def test_a_card_needing_authentication_off_session_asks_the_customer(stripe_standin):
    s = stripe_setup("pm_card_authenticationRequired")
    invoice = authentication_declined_off_session(s, stripe_standin)
    notification = Notification.objects.get()
    assert notification.kind == "renewal_authentication_required"
    assert notification.key == f"invoice-{invoice.pk}-attempt-1-failed"
    assert notification.context["failure_code"] == "authentication_required"
    assert f"/c/{s.customer.pk}/billing/" in notification.context["billing_url"]
    assert Subscription.objects.get(pk=s.subscription.pk).status == "past_due"


def test_the_customer_authenticates_on_session_and_the_webhook_pays_nothing_twice(
    stripe_standin, client, django_capture_on_commit_callbacks
):
    s = stripe_setup("pm_card_authenticationRequired", gateway_customer="cus_standin_2")
    invoice = authentication_declined_off_session(s, stripe_standin)
    attempt = pay_on_session(invoice, stripe_standin)
    assert intent_requests(stripe_standin)[-1].params["customer"] == "cus_standin_2"
    assert Invoice.objects.get(pk=invoice.pk).status == "issued"

    stripe_standin.authenticate(attempt.payment_reference)  # on Stripe's page
    # The customer comes back to the return address, which resumes the same attempt.
    done = invoice_collect(invoice_id=invoice.pk, now=PERIOD_END + timedelta(hours=1, minutes=2), on_session=True)
    assert done.pk == attempt.pk and done.status == "succeeded"
    invoice.refresh_from_db()
    assert invoice.status == "paid" and invoice.payment_reference == attempt.payment_reference
    assert Subscription.objects.get(pk=s.subscription.pk).status == "active"

    succeeded = stripe_standin.event(attempt.payment_reference, "payment_intent.succeeded")
    for _ in range(2):  # Stripe's notice arrives afterwards, and twice
        with django_capture_on_commit_callbacks(execute=True):
            assert deliver(client, succeeded).status_code == 200
    assert StripeEvent.objects.get(event_id=succeeded["id"]).processed_at is not None
    assert len(intent_requests(stripe_standin)) == 2  # the off-session try and the customer's: nothing charged again
    assert list(PaymentAttempt.objects.filter(invoice=invoice).values_list("status", flat=True)) == [
        "declined", "succeeded"]
    invoice.refresh_from_db()
    assert invoice.status == "paid" and invoice.amount_paid == invoice.amount_due
    assert AuditEvent.objects.filter(action="invoice.paid").count() == 1
    assert Notification.objects.filter(kind="renewal_paid").count() == 1


def test_the_webhook_alone_settles_an_authenticated_renewal_payment(stripe_standin, client,
                                                                     django_capture_on_commit_callbacks):
    """The customer authenticated at Stripe but never came back to the portal (closed the tab)."""
    s = stripe_setup("pm_card_authenticationRequired")
    invoice = authentication_declined_off_session(s, stripe_standin)
    attempt = pay_on_session(invoice, stripe_standin)
    stripe_standin.authenticate(attempt.payment_reference)
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(client, stripe_standin.event(attempt.payment_reference,
                                                    "payment_intent.succeeded")).status_code == 200
    assert PaymentAttempt.objects.get(pk=attempt.pk).status == "succeeded"
    assert Invoice.objects.get(pk=invoice.pk).status == "paid"
    assert Subscription.objects.get(pk=s.subscription.pk).status == "active"


def test_failed_authentication_on_session_leaves_the_schedule_as_it_was(stripe_standin):
    s = stripe_setup("pm_card_authenticationRequired")
    invoice = authentication_declined_off_session(s, stripe_standin)
    planned = Invoice.objects.get(pk=invoice.pk).next_payment_attempt_at
    attempt = pay_on_session(invoice, stripe_standin)
    stripe_standin.authenticate(attempt.payment_reference, approve=False)
    done = invoice_collect(invoice_id=invoice.pk, now=PERIOD_END + timedelta(hours=2), on_session=True)
    assert done.pk == attempt.pk and done.status == "declined"
    assert done.failure_code == "payment_intent_authentication_failure"
    invoice.refresh_from_db()
    assert invoice.status == "issued" and invoice.next_payment_attempt_at == planned
    assert Subscription.objects.get(pk=s.subscription.pk).status == "past_due"
    assert Notification.objects.filter(kind="renewal_authentication_required").count() == 1  # no second email


def test_an_abandoned_authentication_does_not_stop_the_retry_schedule(stripe_standin, settings):
    settings.RENEWAL_RETRY_SCHEDULE = [1, 3, 5]
    s = stripe_setup("pm_card_authenticationRequired")
    invoice = authentication_declined_off_session(s, stripe_standin)
    pay_on_session(invoice, stripe_standin)  # and the customer closes the tab without authenticating
    for day in range(1, 21):  # three weeks of sweeps (the schedule runs out on day 9), before the next period end
        renew(PERIOD_END + timedelta(days=day))
    assert not PaymentAttempt.objects.filter(invoice=invoice, status__in=PaymentAttempt.OPEN).exists()
    assert PaymentAttempt.objects.filter(invoice=invoice, off_session=True).count() > 1
    assert Subscription.objects.get(pk=s.subscription.pk).status == "cancelled"
