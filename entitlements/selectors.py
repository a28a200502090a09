"""What an account may use right now, and where each entitlement comes from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from django.core.cache import cache

from billing.models import Customer, Feature, PlanFeature, Price, Subscription

USABLE_STATUSES = (Subscription.Status.TRIALING, Subscription.Status.ACTIVE, Subscription.Status.PAST_DUE)
CACHE_SECONDS = 3600


@dataclass(frozen=True)
class Entitlement:
    feature: str
    name: str
    kind: str
    enabled: bool
    limit: int | None  # None: unlimited (or not a limit)
    unit: str
    sources: tuple[str, ...]


def entitlements_compute(*, customer_id: int) -> list[Entitlement]:
    """The entitlements from the database as it stands in this transaction, bypassing the cache."""
    return _compute(customer_id)


def entitlements_gained(*, before: list[Entitlement], after: list[Entitlement]) -> list[str]:
    """Feature codes enabled, or with a higher limit, in `after` than in `before`."""
    old = {e.feature: e for e in before}
    gained = []
    for e in after:
        previous = old.get(e.feature)
        if not e.enabled:
            continue
        if previous is None or not previous.enabled:
            gained.append(e.feature)
        elif e.kind == "limit" and previous.limit is not None and (e.limit is None or e.limit > previous.limit):
            gained.append(e.feature)
    return gained


def entitlements_of(*, holdings: Iterable[tuple[Price, int]], grants: Iterable[PlanFeature],
                    features: Iterable[Feature]) -> list[Entitlement]:
    """The entitlements of an account holding `holdings` ((price with its plan and product, quantity) of each usable
    subscription), given the enabled plan features of those plans and every feature in list order. Pure: reads
    nothing, changes none of its arguments (the rows may be shared by a whole chunk of the sweep)."""
    holdings = list(holdings)
    plan_ids = {price.plan_id: f"plan:{price.plan.product.code}/{price.plan.code}" for price, _quantity in holdings}
    seats_bought = {price.plan_id: quantity for price, quantity in holdings if price.pricing == Price.Pricing.PER_SEAT}
    granted: dict[int, list[tuple[int, int | None]]] = {}  # feature id: (plan id, limit) of each grant
    for pf in grants:
        if pf.plan_id not in plan_ids:
            continue
        limit = pf.limit_value
        if pf.feature.limit_from_quantity and pf.plan_id in seats_bought:
            # The seats bought, capped by what the plan allows at most.
            bought = seats_bought[pf.plan_id]
            limit = bought if limit is None else min(bought, limit)
        granted.setdefault(pf.feature_id, []).append((pf.plan_id, limit))
    result = []
    for feature in features:
        grants_of = granted.get(feature.pk, [])
        if feature.kind == Feature.Kind.LIMIT and grants_of:
            limits = [value for _plan, value in grants_of]
            limit = None if any(v is None for v in limits) else max(limits)
        else:
            limit = None if grants_of else (0 if feature.kind == Feature.Kind.LIMIT else None)
        result.append(Entitlement(
            feature=feature.code, name=feature.name, kind=feature.kind, enabled=bool(grants_of),
            limit=limit, unit=feature.unit, sources=tuple(sorted(plan_ids[plan] for plan, _value in grants_of)),
        ))
    return result


def _compute(customer_id: int) -> list[Entitlement]:
    subscriptions = list(
        Subscription.objects.filter(customer_id=customer_id, status__in=USABLE_STATUSES)
        .select_related("price__plan__product")
    )
    plan_ids = {s.price.plan_id for s in subscriptions}
    return entitlements_of(
        holdings=[(s.price, s.quantity) for s in subscriptions],
        grants=PlanFeature.objects.filter(plan_id__in=plan_ids, enabled=True).select_related("feature"),
        features=Feature.objects.order_by("sort_order", "code"),
    )


def entitlements_for_customer(*, customer: Customer) -> list[Entitlement]:
    """Every feature with whether and how much the customer may use it, cached per entitlements version.

    `customer` must be freshly read: its entitlements_version keys the cache.
    """
    key = f"entitlements:{customer.pk}:{customer.entitlements_version}"
    cached = cache.get(key)
    if cached is not None:
        return [Entitlement(**{**row, "sources": tuple(row["sources"])}) for row in cached]
    result = _compute(customer.pk)
    cache.set(key, [asdict(e) for e in result], CACHE_SECONDS)
    return result
