"""What an account may use right now, and where each entitlement comes from."""

from __future__ import annotations

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


def _compute(customer_id: int) -> list[Entitlement]:
    subscriptions = list(
        Subscription.objects.filter(customer_id=customer_id, status__in=USABLE_STATUSES)
        .select_related("price__plan__product")
    )
    plan_ids = {s.price.plan_id: f"plan:{s.price.plan.product.code}/{s.price.plan.code}" for s in subscriptions}
    seats_bought = {s.price.plan_id: s.quantity for s in subscriptions if s.price.pricing == Price.Pricing.PER_SEAT}
    granted: dict[int, list[PlanFeature]] = {}
    for pf in PlanFeature.objects.filter(plan_id__in=plan_ids, enabled=True).select_related("feature"):
        if pf.feature.limit_from_quantity and pf.plan_id in seats_bought:
            # The seats bought, capped by what the plan allows at most.
            bought = seats_bought[pf.plan_id]
            pf.limit_value = bought if pf.limit_value is None else min(bought, pf.limit_value)
        granted.setdefault(pf.feature_id, []).append(pf)
    result = []
    for feature in Feature.objects.order_by("sort_order", "code"):
        grants = granted.get(feature.pk, [])
        if feature.kind == Feature.Kind.LIMIT and grants:
            limits = [pf.limit_value for pf in grants]
            limit = None if any(v is None for v in limits) else max(limits)
        else:
            limit = None if grants else (0 if feature.kind == Feature.Kind.LIMIT else None)
        result.append(Entitlement(
            feature=feature.code, name=feature.name, kind=feature.kind, enabled=bool(grants),
            limit=limit, unit=feature.unit, sources=tuple(sorted(plan_ids[pf.plan_id] for pf in grants)),
        ))
    return result


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
