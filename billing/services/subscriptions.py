from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from billing.models import Subscription
from billing.services.audit import audit_event_record, subscription_snapshot
from entitlements.services import entitlements_sync


def subscription_save_by_staff(*, subscription: Subscription, actor: AbstractBaseUser, now: datetime,
                               created: bool) -> Subscription:
    """A subscription created (or its usage edited) in the back office: audited, entitlements refreshed."""
    with transaction.atomic():
        before = None
        if not created:
            before = subscription_snapshot(Subscription.objects.select_related("price__plan").get(pk=subscription.pk))
        subscription.save()
        entitlements_sync(customer=subscription.customer)
        audit_event_record(actor=actor, action="subscription.created" if created else "subscription.edited",
                           target=subscription, now=now, customer=subscription.customer, reason_code="staff",
                           before=before, after=subscription_snapshot(subscription))
    return subscription
