"""The Stripe gateway and webhooks, driving the real SDK against a local stand-in of Stripe's HTTP API."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.errors import ChangeConflict
from billing.models import AuditEvent, PaymentMethod, PlanChange, Quote, StripeEvent, Subscription
from billing.money import Money
from billing.payments import get_gateway
from billing.payments.stripe import StripeGateway
from billing.services.plan_changes import plan_change_cancel, plan_changes_reconcile, quote_accept
from billing.services.quotes import quote_create
from billing.tests.conftest import STRIPE_TEST_WEBHOOK_SECRET
from billing.tests.factories import MID_JANUARY, subscription_setup
from billing.tests.stripe_standin import sign

pytestmark = pytest.mark.django_db

INTENTS = "/v1/payment_intents"
RETURN_URL = "http://testserver/return/"


def stripe_setup(payment_method: str):
    s = subscription_setup(payment_method=payment_method)
    PaymentMethod.objects.filter(customer=s.customer).update(gateway="stripe")
    return s


def make_quote(s):
    return quote_create(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=s.pro_month,
                        quantity=5, now=MID_JANUARY, actor=s.owner)


def accept(quote, s, minutes=1):
    return quote_accept(quote=Quote.objects.get(pk=quote.pk), actor=s.owner,
                        now=MID_JANUARY + timedelta(minutes=minutes), return_url=RETURN_URL)


def subscription_version(s) -> int:
    return Subscription.objects.get(pk=s.subscription.pk).version


def deliver(client, event: dict, secret: str = STRIPE_TEST_WEBHOOK_SECRET, payload: bytes | None = None):
    payload = payload if payload is not None else json.dumps(event).encode()
    return client.post(reverse("stripe-webhook"), data=payload, content_type="application/json",
                       headers={"Stripe-Signature": sign(payload, secret)})


def test_upgrade_is_one_payment_intent_with_our_idempotency_key_and_is_applied(stripe_standin):
    s = stripe_setup("pm_card_visa")
    change = accept(make_quote(s), s)
    assert change.status == "applied" and change.amount_due == Decimal("61.42")
    assert subscription_version(s) == 2
    [request] = stripe_standin.requests_to("POST", INTENTS)
    assert request.idempotency_key == f"crossgrade-plan-change-{change.pk}"
    assert request.params["amount"] == "6142" and request.params["currency"] == "eur"
    assert request.params["payment_method"] == "pm_card_visa" and request.params["confirm"] == "true"
    assert request.params["metadata"] == {"crossgrade_idempotency_key": f"crossgrade-plan-change-{change.pk}"}
    assert request.params["return_url"] == RETURN_URL
    [intent] = stripe_standin.intents.values()
    assert change.payment_reference == intent["id"] and intent["status"] == "succeeded"


def test_declined_card_fails_the_change_and_applies_nothing(stripe_standin):
    s = stripe_setup("pm_card_chargeDeclined")
    change = accept(make_quote(s), s)
    assert change.status == "failed"
    assert (change.failure_code, change.failure_message) == ("generic_decline", "Your card was declined.")
    assert change.payment_reference == next(iter(stripe_standin.intents))
    assert subscription_version(s) == 1
    assert not PlanChange.objects.filter(status="applied").exists()
    assert Quote.objects.get(pk=change.quote_id).status == "open"


def test_authentication_completes_by_webhook_once_whatever_the_delivery_order(stripe_standin, client,
                                                                               django_capture_on_commit_callbacks):
    s = stripe_setup("pm_card_authenticationRequired")
    change = accept(make_quote(s), s)
    assert change.status == "requires_action"
    assert change.next_action_url == f"{stripe_standin.url}/standin/authenticate/{change.payment_reference}"
    assert subscription_version(s) == 1
    failed_snapshot = {**stripe_standin.intents[change.payment_reference], "status": "requires_payment_method",
                       "last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}

    stripe_standin.authenticate(change.payment_reference)  # the customer confirms on Stripe's page
    succeeded = stripe_standin.event(change.payment_reference, "payment_intent.succeeded")
    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(client, succeeded)
    assert response.status_code == 200 and response.json() == {"received": True, "duplicate": False}
    assert PlanChange.objects.get(pk=change.pk).status == "applied"
    assert subscription_version(s) == 2
    assert StripeEvent.objects.get(event_id=succeeded["id"]).processed_at is not None

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        again = deliver(client, succeeded)
    assert again.status_code == 200 and again.json()["duplicate"] is True and callbacks == []
    older = stripe_standin.event(change.payment_reference, "payment_intent.payment_failed", intent=failed_snapshot)
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(client, older).status_code == 200

    assert StripeEvent.objects.count() == 2
    assert StripeEvent.objects.filter(processed_at__isnull=True).count() == 0
    assert PlanChange.objects.get(pk=change.pk).status == "applied"
    assert subscription_version(s) == 2
    assert AuditEvent.objects.filter(action="plan_change.applied").count() == 1
    assert len(stripe_standin.requests_to("POST", INTENTS)) == 1


@pytest.mark.parametrize("how", ["wrong_secret", "tampered", "no_header"])
def test_bad_signature_answers_400_and_stores_nothing(stripe_standin, client, how):
    event = {"id": "evt_1", "object": "event", "type": "payment_intent.succeeded",
             "data": {"object": {"id": "pi_1", "object": "payment_intent"}}}
    payload = json.dumps(event).encode()
    if how == "wrong_secret":
        response = deliver(client, event, secret="whsec_someone_else")
    elif how == "tampered":
        header = sign(payload, STRIPE_TEST_WEBHOOK_SECRET)
        response = client.post(reverse("stripe-webhook"), data=payload.replace(b"pi_1", b"pi_2"),
                               content_type="application/json", headers={"Stripe-Signature": header})
    else:
        response = client.post(reverse("stripe-webhook"), data=payload, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "bad_signature"
    assert not StripeEvent.objects.exists()


def test_signed_body_that_is_not_an_event_answers_400(stripe_standin, client):
    response = deliver(client, {}, payload=b"not json")
    assert response.status_code == 400 and response.json()["code"] == "bad_payload"
    assert not StripeEvent.objects.exists()


def test_webhook_without_a_configured_secret_accepts_nothing(stripe_standin, client, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    event = {"id": "evt_1", "object": "event", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}}
    assert deliver(client, event, secret="").status_code == 503
    assert not StripeEvent.objects.exists()


def test_webhook_accepts_only_post(stripe_standin, client):
    assert client.get(reverse("stripe-webhook")).status_code == 405


@pytest.mark.parametrize("payment_method", ["pm_card_networkError", "pm_card_timeout"])
def test_unanswered_charge_leaves_the_change_pending_and_a_retry_charges_once_with_the_same_key(
    stripe_standin, settings, payment_method
):
    settings.STRIPE_TIMEOUT_SECONDS = 0.5
    stripe_standin.timeout_sleep = 1.5
    s = stripe_setup(payment_method)
    quote = make_quote(s)
    with pytest.raises(ChangeConflict) as failure:
        accept(quote, s)
    assert (failure.value.code, failure.value.status) == ("payment_unavailable", 503)
    change = PlanChange.objects.get()
    assert change.status == "pending" and subscription_version(s) == 1

    retried = accept(quote, s, minutes=2)
    assert retried.pk == change.pk and retried.status == "applied"
    requests = stripe_standin.requests_to("POST", INTENTS)
    assert [r.idempotency_key for r in requests] == [f"crossgrade-plan-change-{change.pk}"] * 2
    assert len(stripe_standin.intents) == 1  # Stripe replayed the first answer: one payment
    assert retried.payment_reference == next(iter(stripe_standin.intents))
    assert subscription_version(s) == 2


def test_sdk_network_retries_reuse_our_idempotency_key(stripe_standin, settings):
    settings.STRIPE_MAX_NETWORK_RETRIES = 1
    s = stripe_setup("pm_card_networkError")
    change = accept(make_quote(s), s)
    assert change.status == "applied"
    requests = stripe_standin.requests_to("POST", INTENTS)
    assert [r.idempotency_key for r in requests] == [f"crossgrade-plan-change-{change.pk}"] * 2
    assert len(stripe_standin.intents) == 1


def test_a_webhook_completes_a_change_whose_charge_answer_was_lost(stripe_standin, settings, client,
                                                                    django_capture_on_commit_callbacks):
    settings.STRIPE_TIMEOUT_SECONDS = 0.5
    stripe_standin.timeout_sleep = 1.5
    s = stripe_setup("pm_card_timeout")
    with pytest.raises(ChangeConflict):
        accept(make_quote(s), s)
    [intent_id] = stripe_standin.intents
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(client, stripe_standin.event(intent_id, "payment_intent.succeeded")).status_code == 200
    change = PlanChange.objects.get()
    assert change.status == "applied" and change.payment_reference == intent_id
    assert len(stripe_standin.requests_to("POST", INTENTS)) == 1


def test_reconciler_finds_a_lost_charge_by_its_key(stripe_standin, settings):
    settings.STRIPE_TIMEOUT_SECONDS = 0.5
    stripe_standin.timeout_sleep = 1.5
    s = stripe_setup("pm_card_timeout")
    with pytest.raises(ChangeConflict):
        accept(make_quote(s), s)
    counts = plan_changes_reconcile(now=MID_JANUARY + timedelta(minutes=30))
    assert counts["applied"] == 1
    assert PlanChange.objects.get().status == "applied"
    [search] = stripe_standin.requests_to("GET", f"{INTENTS}/search")
    assert "crossgrade-plan-change-" in search.params["query"]


def test_reconciler_fails_a_change_stripe_never_took(stripe_standin, settings):
    s = stripe_setup("pm_card_visa")
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens: the request never reaches Stripe
    with pytest.raises(ChangeConflict):
        accept(make_quote(s), s)
    settings.STRIPE_API_BASE = stripe_standin.url
    assert plan_changes_reconcile(now=MID_JANUARY + timedelta(minutes=30))["failed"] == 1
    assert PlanChange.objects.get().failure_code == "payment_not_taken"
    assert not stripe_standin.requests_to("POST", INTENTS) and not stripe_standin.intents
    assert subscription_version(s) == 1


def test_cancelling_a_change_waiting_for_authentication_cancels_the_intent(stripe_standin):
    s = stripe_setup("pm_card_authenticationRequired")
    change = accept(make_quote(s), s)
    cancelled = plan_change_cancel(plan_change=change, actor=s.owner, now=MID_JANUARY + timedelta(minutes=3))
    assert cancelled.status == "cancelled"
    assert stripe_standin.intents[change.payment_reference]["status"] == "canceled"


def test_cancel_after_the_customer_authenticated_applies_the_change(stripe_standin):
    s = stripe_setup("pm_card_authenticationRequired")
    change = accept(make_quote(s), s)
    stripe_standin.authenticate(change.payment_reference)
    with pytest.raises(ChangeConflict) as refused:
        plan_change_cancel(plan_change=change, actor=s.owner, now=MID_JANUARY + timedelta(minutes=3))
    assert refused.value.code == "not_cancellable"
    assert PlanChange.objects.get(pk=change.pk).status == "applied"


def test_refund_is_idempotent_and_limited_to_what_was_paid(stripe_standin):
    s = stripe_setup("pm_card_visa")
    change = accept(make_quote(s), s)
    gateway = get_gateway("stripe")
    assert isinstance(gateway, StripeGateway)
    refund = gateway.refund(reference=change.payment_reference, amount=Money(Decimal("10.00"), "EUR"),
                            idempotency_key=f"crossgrade-refund-{change.pk}")
    assert refund.status == "succeeded" and refund.reference.startswith("re_")
    again = gateway.refund(reference=change.payment_reference, amount=Money(Decimal("10.00"), "EUR"),
                           idempotency_key=f"crossgrade-refund-{change.pk}")
    assert again.reference == refund.reference and len(stripe_standin.refunds) == 1
    [request, _replay] = stripe_standin.requests_to("POST", "/v1/refunds")
    assert request.params["amount"] == "1000" and request.idempotency_key == f"crossgrade-refund-{change.pk}"
    too_much = gateway.refund(reference=change.payment_reference, amount=Money(Decimal("60.00"), "EUR"),
                              idempotency_key=f"crossgrade-refund-{change.pk}-2")
    assert too_much.status == "failed" and "greater than" in too_much.failure_message


def test_a_payment_that_succeeds_after_its_change_was_closed_is_credited_once(stripe_standin, client,
                                                                               django_capture_on_commit_callbacks):
    """The charge's answer was lost and the change was closed meanwhile; Stripe took the money after all."""
    from billing.models import BalanceEntry

    s = stripe_setup("pm_card_authenticationRequired")
    change = accept(make_quote(s), s)
    intent_id = change.payment_reference
    # Closed on our side (as a cancel after a lost answer would), while the customer authenticates at Stripe.
    PlanChange.objects.filter(pk=change.pk).update(status="cancelled", payment_reference="")
    stripe_standin.authenticate(intent_id)
    event = stripe_standin.event(intent_id, "payment_intent.succeeded")
    for _ in range(2):  # and Stripe delivers it twice
        with django_capture_on_commit_callbacks(execute=True):
            assert deliver(client, event).status_code == 200
    credit = BalanceEntry.objects.get(kind="payment_credit")
    assert credit.amount == change.amount_due and intent_id in credit.description
    assert PlanChange.objects.get(pk=change.pk).status == "cancelled" and subscription_version(s) == 1


