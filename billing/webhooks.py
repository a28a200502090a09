"""Incoming Stripe webhooks: verify, store raw under the event id, answer fast; a task does the work.

Processing never trusts the event's copy of the payment: it asks the gateway where the payment stands
now (plan_change_refresh_payment), so a replayed, reordered or duplicated event changes nothing twice.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.models import PlanChange, StripeEvent
from billing.payments import get_gateway
from billing.services.collection import payment_attempt_for_gateway_payment, payment_attempt_refresh
from billing.services.plan_changes import plan_change_record_payment

logger = logging.getLogger(__name__)

PAYMENT_EVENTS = {"payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled"}


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    payload = request.body
    if not settings.STRIPE_WEBHOOK_SECRET:  # anyone can sign with an empty secret: accept nothing
        return JsonResponse({"code": "webhook_not_configured", "detail": "STRIPE_WEBHOOK_SECRET is not set."},
                            status=503)
    try:
        event = stripe.Webhook.construct_event(payload, request.headers.get("Stripe-Signature"),
                                               settings.STRIPE_WEBHOOK_SECRET)
    except stripe.SignatureVerificationError:
        return JsonResponse({"code": "bad_signature", "detail": "The Stripe-Signature header does not verify."},
                            status=400)
    except ValueError:
        return JsonResponse({"code": "bad_payload", "detail": "The body is not a Stripe event."}, status=400)
    created = stripe_event_record(event_id=event.id, type=event.type, payload=json.loads(payload),
                                  now=timezone.now())
    return JsonResponse({"received": True, "duplicate": not created})


def stripe_event_record(*, event_id: str, type: str, payload: dict, now: datetime) -> bool:
    """Store the event once and enqueue its processing after commit. Returns whether it was new."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                event = StripeEvent.objects.create(event_id=event_id, type=type, payload=payload, received_at=now)
            created = True
        except IntegrityError:  # a redelivery, possibly concurrent with the first
            event = StripeEvent.objects.get(event_id=event_id)
            created = False
        if event.processed_at is None:  # re-enqueue an unfinished one; processing is idempotent
            transaction.on_commit(lambda: _enqueue(event_id))
    return created


def _enqueue(event_id: str) -> None:
    from billing.tasks import process_stripe_event

    process_stripe_event.delay(event_id)


def stripe_event_process(*, event_id: str, now: datetime) -> str:
    """Act on a stored event (outside any transaction: it may ask the gateway). Idempotent."""
    event = StripeEvent.objects.get(event_id=event_id)
    if event.processed_at is not None:
        return "already_processed"
    outcome = "ignored"
    if event.type in PAYMENT_EVENTS:
        intent = event.payload["data"]["object"]
        outcome = _payment_updated(intent_id=intent["id"], idempotency_key=(intent.get("metadata") or {}).get(
            "crossgrade_idempotency_key", ""), now=now)
    StripeEvent.objects.filter(pk=event.pk, processed_at__isnull=True).update(processed_at=now)
    return outcome


def _payment_updated(*, intent_id: str, idempotency_key: str, now: datetime) -> str:
    """Record Stripe's current state of the payment against its change, whatever the change's status:
    money that arrives for a change already closed (cancelled, failed) is credited, never dropped."""
    prefix = f"{settings.IDEMPOTENCY_NAMESPACE}-plan-change-"  # another deployment's payments are not ours
    change = PlanChange.objects.filter(payment_gateway="stripe", payment_reference=intent_id).first()
    if change is None and idempotency_key.startswith(prefix) and idempotency_key[len(prefix):].isdigit():
        # The charge's answer never reached us (timeout): find the change by the key in the intent's metadata.
        change = PlanChange.objects.filter(pk=int(idempotency_key[len(prefix):]), payment_gateway="stripe").first()
        if change is not None and change.payment_idempotency_key != idempotency_key:
            change = None
    if change is None:
        attempt = payment_attempt_for_gateway_payment(gateway="stripe", reference=intent_id,
                                                      idempotency_key=idempotency_key)
        if attempt is None:
            return "unknown_payment"
        return payment_attempt_refresh(attempt=attempt, now=now).status  # a renewal invoice's payment
    result = get_gateway("stripe").retrieve(reference=intent_id)
    return plan_change_record_payment(plan_change_id=change.pk, result=result, now=now).status


def stripe_events_unprocessed_enqueue(*, now: datetime, grace_minutes: int = 10, limit: int = 500) -> int:
    """Catch-up: events stored but still unprocessed after their task gave up are sent to the workers again."""
    from datetime import timedelta

    from billing.tasks import process_stripe_event

    ids = list(StripeEvent.objects.filter(processed_at__isnull=True, received_at__lte=now - timedelta(
        minutes=grace_minutes)).order_by("received_at").values_list("event_id", flat=True)[:limit])
    for event_id in ids:
        process_stripe_event.delay(event_id)
    return len(ids)
