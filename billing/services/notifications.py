"""Customer emails through an outbox: queued in the deciding transaction, sent by a worker after commit.

Queuing is exactly once per key (a unique row). Sending claims the row for a short lease, so two workers
never send it together; a worker killed between sending and recording leaves the lease to expire and the
catch-up sweep sends it again (at least once: no mail system can do better than that).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import translation

from billing.models import Customer, Notification

logger = logging.getLogger(__name__)

SEND_LEASE = timedelta(minutes=5)
MAX_SEND_ATTEMPTS = 8


def absolute_url(path: str) -> str:
    """`path` (from reverse()) as a link sent out of the site: in emails, or as a gateway's return address."""
    return settings.SITE_URL.rstrip("/") + path


def notification_queue(*, customer: Customer, kind: str, key: str, context: dict[str, Any],
                       now: datetime, to_email: str = "", language: str = "") -> Notification | None:
    """Write the email in the caller's transaction and send it after commit. Returns None when an email with
    this key already exists (a retried step queues nothing twice). It goes to the customer's billing contact
    unless `to_email` names another recipient about this customer (a requester), in `language` if given."""
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                customer=customer, kind=kind, key=key[:150], to_email=to_email or customer.email,
                language=language or customer.language or "en", context={"customer_name": customer.name, **context},
                created_at=now,
            )
    except IntegrityError:
        return None
    transaction.on_commit(lambda: _enqueue(notification.pk), robust=True)
    return notification


def _enqueue(notification_id: int) -> None:
    from billing.tasks import send_notification

    send_notification.delay(notification_id)


def notification_render(*, notification: Notification) -> EmailMultiAlternatives:
    """The email as the customer reads it, in their language, as text and HTML."""
    context = {**notification.context, "ctx": notification.context, "site_url": settings.SITE_URL}
    with translation.override(notification.language or "en"):
        subject = " ".join(render_to_string(f"emails/{notification.kind}.subject.txt", context).split())
        text = render_to_string(f"emails/{notification.kind}.txt", context)
        html = render_to_string(f"emails/{notification.kind}.html", context)
    message = EmailMultiAlternatives(subject=subject, body=text, from_email=settings.DEFAULT_FROM_EMAIL,
                                     to=[notification.to_email],
                                     headers=_headers(notification))
    message.attach_alternative(html, "text/html")
    return message


def _headers(notification: Notification) -> dict[str, str]:
    headers = {"X-Crossgrade-Notification": notification.key}
    unsubscribe_url = notification.context.get("unsubscribe_url")
    if unsubscribe_url:  # marketing email: the mail client's one-click unsubscribe (RFC 2369, RFC 8058)
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def notification_send(*, notification_id: int, now: datetime) -> bool:
    """Send one queued email unless it was sent or another worker holds it. Returns whether this call sent it."""
    claimed = Notification.objects.filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now), pk=notification_id, status=Notification.Status.PENDING,
    ).update(claimed_until=now + SEND_LEASE)
    if not claimed:
        return False
    notification = Notification.objects.get(pk=notification_id)
    try:
        message = notification_render(notification=notification)
        message.send()
    except Exception as exc:  # the mail server or a template: keep the row, say why, try again later
        attempts = notification.attempts + 1
        Notification.objects.filter(pk=notification_id).update(
            attempts=attempts, claimed_until=None, last_error=f"{type(exc).__name__}: {exc}"[:300],
            status=Notification.Status.FAILED if attempts >= MAX_SEND_ATTEMPTS else Notification.Status.PENDING,
        )
        raise
    Notification.objects.filter(pk=notification_id).update(
        status=Notification.Status.SENT, sent_at=now, subject=message.subject[:300], attempts=notification.attempts + 1,
        claimed_until=None, last_error="",
    )
    return True


def notifications_queue_many(*, notifications: list[Notification]) -> dict[str, int]:
    """Set-based `notification_queue` for sweeps: insert the unsaved rows in one statement, skipping keys that exist
    (exactly once per key, as above), in the caller's transaction. Returns {key: id} of the rows still waiting to be
    sent, new or left over from an earlier try; the caller enqueues them after commit (sending claims each row, so
    enqueuing one twice sends it once)."""
    if not notifications:
        return {}
    Notification.objects.bulk_create(notifications, ignore_conflicts=True)
    return dict(Notification.objects.filter(key__in=[n.key for n in notifications], status=Notification.Status.PENDING)
                .values_list("key", "pk"))


def notifications_pending_enqueue(*, now: datetime, older_than: timedelta = timedelta(minutes=1)) -> int:
    """Catch-up (beat): emails still waiting a minute after they were queued go to the workers again."""
    ids = list(Notification.objects.filter(status=Notification.Status.PENDING, created_at__lte=now - older_than)
               .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)).values_list("pk", flat=True)[:1000])
    for notification_id in ids:
        _enqueue(notification_id)
    return len(ids)
