"""Demo data for trials and usage (called by `seed_demo`; idempotent): Société Exemple (fleur) tries Analytics
Business, ending in a few days, with conversion opted in; its storage use fits Business but not Pro, so the fallback
would show it read-only; Initech (erin) already uses more storage than Starter allows (read-only on the overview)."""

from __future__ import annotations

from datetime import datetime, timedelta

from billing.models import Customer, Feature, FeatureUsage, Plan, Subscription
from retention.models import Trial
from retention.services.trials import trial_start

TRIAL_CUSTOMER, TRIAL_PLAN, TRIAL_ENDS_IN_DAYS = "Société Exemple SA", "business", 4
STORAGE_USED_GB = {"Société Exemple SA": 300, "Initech Ltd": 40}


def seed_trials_demo(*, now: datetime) -> str:
    """Returns a line for the seed's summary."""
    storage = Feature.objects.filter(code="storage").first()
    if storage is not None:
        for name, used in STORAGE_USED_GB.items():
            customer = Customer.objects.filter(name=name).first()
            if customer is not None:
                FeatureUsage.objects.get_or_create(customer=customer, feature=storage,
                                                   defaults={"used": used, "reported_at": now})
    subscription = (Subscription.objects.select_related("customer", "price__plan__product")
                    .filter(customer__name=TRIAL_CUSTOMER, product__code="analytics", status="active").first())
    if subscription is None:
        return ""
    if not Trial.objects.filter(customer=subscription.customer).exists():
        # Started some days ago (within the current period, so the conversion can be priced) to end in a few days.
        start = max(subscription.current_period_start, now - timedelta(days=10))
        days = (now + timedelta(days=TRIAL_ENDS_IN_DAYS) - start).days
        plan = Plan.objects.get(product=subscription.product, code=TRIAL_PLAN)
        trial_start(subscription=subscription, plan=plan, days=days, source=Trial.Source.PLANS_PAGE, actor=None,
                    now=start, convert_opt_in=True)
    return (f"  Trial:              fleur ({TRIAL_CUSTOMER}) tries Analytics Business until the trial's end in a few "
            f"days (opted in to convert); erin is over Starter's storage limit (read-only)")