@pytest.mark.parametrize(("amount", "currency", "sent"), [
    ("61.42", "EUR", 6142), ("1500", "JPY", 1500), ("1500", "ISK", 150000), ("12.340", "KWD", 12340)])
def test_amounts_leave_in_the_unit_stripe_expects(amount, currency, sent):
    from billing.payments.stripe import stripe_amount

    assert stripe_amount(Money(Decimal(amount), currency)) == sent


def test_a_three_decimal_amount_stripe_cannot_take_is_declined_not_rounded(stripe_standin):
    result = get_gateway("stripe").charge(payment_method="pm_card_visa", amount=Money(Decimal("12.345"), "KWD"),
                                          idempotency_key="k-kwd", return_url=RETURN_URL)
    assert (result.status, result.failure_code) == ("declined", "amount_not_supported")
    assert not stripe_standin.requests_to("POST", INTENTS)


def test_resuming_from_the_portal_sends_the_same_request_as_the_first_attempt(stripe_standin, settings):
    """The portal's "I have confirmed it" resumes a pending charge; Stripe refuses a key reused with other
    parameters, so the retry must carry the first attempt's return address too."""
    from billing.services.plan_changes import plan_change_refresh_payment

    settings.STRIPE_TIMEOUT_SECONDS = 0.5
    stripe_standin.timeout_sleep = 1.5
    s = stripe_setup("pm_card_timeout")
    with pytest.raises(ChangeConflict):
        accept(make_quote(s), s)
    change = PlanChange.objects.get()
    assert change.return_url == RETURN_URL
    done = plan_change_refresh_payment(plan_change=change, now=MID_JANUARY + timedelta(minutes=3))
    assert done.status == "applied"
    requests = stripe_standin.requests_to("POST", INTENTS)
    assert [r.params.get("return_url") for r in requests] == [RETURN_URL, RETURN_URL]
