"""Which renewal offer a monthly subscription sees now, and what it saves, priced by the quote service.

Every amount comes from the proration engine's own functions (billing.proration) and the quote (quote_price): the
saving per year is 12 × the monthly period amount − the annual period amount, net and as the customer pays (with
tax as the quote computes it); the charge today is the quote's (the full first annual period, less the unused
monthly time credited, anchor reset: PRORATION.md). Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Q, QuerySet
from django.utils.translation import gettext_lazy as _

from billing import proration
from billing.errors import ChangeRefused
from billing.models import PlanChange, Price, Quote, Subscription, Timing
from billing.selectors import price_get, price_item, tax_for_price
from billing.services.quotes import PricingContext, pricing_context, quote_price
from retention.models import RenewalOffer, RenewalOfferDismissal

# Why a subscription sees no offer (the API's `reason`); ChangeRefused codes of the quote pass through as they are.
REASONS = {
    "no_offer": _("No renewal offer applies to this subscription."),
    "not_active": _("Only active subscriptions get renewal offers."),
    "past_due": _("A renewal invoice of this subscription is unpaid."),
    "not_monthly": _("Renewal offers are for monthly subscriptions."),
    "outside_window": _("The renewal is not close enough yet; the offer appears %(days)s days before it."),
    "dismissed": _("You chose 'Not now' for this renewal."),
    "change_scheduled": _("A plan change is already scheduled for this subscription."),
    "change_in_progress": _("Another plan change is waiting for its payment."),
    "needs_attention": _("This subscription's last renewal needs attention from our team."),
    "no_target_price": _("This plan is not sold with that billing interval in your currency."),
    "not_immediate": _("Switching the billing interval takes effect at the end of the period here."),
    "no_saving": _("The longer interval does not cost less than paying monthly."),
}


@dataclass(frozen=True)
class Figures:
    """One comparison: 12 months (or 3) at the monthly amount against one period of the longer interval."""

    months_total: Decimal  # months × the monthly period amount
    period_amount: Decimal  # one period of the target interval
    saving: Decimal
    saving_percent: Decimal  # one decimal, half up


@dataclass(frozen=True)
class RenewalOfferView:
    offer: RenewalOffer
    subscription: Subscription
    target_price: Price
    quote: Quote  # priced now (unsaved): what switching costs today; the portal stores a fresh one on "Switch"
    window_opens_at: datetime
    renews_at: datetime
    currency: str
    months: int  # monthly periods in one target period (12 for a year)
    monthly_net: Decimal
    monthly_gross: Decimal
    net: Figures  # list terms (the subscription's own discount applied), tax excluded
    gross: Figures  # as the customer pays: tax as the quote shows it (the same for tax-inclusive prices)
    discount_percent: Decimal | None  # the staff discount on the first target period, if it applies
    first_net: Figures | None  # the first target period at that discount
    first_gross: Figures | None

    @property
    def headline_saving(self) -> Figures:
        """What the card leads with: the first period's saving when discounted, else every period's."""
        return self.first_gross or self.gross


def _percent(part: Decimal, whole: Decimal) -> Decimal:
    return (part * 100 / whole).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def _figures(monthly: Decimal, months: int, period: Decimal) -> Figures:
    total = monthly * months
    return Figures(months_total=total, period_amount=period, saving=total - period,
                   saving_percent=_percent(total - period, total) if total else Decimal("0.0"))


def renewal_offer_for(*, subscription: Subscription, offers: list[RenewalOffer] | None = None) -> RenewalOffer | None:
    """The first active offer (by priority) that fits the subscription's product and plan."""
    if offers is None:
        offers = renewal_offers_active()
    plan = subscription.price.plan
    for offer in offers:
        product_ids = {p.pk for p in offer.products.all()}
        plan_ids = {p.pk for p in offer.plans.all()}
        if (not product_ids or plan.product_id in product_ids) and (not plan_ids or plan.pk in plan_ids):
            return offer
    return None


def renewal_offers_active() -> list[RenewalOffer]:
    return list(RenewalOffer.objects.filter(is_active=True).prefetch_related("products", "plans")
                .order_by("priority", "pk"))


