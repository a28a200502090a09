from __future__ import annotations

from django.db.models import F

from billing.models import Customer


def entitlements_sync(*, customer: Customer) -> None:
    """Call inside the transaction that changes what `customer` may use.

    Bumping the version re-keys the cache, so the new entitlements are served the moment the
    transaction commits, and a reader racing the commit can never store stale ones under the new key.
    """
    Customer.objects.filter(pk=customer.pk).update(entitlements_version=F("entitlements_version") + 1)
