"""Idempotency keys: the same key replays the stored answer; the same key for another request is refused."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from billing.errors import BillingError, ChangeConflict
from billing.models import IdempotencyKey


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]


def request_fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def idempotency_begin(*, user: AbstractBaseUser, key: str, fingerprint: str, now: datetime) -> StoredResponse | None:
    """Claim `key` for this request. Returns the stored answer to replay, or None to go ahead."""
    if not key or len(key) > 255:
        raise BillingError("idempotency_key_invalid", "Idempotency-Key must be 1 to 255 characters.", status=400)
    try:
        with transaction.atomic():
            IdempotencyKey.objects.create(user=user, key=key, request_hash=fingerprint, created_at=now)
        return None
    except IntegrityError:
        record = IdempotencyKey.objects.get(user=user, key=key)
    if record.request_hash != fingerprint:
        raise BillingError(
            "idempotency_key_reused",
            "This Idempotency-Key was already used for a different request; use a new key.",
            status=422,
        )
    if record.completed_at is not None:
        return StoredResponse(record.response_status, record.response_body)
    if now - record.created_at > settings.IDEMPOTENCY_LOCK_TIMEOUT:
        # The first attempt died before answering; let this one take over (services are resumable).
        taken = IdempotencyKey.objects.filter(pk=record.pk, created_at=record.created_at,
                                              completed_at__isnull=True).update(created_at=now)
        if taken:
            return None
    raise ChangeConflict(
        "idempotency_in_progress",
        "A request with this Idempotency-Key is still being processed; retry in a moment.",
    )


def idempotency_finish(*, user: AbstractBaseUser, key: str, status: int, body: dict[str, Any], now: datetime) -> None:
    IdempotencyKey.objects.filter(user=user, key=key).update(
        response_status=status, response_body=body, completed_at=now
    )


def idempotency_release(*, user: AbstractBaseUser, key: str) -> None:
    """Forget an unanswered key (the request failed in a way worth retrying with the same key)."""
    IdempotencyKey.objects.filter(user=user, key=key, completed_at__isnull=True).delete()
