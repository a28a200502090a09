"""Retention offers: which offers fit a customer on the way out, what each does to what they pay (priced the way
the renewal and the quote service price it, never by hand), and accepting or declining them exactly once.

Offer kinds and their effect when accepted (at once, audited as `retention.offer_accepted`):
- discount: `percent_off` for `periods` renewals, starting at the next renewal (the current period was paid); or
  `amount_off` in `currency` off each of the next `periods` renewal invoices, as a credit the renewal step puts on
  the balance just before each invoice, at most its total (retention.services.recurring_credits).
- pause: the next `periods` periods are entered without an invoice; billing resumes by itself after them.
- crossgrade: the quote to the cheaper `target_plan` (same currency, interval and seats) shown, accepted as it is.
- trial: a trial of the higher `target_plan` for `trial_days` (retention.services.trials, branch `trials`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Min
from django.utils.translation import gettext as _

from billing import proration
from billing.errors import BillingError, ChangeConflict, ChangeRefused
from billing.models import PlanChange, Price, Quote, Subscription
from billing.money import format_amount, round_exact
from billing.selectors import discount_for_next_period, period_price, price_get
from billing.services.audit import audit_event_record, subscription_snapshot
from entitlements.services import entitlements_sync
from retention.models import ExitSurvey, OfferPresentation, RecurringCredit, RetentionOffer
from retention.services.recurring_credits import recurring_credit_capped, recurring_credit_pending
from retention.services.trials import trial_eligible, trial_start

MONTHS = {"month": 1, "quarter": 3, "year": 12}


@dataclass
class EligibleOffer:
    """An offer that fits, with its priced effect (amounts as strings, as shown) and, for a cross-grade, its quote
    (priced, not yet stored)."""

    offer: RetentionOffer
    effect: dict[str, Any]
    quote: Quote | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- pricing -------------------------------------------------------------------------------------


def _money(value: Decimal, currency: str) -> str:
    return format_amount(value, currency)


def _net(priced) -> Decimal:
    """The period's amount without tax (an inclusive price's tax taken out)."""
    totals = priced.totals
    return totals.subtotal - totals.tax if priced.tax is not None and priced.tax.inclusive else totals.subtotal


def _renewal(subscription: Subscription, *, discount_percent: Decimal | None = None, price: Price | None = None,
             quantity: int | None = None, start: datetime | None = None):
    """The next period priced as the renewal step would invoice it."""
    return period_price(customer=subscription.customer, subscription=subscription,
                        price=price or subscription.price,
                        quantity=subscription.quantity if quantity is None else quantity,
                        discount_percent=discount_for_next_period(subscription) if discount_percent is None
                        else discount_percent,
                        start=start or subscription.current_period_end)


def monthly(amount: Decimal, interval: str, currency: str) -> Decimal:
    """A period amount normalised to one month (a quarter / 3, a year / 12), rounded to the minor unit."""
    return round_exact(amount / MONTHS[interval], currency)


def revenue_at_risk(*, survey: ExitSurvey) -> Decimal:
    """What the customer would stop paying per month, tax excluded, if they left as asked: the whole renewal when
    cancelling; the difference to the chosen plan when downgrading (never below zero)."""
    subscription = survey.subscription
    currency = subscription.price.currency
    current = monthly(_net(_renewal(subscription)), subscription.price.interval, currency)
    if survey.flow == ExitSurvey.Flow.CANCEL or survey.target_price is None:
        return current
    target_price = survey.target_price
    target = monthly(_net(_renewal(subscription, price=target_price, quantity=survey.target_quantity)),
                     target_price.interval, currency)
    return max(current - target, round_exact(Decimal(0), currency))


def _pause_end(subscription: Subscription, periods: int) -> datetime:
    """The end of `periods` periods after the current one, walked as the renewals walk them."""
    tz = ZoneInfo(subscription.customer.timezone)
    moment = subscription.current_period_end
    for _i in range(periods):
        moment = proration.add_interval(moment, subscription.price.interval, tz)
    return moment


def _effect_amount_off(subscription: Subscription, offer: RetentionOffer) -> dict[str, Any] | None:
    """"X off each of your next N invoices": a credit of X (at most the renewal's total) applied to each of the next N
    renewal invoices. Only in the subscription's own currency, and not on top of an amount off still running."""
    currency = subscription.price.currency
    if offer.amount_off is None or offer.amount_off <= 0 or not offer.periods or offer.currency != currency:
        return None
    if recurring_credit_pending(subscription_id=subscription.pk) is not None:
        return None
    now_price = _renewal(subscription)
    total = now_price.totals.total
    credit = recurring_credit_capped(amount=offer.amount_off, total=total)
    if credit <= 0:
        return None  # nothing billed: nothing to take off
    return {
        "kind": "discount", "currency": currency, "amount_off": _money(offer.amount_off, currency),
        "credit_per_period": _money(credit, currency), "capped": credit < offer.amount_off,
        "periods": offer.periods, "interval": subscription.price.interval,
        "starts_at": subscription.current_period_end.isoformat(),
        "pay": _money(total - credit, currency), "instead_of": _money(total, currency),
        "saving_per_period": _money(credit, currency), "saving_total": _money(credit * offer.periods, currency),
        "tax_inclusive": bool(now_price.tax is not None and now_price.tax.inclusive),
        "tax": _money(now_price.totals.tax, currency),
    }


def _effect_discount(subscription: Subscription, offer: RetentionOffer) -> dict[str, Any] | None:
    if offer.amount_off is not None:
        return _effect_amount_off(subscription, offer)
    if offer.percent_off is None or not offer.periods:
        return None
    if offer.percent_off <= discount_for_next_period(subscription):
        return None  # no better than what they already get
    currency = subscription.price.currency
    now_price = _renewal(subscription)
    offered = _renewal(subscription, discount_percent=offer.percent_off)
    saving = now_price.totals.total - offered.totals.total
    return {
        "kind": "discount", "currency": currency, "percent_off": str(offer.percent_off), "periods": offer.periods,
        "interval": subscription.price.interval, "starts_at": subscription.current_period_end.isoformat(),
        "pay": _money(offered.totals.total, currency), "instead_of": _money(now_price.totals.total, currency),
        "saving_per_period": _money(saving, currency), "saving_total": _money(saving * offer.periods, currency),
        "tax_inclusive": bool(offered.tax is not None and offered.tax.inclusive),
        "tax": _money(offered.totals.tax, currency),
    }


def _effect_pause(subscription: Subscription, offer: RetentionOffer) -> dict[str, Any] | None:
    if not offer.periods or subscription.status != Subscription.Status.ACTIVE:
        return None
    currency = subscription.price.currency
    now_price = _renewal(subscription)
    resumes = _pause_end(subscription, offer.periods)
    then = _renewal(subscription, start=resumes)
    return {
        "kind": "pause", "currency": currency, "periods": offer.periods, "interval": subscription.price.interval,
        "starts_at": subscription.current_period_end.isoformat(), "resumes_at": resumes.isoformat(),
        "pay": _money(round_exact(Decimal(0), currency), currency),
        "instead_of": _money(now_price.totals.total, currency),
        "saving_total": _money(now_price.totals.total * offer.periods, currency),
        "then_pay": _money(then.totals.total, currency),
    }


def _crossgrade_quote(subscription: Subscription, offer: RetentionOffer, now: datetime) -> Quote | None:
    from billing.services.quotes import quote_price

    if offer.target_plan_id is None or offer.target_plan_id == subscription.price.plan_id:
        return None
    price = price_get(plan_id=offer.target_plan_id, currency=subscription.price.currency,
                      interval=subscription.price.interval)
    if price is None:
        return None  # not sold in the customer's currency and interval
    quantity = 1 if price.pricing == Price.Pricing.FLAT else subscription.quantity
    try:
        return quote_price(subscription=subscription, to_price=price, quantity=quantity, now=now)
    except BillingError:
        return None  # not possible (seats, rules, contract): not offered


def _effect_crossgrade(subscription: Subscription, quote: Quote) -> dict[str, Any] | None:
    currency = subscription.price.currency
    # Compared on the quote's own basis: the subscription's discount as the quote priced it.
    current = _renewal(subscription, discount_percent=subscription.discount_percent)
    if quote.amount_due != 0 or quote.next_period_amount >= current.totals.total:
        return None  # a cheaper plan never charges now, and must cost less
    return {
        "kind": "crossgrade", "currency": currency, "plan": str(quote.to_price.plan),
        "plan_id": quote.to_price.plan_id, "price_id": quote.to_price_id, "quantity": quote.to_quantity,
        "interval": quote.to_price.interval, "effective_at": quote.effective_at.isoformat(), "timing": quote.timing,
        "amount_due": _money(quote.amount_due, currency), "pay": _money(quote.next_period_amount, currency),
        "instead_of": _money(current.totals.total, currency),
        "saving_per_period": _money(current.totals.total - quote.next_period_amount, currency),
        "lines": [{"description": line["description"], "amount": line["amount"]} for line in quote.lines],
    }


def _effect_trial(subscription: Subscription, offer: RetentionOffer, now: datetime) -> dict[str, Any] | None:
    if offer.target_plan_id is None or not offer.trial_days:
        return None
    if offer.target_plan.rank <= subscription.price.plan.rank or \
            offer.target_plan.product_id != subscription.product_id:
        return None
    try:
        eligible = trial_eligible(subscription=subscription, plan=offer.target_plan, now=now)
    except BillingError:
        return None
    if not (eligible[0] if isinstance(eligible, tuple) else eligible):  # (may try, why not)
        return None
    currency = subscription.price.currency
    now_price = _renewal(subscription)
    return {
        "kind": "trial", "currency": currency, "plan": str(offer.target_plan), "plan_id": offer.target_plan_id,
        "days": offer.trial_days, "ends_at": (now + timedelta(days=offer.trial_days)).isoformat(),
        "pay": _money(round_exact(Decimal(0), currency), currency),
        "then_pay": _money(now_price.totals.total, currency),
    }


# --- eligibility ---------------------------------------------------------------------------------


def tenure_days(*, subscription: Subscription, now: datetime) -> int:
    """Whole days since the customer's first subscription (or since the customer was created)."""
    customer = subscription.customer
    first = Subscription.objects.filter(customer_id=customer.pk).aggregate(first=Min("created_at"))["first"]
    since = min(filter(None, (first, customer.created_at)))
    return max((now - since).days, 0)


def _last_accepted(customer_id: int) -> datetime | None:
    return (OfferPresentation.objects.filter(customer_id=customer_id, status=OfferPresentation.Status.ACCEPTED)
            .order_by("-decided_at").values_list("decided_at", flat=True).first())


def offers_eligible(*, survey: ExitSurvey, now: datetime) -> list[EligibleOffer]:
    """The active offers that fit this survey, best first, each priced: the reason, the current plan, the tenure,
    the flow, the cooldown (no offer to a customer who accepted any retention offer within the offer's
    `cooldown_days`), and whether its effect is possible at all (a cheaper plan sold in the customer's currency and
    interval, a trial the customer may take). Reads only: a cross-grade's quote is priced, not stored."""
    subscription = Subscription.objects.select_related("customer", "price__plan__product").get(
        pk=survey.subscription_id)
    if subscription.status != Subscription.Status.ACTIVE or subscription.is_paused_at(now) \
            or not (subscription.current_period_start <= now < subscription.current_period_end):
        return []
    tenure = tenure_days(subscription=subscription, now=now)
    last_accepted = _last_accepted(subscription.customer_id)
    offers = (RetentionOffer.objects.filter(is_active=True, flow__in=(RetentionOffer.Flow.ANY, survey.flow),
                                            min_tenure_days__lte=tenure)
              .select_related("target_plan").prefetch_related("reasons", "plans").order_by("priority", "pk"))
    found = []
    for offer in offers:
        reasons = {reason.pk for reason in offer.reasons.all()}
        plans = {plan.pk for plan in offer.plans.all()}
        if reasons and survey.reason_id not in reasons:
            continue
        if plans and subscription.price.plan_id not in plans:
            continue
        if last_accepted is not None and last_accepted > now - timedelta(days=offer.cooldown_days):
            continue
        quote = None
        if offer.kind == RetentionOffer.Kind.DISCOUNT:
            effect = _effect_discount(subscription, offer)
        elif offer.kind == RetentionOffer.Kind.PAUSE:
            effect = _effect_pause(subscription, offer)
        elif offer.kind == RetentionOffer.Kind.CROSSGRADE:
            quote = _crossgrade_quote(subscription, offer, now)
            effect = _effect_crossgrade(subscription, quote) if quote is not None else None
        else:
            effect = _effect_trial(subscription, offer, now)
        if effect is not None:
            effect["headline"] = offer.headline
            found.append(EligibleOffer(offer=offer, effect=effect, quote=quote))
    return found


def offer_present(*, survey: ExitSurvey, now: datetime) -> list[OfferPresentation]:
    """Record the offers that fit as shown in this survey (once per survey and offer: showing the page again
    keeps what was shown), with the revenue at risk and the priced effect. Returns them best first."""
    eligible = offers_eligible(survey=survey, now=now)
    if not eligible:
        return []
    risk = revenue_at_risk(survey=survey)
    currency = survey.subscription.price.currency
    shown = []
    with transaction.atomic():
        existing = {p.offer_id: p for p in survey.presentations.select_for_update()}
        for item in eligible:
            if item.offer.pk in existing:
                shown.append(existing[item.offer.pk])
                continue
            quote = item.quote
            if quote is not None:
                quote.save(force_insert=True)
                item.effect["quote"] = quote.pk
            try:
                with transaction.atomic():
                    presentation = OfferPresentation.objects.create(
                        survey=survey, offer=item.offer, customer_id=survey.customer_id, currency=currency,
                        revenue_at_risk=risk, effect=item.effect, quote=quote, shown_at=now)
            except IntegrityError:  # shown by a concurrent request in the meantime
                presentation = OfferPresentation.objects.get(survey=survey, offer=item.offer)
            shown.append(presentation)
    return shown


# --- accept and decline --------------------------------------------------------------------------


def _lock_presentation(presentation_id: int):
    from billing.services.plan_changes import _lock

    presentation = OfferPresentation.objects.select_related("survey").get(pk=presentation_id)
    customer, subscription, _none = _lock(presentation.customer_id, presentation.survey.subscription_id)
    presentation = (OfferPresentation.objects.select_for_update(of=("self",))
                    .select_related("offer__target_plan", "survey__reason").get(pk=presentation_id))
    return customer, subscription, presentation


def offer_accept(*, presentation: OfferPresentation, actor: AbstractBaseUser | None,
                 now: datetime) -> OfferPresentation:
    """Apply the offer at once, exactly as shown, and audit it. Idempotent: a double click or a second thread finds
    it accepted (under the customer → subscription locks) and returns it unchanged. Refused with a reason when it
    no longer holds (declined, another offer taken, the subscription changed, the price shown moved)."""
    with transaction.atomic():
        customer, subscription, presentation = _lock_presentation(presentation.pk)
        if presentation.status == OfferPresentation.Status.ACCEPTED:
            return presentation
        if presentation.status == OfferPresentation.Status.DECLINED:
            raise ChangeConflict("offer_declined", _("You declined this offer; start again to see the offers."))
        survey = presentation.survey
        if survey.presentations.filter(status=OfferPresentation.Status.ACCEPTED).exists():
            raise ChangeConflict("offer_already_taken", _("You already accepted another offer."))
        if survey.plan_change_id is not None:
            raise ChangeConflict("already_left", _("Your downgrade or cancellation is already under way."))
        offer = presentation.offer
        last = _last_accepted(customer.pk)
        if last is not None and last > now - timedelta(days=offer.cooldown_days):
            raise ChangeRefused("offer_cooldown", _("This offer is not available: you accepted an offer recently."))
        if subscription.status != Subscription.Status.ACTIVE or subscription.is_paused_at(now):
            raise ChangeRefused("subscription_not_active", _("This offer cannot be applied to this subscription "
                                                             "any more."))
        if PlanChange.objects.filter(subscription=subscription,
                                     status__in=(PlanChange.Status.SCHEDULED, *PlanChange.IN_FLIGHT)).exists():
            raise ChangeConflict("change_scheduled", _("A plan change is scheduled or under way; withdraw it first."))
        effect = presentation.effect
        before = subscription_snapshot(subscription)
        message = ""
        if offer.kind == RetentionOffer.Kind.DISCOUNT and offer.amount_off is not None:
            _still_same(effect, _effect_discount(subscription, offer))
            RecurringCredit.objects.create(subscription=subscription, currency=offer.currency,
                                           amount=offer.amount_off, periods=offer.periods,
                                           periods_left=offer.periods, presentation=presentation, created_at=now)
            subscription.version += 1
            subscription.save()
            message = f"{effect['amount_off']} {effect['currency']} off each of the next {offer.periods} renewal " \
                      f"invoice(s) (at most their total): {effect['pay']} instead of {effect['instead_of']}"
        elif offer.kind == RetentionOffer.Kind.DISCOUNT:
            _still_same(effect, _effect_discount(subscription, offer))
            subscription.next_discount_percent = offer.percent_off
            subscription.next_discount_periods = offer.periods
            subscription.version += 1
            subscription.save()
            message = f"{offer.percent_off} % off the next {offer.periods} renewal(s): {effect['pay']} instead of " \
                      f"{effect['instead_of']} {effect['currency']}"
        elif offer.kind == RetentionOffer.Kind.PAUSE:
            _still_same(effect, _effect_pause(subscription, offer))
            subscription.pause_starts_at = subscription.current_period_end
            subscription.paused_until = _pause_end(subscription, offer.periods)
            subscription.version += 1
            subscription.save()
            entitlements_sync(customer=customer)  # frozen from the pause's start (entitlements.selectors)
            message = f"Paused from {subscription.pause_starts_at.isoformat()} until " \
                      f"{subscription.paused_until.isoformat()}"
        elif offer.kind == RetentionOffer.Kind.CROSSGRADE:
            change = _accept_crossgrade(presentation=presentation, subscription=subscription, actor=actor, now=now)
            survey.plan_change = change
            survey.save(update_fields=["plan_change"])
            message = f"Moves to {effect['plan']} on {change.effective_at.isoformat()} (plan change {change.pk})"
        else:
            trial = trial_start(subscription=subscription, plan=offer.target_plan, days=offer.trial_days,
                                       source="offer", actor=actor, now=now, offer_presentation=presentation)
            message = f"Trial of {offer.target_plan} ({trial.pk})"
            subscription.refresh_from_db()
        presentation.status = OfferPresentation.Status.ACCEPTED
        presentation.decided_at = now
        presentation.decided_by = actor if actor is not None and actor.is_authenticated else None
        presentation.save(update_fields=["status", "decided_at", "decided_by", "quote"])
        audit_event_record(actor=actor, action="retention.offer_accepted", target=presentation, now=now,
                           customer=customer, reason_code=survey.reason.code, before=before,
                           after={**subscription_snapshot(subscription), "offer": offer.name, "kind": offer.kind,
                                  "effect": effect}, message=message)
    return presentation


def _still_same(shown: dict[str, Any], now_effect: dict[str, Any] | None) -> None:
    """The effect shown must still be what happens: the same amounts, or a clear refusal."""
    if now_effect is None:
        raise ChangeRefused("offer_unavailable", _("This offer no longer applies to your subscription."))
    keys = ("pay", "instead_of", "starts_at", "resumes_at", "then_pay", "credit_per_period")
    if any(shown.get(key) != now_effect.get(key) for key in keys):
        raise ChangeConflict("offer_changed", _("Your prices changed since this offer was shown; start again to "
                                                "see the offer as it stands."))


def _accept_crossgrade(*, presentation: OfferPresentation, subscription: Subscription,
                       actor: AbstractBaseUser | None, now: datetime) -> PlanChange:
    """Accept the quote that was shown; if it has expired, a fresh quote with the very same amounts is accepted
    instead (anything else is refused: the customer sees the new amounts first)."""
    from billing.services.plan_changes import quote_accept

    quote = presentation.quote
    if quote is None:
        raise ChangeRefused("offer_unavailable", _("This offer no longer applies to your subscription."))
    if now >= quote.expires_at or quote.subscription_version != subscription.version \
            or quote.status != Quote.Status.OPEN:
        fresh = _crossgrade_quote(subscription, presentation.offer, now)
        effect = _effect_crossgrade(subscription, fresh) if fresh is not None else None
        _same = effect is not None and all(effect[key] == presentation.effect.get(key)
                                           for key in ("amount_due", "pay", "instead_of", "price_id", "quantity"))
        if not _same:
            raise ChangeConflict("offer_changed", _("Your prices changed since this offer was shown; start again to "
                                                    "see the offer as it stands."))
        fresh.save(force_insert=True)
        quote = presentation.quote = fresh
    change = quote_accept(quote=quote, actor=actor, now=now)
    if change.status not in (PlanChange.Status.SCHEDULED, PlanChange.Status.APPLIED,
                             PlanChange.Status.PENDING_APPROVAL):
        raise ChangeRefused("offer_unavailable", _("The cheaper plan could not be set up: %(reason)s")
                            % {"reason": change.failure_message or change.get_status_display()})
    return change


def offers_decline(*, survey: ExitSurvey, actor: AbstractBaseUser | None, now: datetime) -> int:
    """"No thanks": every offer still shown in this survey is declined (audited once per offer). Returns how many."""
    with transaction.atomic():
        shown = list(survey.presentations.select_for_update().filter(status=OfferPresentation.Status.SHOWN)
                     .select_related("offer").order_by("pk"))
        for presentation in shown:
            presentation.status = OfferPresentation.Status.DECLINED
            presentation.decided_at = now
            presentation.decided_by = actor if actor is not None and actor.is_authenticated else None
            presentation.save(update_fields=["status", "decided_at", "decided_by"])
            audit_event_record(actor=actor, action="retention.offer_declined", target=presentation, now=now,
                               customer=survey.customer, reason_code=survey.reason.code,
                               message=f"Declined {presentation.offer.name}")
    return len(shown)
