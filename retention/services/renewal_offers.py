"""Renewal-window offers: switching (a stored quote for the existing review and confirm), "Not now", the email.

Accepting is the existing quote acceptance (billing.services.plan_changes.quote_accept): the quote carries the
offer's first-period discount, so the amount charged is the amount shown, and applying it leaves the discount no
periods (the next renewal bills list price).
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.urls import reverse

from billing.errors import ChangeRefused
from billing.models import Quote, Subscription
from billing.money import format_amount
from billing.services.audit import audit_event_record
from billing.services.notifications import absolute_url, notification_queue
from billing.services.quotes import quote_create
from retention.models import RenewalOfferDismissal, RenewalOfferQuote
from retention.selectors.renewal_offers import (
    RenewalOfferView,
    renewal_offer_email_candidates,
    renewal_offer_get,
    renewal_offer_reason_text,
    renewal_offers_active,
)

logger = logging.getLogger(__name__)


def _refusal(code: str, subscription: Subscription) -> ChangeRefused:
    from retention.selectors.renewal_offers import renewal_offer_for

    return ChangeRefused(code if code != "no_offer" else "no_renewal_offer",
                         renewal_offer_reason_text(code, offer=renewal_offer_for(subscription=subscription)))


def renewal_offer_quote_create(*, subscription: Subscription, actor: AbstractBaseUser | None,
                               now: datetime) -> Quote:
    """The customer chose to switch: price the offer again at `now` and store it as a quote (reviewed and confirmed
    like any other). Refused, with the reason, when the subscription no longer sees the offer."""
    view, reason = renewal_offer_get(subscription=subscription, now=now)
    if view is None:
        raise _refusal(reason, subscription)
    quote = quote_create(subscription=subscription, to_price=view.target_price, quantity=subscription.quantity,
                         now=now, actor=actor, target_discount_percent=view.discount_percent)
    RenewalOfferQuote.objects.create(offer=view.offer, quote=quote, subscription=subscription,
                                     period_end=view.renews_at, created_at=now)
    return quote


def renewal_offer_dismiss(*, subscription: Subscription, actor: AbstractBaseUser | None,
                          now: datetime) -> RenewalOfferDismissal:
    """"Not now": hide the offer for this subscription until its renewal. Twice (a double click) is once."""
    from retention.selectors.renewal_offers import renewal_offer_for

    period_end = subscription.current_period_end
    existing = RenewalOfferDismissal.objects.filter(subscription=subscription, period_end=period_end).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            dismissal = RenewalOfferDismissal.objects.create(
                subscription=subscription, period_end=period_end, offer=renewal_offer_for(subscription=subscription),
                dismissed_by=actor if actor is not None and actor.is_authenticated else None, dismissed_at=now)
            audit_event_record(actor=actor, action="renewal_offer.dismissed", target=subscription, now=now,
                               customer=subscription.customer, reason_code="not_now",
                               after={"period_end": period_end.isoformat(),
                                      "offer_id": dismissal.offer_id},
                               message=f"Renewal offer hidden until the renewal on {period_end:%Y-%m-%d}")
    except IntegrityError:  # the other click won: its row stands for both
        return RenewalOfferDismissal.objects.get(subscription=subscription, period_end=period_end)
    return dismissal


def _email_key(subscription: Subscription) -> str:
    return f"renewal-offer-{subscription.pk}-{int(subscription.current_period_end.timestamp())}"


def _email_context(view: RenewalOfferView) -> dict:
    sub, cur = view.subscription, view.currency
    headline = view.headline_saving
    return {
        "plan": str(sub.price.plan), "product": sub.price.plan.product.name, "quantity": sub.quantity,
        "currency": cur, "timezone": sub.customer.timezone, "interval": view.target_price.interval,
        "headline": view.offer.headline,
        "renews_at": view.renews_at.isoformat(),
        "saving": format_amount(view.gross.saving, cur), "saving_percent": str(view.gross.saving_percent),
        "period_amount": format_amount(view.gross.period_amount, cur),
        "months_total": format_amount(view.gross.months_total, cur),
        "discount_percent": f"{view.discount_percent.normalize():f}" if view.discount_percent else "",
        "first_period_amount": format_amount(headline.period_amount, cur),
        "first_saving": format_amount(headline.saving, cur), "first_saving_percent": str(headline.saving_percent),
        "tax_included": view.quote.tax_rate is not None,
        "overview_url": absolute_url(reverse("portal:overview", args=[sub.customer_id]))
        + f"#renewal-offer-{sub.pk}",
    }


def renewal_offer_emails_queue(*, now: datetime) -> int:
    """Beat: the renewal-offer email for every subscription a few days into its window, exactly once per
    subscription and period (the outbox key), however often or in how many workers this runs. Returns how many
    emails this call queued."""
    offers = [offer for offer in renewal_offers_active() if offer.send_email]
    if not offers:
        return 0
    from billing.models import Notification

    queued = 0
    for subscription in renewal_offer_email_candidates(now=now, offers=offers).iterator(chunk_size=500):
        key = _email_key(subscription)
        if Notification.objects.filter(key=key).exists():
            continue  # sent (or queued) for this period already: not priced again
        try:
            queued += _email_one(subscription=subscription, key=key, offers=offers, now=now)
        except Exception:  # one subscription's problem must not stop the others; the next run tries again
            logger.exception("renewal offer email for subscription %s failed", subscription.pk)
    return queued


def _email_one(*, subscription: Subscription, key: str, offers, now: datetime) -> int:
    view, _reason = renewal_offer_get(subscription=subscription, now=now, offers=offers)
    if view is None or not view.offer.send_email:
        return 0
    days_in = (now - view.window_opens_at).days
    if days_in < view.offer.email_after_days:
        return 0  # this offer's window opens later than the longest one's
    with transaction.atomic():
        notification = notification_queue(customer=subscription.customer, kind="renewal_offer", key=key,
                                          context=_email_context(view), now=now)
        if notification is None:
            return 0
        audit_event_record(actor=None, action="renewal_offer.emailed", target=subscription, now=now,
                           customer=subscription.customer, reason_code="renewal_window",
                           after={"offer_id": view.offer.pk, "notification_id": notification.pk,
                                  "saving": format_amount(view.gross.saving, view.currency)},
                           message=f"Renewal offer '{view.offer.name}' emailed")
    return 1
