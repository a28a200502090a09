"""Reads for the retention pages: trials shown on the plans page and the overview."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from billing.errors import ChangeRefused
from billing.models import Customer, Plan, Quote, Subscription
from billing.services.quotes import quote_price
from retention.models import Trial
from retention.services.trials import trial_eligible


@dataclass(frozen=True)
class RunningTrial:
    trial: Trial
    conversion: Quote | None  # the upgrade priced at the trial's end (None: it cannot be priced ahead)


def trial_get(*, customer: Customer, trial_id: int) -> Trial | None:
    """One of this customer's trials (None for another customer's: the portal answers 404)."""
    return (Trial.objects.select_related("plan__product", "price", "subscription__price__plan", "customer")
            .filter(pk=trial_id, customer=customer).first())


def trials_running(*, customer: Customer, now: datetime) -> dict[int, RunningTrial]:
    """The customer's running trials by subscription id, each with what converting at its end would cost."""
    result = {}
    for trial in (Trial.objects.filter(customer=customer, status=Trial.Status.ACTIVE, ends_at__gt=now)
                  .select_related("plan__product", "price", "subscription__customer", "subscription__price__plan")):
        conversion = None
        try:
            conversion = quote_price(subscription=trial.subscription, to_price=trial.price, quantity=trial.quantity,
                                     now=max(trial.ends_at, now))
        except ChangeRefused:
            pass
        result[trial.subscription_id] = RunningTrial(trial=trial, conversion=conversion)
    return result


def trial_offers(*, subscription: Subscription, now: datetime) -> dict[int, tuple[bool, str]]:
    """For each higher plan of the subscription's product: whether it can be tried now, and if not, why."""
    plans = Plan.objects.filter(product_id=subscription.product_id, is_active=True,
                                rank__gt=subscription.price.plan.rank).order_by("rank")
    return {plan.pk: trial_eligible(subscription=subscription, plan=plan, now=now) for plan in plans}
