"""What an account may use right now, and where each entitlement comes from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from django.core.cache import cache
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing.models import Customer, Feature, FeatureUsage, PlanFeature, Price, Subscription

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
    # Usage against a limit (None: not reported, or not a limit). Usage is never cut to the limit: above it, the
    # excess stays and is read-only until the account removes items or buys a plan that covers it.
    used: int | None = None
    over_limit: bool = False
    read_only: bool = False
    # Granted only by subscriptions paused now (a retention offer's pause): kept and readable, read-only, nothing new
    # until the pause ends at `frozen_until` (ISO 8601) or the subscription is resumed.
    frozen: bool = False
    frozen_until: str | None = None

    @property
    def over_by(self) -> int:
        return (self.used or 0) - (self.limit or 0) if self.over_limit else 0


def entitlements_compute(*, customer_id: int, now: datetime | None = None) -> list[Entitlement]:
    """The entitlements from the database as it stands in this transaction, bypassing the cache."""
    return _compute(customer_id, now or timezone.now())[0]


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


def _compute(customer_id: int, now: datetime) -> tuple[list[Entitlement], datetime | None]:
    """(the entitlements at `now`, the next instant they change by themselves: a trial starting or ending)."""
    from retention.models import Trial

    subscriptions = list(
        Subscription.objects.filter(customer_id=customer_id, status__in=USABLE_STATUSES)
        .select_related("price__plan__product")
    )
    # Each grant: (plan id, its source label, seats bought for a per-seat price or None).
    grants_of: list[tuple[int, str, int | None]] = [
        (s.price.plan_id, f"plan:{s.price.plan.product.code}/{s.price.plan.code}",
         s.quantity if s.price.pricing == Price.Pricing.PER_SEAT else None) for s in subscriptions]
    # A trial of a higher tier grants the tried plan from its start to its end exactly (not until a sweep runs).
    trials = list(Trial.objects.filter(customer_id=customer_id, status=Trial.Status.ACTIVE,
                                       subscription__status__in=USABLE_STATUSES, ends_at__gt=now)
                  .select_related("plan__product", "price"))
    changes_at = min([t.starts_at if t.starts_at > now else t.ends_at for t in trials], default=None)
    grants_of += [(t.plan_id, f"trial:{t.plan.product.code}/{t.plan.code}",
                   t.quantity if t.price.pricing == Price.Pricing.PER_SEAT else None)
                  for t in trials if t.starts_at <= now]
    plan_features: dict[int, list[PlanFeature]] = {}
    for pf in PlanFeature.objects.filter(plan_id__in={g[0] for g in grants_of}, enabled=True).select_related("feature"):
        plan_features.setdefault(pf.plan_id, []).append(pf)
    usage = dict(FeatureUsage.objects.filter(customer_id=customer_id).values_list("feature_id", "used"))
    seats_used = max((s.seats_in_use for s in subscriptions), default=None)
    result = entitlements_from(grants_of=grants_of, plan_features=plan_features,
                               features=Feature.objects.order_by("sort_order", "code"), usage=usage,
                               seats_used=seats_used)
    # A pause freezes what it grants from its start to its end exactly (not until a sweep runs).
    changes_at = min([moment for s in subscriptions for moment in (s.pause_starts_at, s.paused_until)
                      if moment is not None and moment > now] + ([changes_at] if changes_at else []), default=None)
    paused = {f"plan:{s.price.plan.product.code}/{s.price.plan.code}": s.paused_until
              for s in subscriptions if s.pause_covers(now)}
    return (entitlements_frozen(result, paused=paused) if paused else result), changes_at


def entitlements_frozen(entitlements: list[Entitlement], *, paused: dict[str, datetime]) -> list[Entitlement]:
    """Mark as frozen (and read-only) what only paused subscriptions grant, `paused` being {source label: the
    pause's end}: data kept and readable, nothing new until the end. A feature another grant also gives stays live."""
    result = []
    for e in entitlements:
        if e.enabled and e.sources and all(source in paused for source in e.sources):
            until = max(paused[source] for source in e.sources)
            e = replace(e, frozen=True, read_only=True, frozen_until=until.isoformat())
        result.append(e)
    return result


def entitlements_from(*, grants_of: list[tuple[int, str, int | None]], plan_features: dict[int, list[PlanFeature]],
                      features: Iterable[Feature], usage: dict[int, int], seats_used: int | None) -> list[Entitlement]:
    """The entitlements from what grants them, read by the caller: each grant (plan id, source label, seats bought
    for a per-seat price or None), the enabled features of those plans, every feature in list order, the usage
    reported per feature and the seats in use. Pure: reads nothing, changes none of its arguments (the rows may be
    shared by a whole chunk of the sweep)."""
    granted: dict[int, list[tuple[str, int | None]]] = {}
    for plan_id, source, seats in grants_of:
        for pf in plan_features.get(plan_id, []):
            limit = pf.limit_value
            if pf.feature.limit_from_quantity and seats is not None:
                # The seats bought, capped by what the plan allows at most.
                limit = seats if limit is None else min(seats, limit)
            granted.setdefault(pf.feature_id, []).append((source, limit))
    result = []
    for feature in features:
        grants = granted.get(feature.pk, [])
        if feature.kind == Feature.Kind.LIMIT and grants:
            limits = [value for _source, value in grants]
            limit = None if any(v is None for v in limits) else max(limits)
        else:
            limit = None if grants else (0 if feature.kind == Feature.Kind.LIMIT else None)
        used = None
        if feature.kind == Feature.Kind.LIMIT:
            used = usage.get(feature.pk, seats_used if feature.limit_from_quantity else None)
        over = used is not None and limit is not None and used > limit
        result.append(Entitlement(
            feature=feature.code, name=feature.name, kind=feature.kind, enabled=bool(grants),
            limit=limit, unit=feature.unit, sources=tuple(sorted({source for source, _value in grants})),
            used=used, over_limit=over, read_only=over,
        ))
    return result


def entitlements_for_customer(*, customer: Customer, now: datetime | None = None) -> list[Entitlement]:
    """Every feature with whether and how much the customer may use it, cached per entitlements version.

    `customer` must be freshly read: its entitlements_version keys the cache. A cached answer also carries the
    instant it stops being true by itself (a trial's end, a pause's start or end), so tried features vanish and paused
    ones freeze and thaw exactly then.
    """
    now = now or timezone.now()
    key = f"entitlements:{customer.pk}:{customer.entitlements_version}"
    cached = cache.get(key)
    if isinstance(cached, dict):
        until = parse_datetime(cached["until"]) if cached.get("until") else None
        if until is None or now < until:
            return [Entitlement(**{**row, "sources": tuple(row["sources"])}) for row in cached["rows"]]
    result, changes_at = _compute(customer.pk, now)
    seconds = CACHE_SECONDS
    if changes_at is not None:
        seconds = max(1, min(seconds, int((changes_at - now).total_seconds()) + 1))
    cache.set(key, {"rows": [asdict(e) for e in result], "until": changes_at.isoformat() if changes_at else None},
              seconds)
    return result