def renewal_offer_get(*, subscription: Subscription, now: datetime, offers: list[RenewalOffer] | None = None,
                      context: PricingContext | None = None) -> tuple[RenewalOfferView | None, str]:
    """The renewal offer `subscription` sees at `now`, or None and the reason code (REASONS, or the quote's
    refusal code). Cheap checks first; only a subscription inside its window is priced."""
    now = now.replace(microsecond=0)
    offer = renewal_offer_for(subscription=subscription, offers=offers)
    if offer is None:
        return None, "no_offer"
    if subscription.status == Subscription.Status.PAST_DUE:
        return None, "past_due"
    if subscription.status != Subscription.Status.ACTIVE:
        return None, "not_active"
    if subscription.price.interval != "month":
        return None, "not_monthly"
    if subscription.needs_attention:
        return None, "needs_attention"
    renews_at = subscription.current_period_end
    opens_at = renews_at - timedelta(days=offer.window_days)
    if not (opens_at <= now < renews_at):
        return None, "outside_window"
    if RenewalOfferDismissal.objects.filter(subscription=subscription, period_end=renews_at).exists():
        return None, "dismissed"
    if context is None:
        context = pricing_context(subscription=subscription, now=now)
    if any(status == PlanChange.Status.SCHEDULED and sub_id == subscription.pk
           for _pk, status, sub_id in context.open_changes):
        return None, "change_scheduled"
    if any(status in PlanChange.IN_FLIGHT for _pk, status, _sub in context.open_changes):
        return None, "change_in_progress"
    currency = subscription.price.currency
    target_price = price_get(plan_id=subscription.price.plan_id, currency=currency, interval=offer.target_interval)
    if target_price is None:
        return None, "no_target_price"
    # The staff discount replaces the subscription's for the first period, so a subscription that already has one
    # (negotiated, or a retention offer's) keeps its own terms instead of losing them.
    has_discount = subscription.discount_percent != 0 or subscription.next_discount_percent is not None
    discount = offer.discount_percent if offer.discount_percent and not has_discount else None
    try:
        quote = quote_price(subscription=subscription, to_price=target_price, quantity=subscription.quantity,
                            now=now, context=context, target_discount_percent=discount)
    except ChangeRefused as refusal:
        return None, "not_immediate" if refusal.code == "discount_needs_immediate_change" else refusal.code
    if quote.timing != Timing.NOW:
        return None, "not_immediate"
    months = proration.INTERVAL_MONTHS[target_price.interval]
    monthly_tax = tax_for_price(decision=context.tax, price=subscription.price)
    target_tax = tax_for_price(decision=context.tax, price=target_price)

    def gross(amount: Decimal, tax) -> Decimal:
        return proration.totals_for(amount, tax, Decimal(0), currency).total

    monthly_net = proration.period_amount(price_item(
        price=subscription.price, quantity=subscription.quantity, discount_percent=subscription.discount_percent,
        contract=context.contract), currency)
    period_net = proration.period_amount(price_item(
        price=target_price, quantity=subscription.quantity, discount_percent=subscription.discount_percent,
        contract=context.contract), currency)
    monthly_gross = gross(monthly_net, monthly_tax)
    net = _figures(monthly_net, months, period_net)
    if net.saving <= 0 and discount is None:
        return None, "no_saving"
    first_net = first_gross = None
    if discount is not None:
        charge = next(line for line in quote.lines if line["kind"] == "charge")
        first_net = _figures(monthly_net, months, Decimal(charge["amount"]))
        first_gross = _figures(monthly_gross, months, gross(first_net.period_amount, target_tax))
        if first_net.saving <= 0:
            return None, "no_saving"
    return RenewalOfferView(
        offer=offer, subscription=subscription, target_price=target_price, quote=quote, window_opens_at=opens_at,
        renews_at=renews_at, currency=currency, months=months, monthly_net=monthly_net, monthly_gross=monthly_gross,
        net=net, gross=_figures(monthly_gross, months, gross(period_net, target_tax)), discount_percent=discount,
        first_net=first_net, first_gross=first_gross,
    ), ""


def renewal_offer_reason_text(code: str, *, offer: RenewalOffer | None = None) -> str:
    text = REASONS.get(code)
    if text is None:
        return str(_("Switching this subscription is not possible right now (%(code)s).") % {"code": code})
    if code == "outside_window":
        return str(text) % {"days": offer.window_days if offer else 14}
    return str(text)


def renewal_offers_for_customer(*, customer_id: int, now: datetime) -> dict[int, RenewalOfferView]:
    """The overview's cards: subscription id → the offer it sees now (only subscriptions in a window are priced)."""
    offers = renewal_offers_active()
    if not offers:
        return {}
    longest = max(offer.window_days for offer in offers)
    candidates = (Subscription.objects.filter(customer_id=customer_id, status=Subscription.Status.ACTIVE,
                                              price__interval="month", current_period_end__gt=now,
                                              current_period_end__lte=now + timedelta(days=longest))
                  .select_related("customer", "price__plan__product"))
    views = {}
    for subscription in candidates:
        view, _reason = renewal_offer_get(subscription=subscription, now=now, offers=offers)
        if view is not None:
            views[subscription.pk] = view
    return views


def renewal_offer_email_candidates(*, now: datetime, offers: list[RenewalOffer]) -> QuerySet[Subscription]:
    """Active monthly subscriptions whose reminder is due: at least `email_after_days` into the longest window and
    before the renewal (each is checked in full by renewal_offer_get before anything is sent)."""
    condition = Q()
    for offer in offers:
        if offer.send_email:
            condition |= Q(current_period_end__lte=now + timedelta(days=offer.window_days - offer.email_after_days))
    if not condition:
        return Subscription.objects.none()
    return (Subscription.objects.filter(condition, status=Subscription.Status.ACTIVE, price__interval="month",
                                        current_period_end__gt=now, needs_attention=False)
            .select_related("customer", "price__plan__product").order_by("pk"))
