"""Win-back: enrol customers when a cancellation or downgrade takes effect, send each campaign step's email once,
stop when they come back or opt out, and let them accept a step's offer from a signed one-click link.

Amounts shown or charged come from the billing engine (`billing.proration` through `billing.selectors.price_item`,
the same code that issues renewal invoices); nothing here computes a price.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.db import connection, transaction
from django.urls import get_script_prefix, reverse
from django.utils.translation import gettext as _

from billing import proration
from billing.errors import BillingError
from billing.models import Customer, Direction, Notification, PlanChange, Price, Subscription
from billing.selectors import (
    billing_date,
    customer_balance,
    payment_method_default,
    price_item,
    subscription_next_renewal,
    tax_decision_for,
    tax_for_price,
)
from billing.services.audit import audit_event_record, subscription_snapshot
from billing.services.notifications import absolute_url, notifications_queue_many
from retention.models import EmailOptOut, WinBackEnrolment, WinBackSend, WinBackStep

logger = logging.getLogger(__name__)

OFFER_SALT = "retention.winback.offer"
UNSUBSCRIBE_SALT = "retention.winback.unsubscribe"
RETURNING = (Direction.UPGRADE,)
MIN_STEP_GAP = timedelta(days=1)


class WinBackLinkError(BillingError):
    status = 400


# --- enrolment and conversion (called from billing's _apply, inside its transaction) ----------------------


def winback_plan_change_applied(*, change: PlanChange, now: datetime) -> None:
    """A plan change was applied (locks held): a cancellation or downgrade enrols the customer in the matching
    active campaigns; an upgrade brings them back (their active enrolments convert)."""
    try:
        with transaction.atomic():  # a savepoint: a win-back failure never undoes the plan change
            if change.direction == Direction.CANCEL or (change.direction == Direction.DOWNGRADE
                                                        and not _interval_switch(change)):
                winback_enrol(change=change, now=now)
            elif change.direction in RETURNING:
                winback_customer_returned(customer_id=change.customer_id, now=now, plan_change=change)
    except Exception:
        logger.exception("win-back enrolment for plan change %s failed", change.pk)


def _interval_switch(change: PlanChange) -> bool:
    """Same plan, no fewer seats, another billing interval (e.g. monthly → annual at a saving, the renewal-window
    offer): 'downgrade' by value per day, but nobody is leaving."""
    return (change.from_price_id is not None and change.to_price_id is not None
            and change.from_price.plan_id == change.to_price.plan_id and change.to_quantity >= change.from_quantity)


def winback_enrol(*, change: PlanChange, now: datetime) -> int:
    """Enrol the customer of an applied cancellation or downgrade. One insert; a change applied twice (it cannot
    be, but a retried hook might run twice) enrols once (unique per campaign and change)."""
    triggered_at = min(change.effective_at, now)
    first_steps = {step.campaign_id: step for step in WinBackStep.objects.filter(
        campaign__is_active=True, campaign__trigger=change.direction).order_by("campaign_id", "-position")}
    # ordered by -position, so the dict keeps each campaign's first step (the last one written)
    rows = [WinBackEnrolment(customer_id=change.customer_id, campaign_id=campaign_id, plan_change=change,
                             subscription_id=change.subscription_id, triggered_at=triggered_at,
                             next_position=step.position, next_send_at=triggered_at + timedelta(days=step.delay_days),
                             created_at=now)
            for campaign_id, step in first_steps.items()]
    WinBackEnrolment.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def _monthly(*, price: Price, quantity: int, discount_percent: Decimal) -> Decimal:
    """What a price costs per month (normalised, tax excluded): the engine's period amount over its months."""
    amount = proration.period_amount(price_item(price=price, quantity=quantity, discount_percent=discount_percent),
                                     price.currency)
    return (amount / proration.INTERVAL_MONTHS[price.interval]).quantize(Decimal("0.0001"))


def winback_customer_returned(*, customer_id: int, now: datetime, plan_change: PlanChange | None = None) -> int:
    """The customer came back (an upgrade): their active enrolments in campaigns that stop on return convert,
    with what they pay more per month. Returns how many converted."""
    won = None
    currency = ""
    if plan_change is not None and plan_change.to_price_id and plan_change.from_price_id:
        discount = plan_change.subscription.discount_percent
        won = (_monthly(price=plan_change.to_price, quantity=plan_change.to_quantity, discount_percent=discount)
               - _monthly(price=plan_change.from_price, quantity=plan_change.from_quantity, discount_percent=discount))
        currency = plan_change.currency
    return WinBackEnrolment.objects.filter(
        customer_id=customer_id, status=WinBackEnrolment.Status.ACTIVE, campaign__stop_on_return=True,
    ).update(status=WinBackEnrolment.Status.CONVERTED, converted_at=now, converted_by_change=plan_change,
             next_send_at=None, revenue_won_back=won, currency=currency)


def winback_opt_out(*, customer_id: int, source: str, now: datetime) -> bool:
    """No more win-back email for this customer (billing emails continue). Idempotent: returns whether this call
    opted them out."""
    with transaction.atomic():
        customer = Customer.objects.select_for_update(no_key=True).get(pk=customer_id)
        _opt_out, created = EmailOptOut.objects.get_or_create(customer=customer,
                                                               defaults={"source": source, "created_at": now})
        if not created:
            return False
        stopped = WinBackEnrolment.objects.filter(customer=customer, status=WinBackEnrolment.Status.ACTIVE).update(
            status=WinBackEnrolment.Status.STOPPED, stop_reason="opted_out", next_send_at=None)
        audit_event_record(actor=None, action="winback.opted_out", target=customer, now=now, customer=customer,
                           reason_code=f"unsubscribe_{source}", after={"enrolments_stopped": stopped},
                           message="Opted out of win-back emails")
    return True


# --- links ----------------------------------------------------------------------------------------------


def _link(name: str, token: str) -> str:
    """reverse() once per link kind, not once per email (the sweep writes thousands)."""
    prefix, suffix = _link_parts(name, settings.SITE_URL, get_script_prefix())
    return f"{prefix}{token}{suffix}"


@functools.lru_cache(maxsize=16)
def _link_parts(name: str, _site_url: str, _script_prefix: str) -> tuple[str, str]:
    marker = "TOKEN0MARKER"
    prefix, _marker, suffix = absolute_url(reverse(name, args=[marker])).partition(marker)
    return prefix, suffix


def winback_offer_url(*, enrolment_id: int, step_id: int) -> str:
    token = signing.TimestampSigner(salt=OFFER_SALT).sign(f"{enrolment_id}.{step_id}")
    return _link("portal:winback-offer", token)


def winback_unsubscribe_url(*, customer_id: int) -> str:
    token = signing.TimestampSigner(salt=UNSUBSCRIBE_SALT).sign(str(customer_id))
    return _link("portal:winback-unsubscribe", token)


def _unsign(token: str, *, salt: str, max_age_days: int) -> str:
    try:
        return signing.TimestampSigner(salt=salt).unsign(token, max_age=timedelta(days=max_age_days))
    except signing.SignatureExpired:
        raise WinBackLinkError("link_expired", _("This link has expired. Sign in to see your account's current "
                                                 "offers.")) from None
    except signing.BadSignature:
        raise WinBackLinkError("link_invalid", _("This link is not valid: it may have been cut off or changed. "
                                                 "Open it again from the email.")) from None


def winback_offer_from_token(*, token: str) -> tuple[WinBackEnrolment, WinBackStep]:
    value = _unsign(token, salt=OFFER_SALT, max_age_days=settings.WINBACK_OFFER_LINK_DAYS)
    enrolment_id, _dot, step_id = value.partition(".")
    step = WinBackStep.objects.select_related("offer").filter(pk=int(step_id)).first()
    enrolment = (WinBackEnrolment.objects.select_related("customer", "campaign", "subscription__price__plan",
                                                         "plan_change__from_price__plan")
                 .filter(pk=int(enrolment_id)).first())
    if step is None or enrolment is None or step.campaign_id != enrolment.campaign_id or step.offer is None:
        raise WinBackLinkError("offer_gone", _("This offer no longer exists."))
    return enrolment, step


def winback_customer_from_unsubscribe_token(*, token: str) -> Customer:
    value = _unsign(token, salt=UNSUBSCRIBE_SALT, max_age_days=settings.WINBACK_UNSUBSCRIBE_LINK_DAYS)
    customer = Customer.objects.filter(pk=int(value)).first()
    if customer is None:
        raise WinBackLinkError("link_invalid", _("This link is not valid any more."))
    return customer


# --- the offer: its priced effect and accepting it ----------------------------------------------------------


@dataclass(frozen=True)
class OfferEffect:
    """What accepting changes, in amounts from the billing engine.

    `restart`: the cancelled subscription starts again now at its previous plan; `due_now` is charged today for
    the first period (with the discount), `regular_total` is what a period costs without it.
    Otherwise: the live subscription's next `periods` renewals from `renews_at` cost `discounted_total` instead of
    `regular_total`."""

    restart: bool
    currency: str
    price: Price
    quantity: int
    percent_off: Decimal
    periods: int | None
    renews_at: datetime | None
    regular_total: Decimal
    discounted_total: Decimal
    due_now: Decimal
    balance_applied: Decimal

    @property
    def rate(self) -> Decimal:
        return self.percent_off / 100

    @property
    def saving(self) -> Decimal:
        return self.regular_total - self.discounted_total


def _restart_terms(enrolment: WinBackEnrolment) -> tuple[Price, int]:
    change = enrolment.plan_change
    if change is not None and change.from_price_id:
        return change.from_price, change.from_quantity
    return enrolment.subscription.price, enrolment.subscription.quantity


def _first_period_totals(*, customer: Customer, price: Price, quantity: int, discount: Decimal, now: datetime,
                         balance: Decimal) -> proration.Totals:
    """A new period's totals exactly as billing.services.invoices.invoice_for_renewal will invoice them."""
    decision = tax_decision_for(customer=customer, on=billing_date(customer=customer, moment=now))
    amount = proration.period_amount(price_item(price=price, quantity=quantity, discount_percent=discount),
                                     price.currency)
    return proration.totals_for(amount, tax_for_price(decision=decision, price=price), balance, price.currency)


def winback_offer_effect(*, enrolment: WinBackEnrolment, step: WinBackStep, now: datetime) -> OfferEffect:
    offer = step.offer
    percent = offer.percent_off
    subscription = enrolment.subscription
    if subscription is None:
        raise BillingError("offer_unavailable", _("The subscription this offer was for no longer exists."))
    customer = enrolment.customer
    if subscription.status == Subscription.Status.CANCELLED:
        price, quantity = _restart_terms(enrolment)
        balance = max(customer_balance(customer=customer, currency=price.currency), Decimal(0))
        regular = _first_period_totals(customer=customer, price=price, quantity=quantity, discount=Decimal(0),
                                       now=now, balance=Decimal(0))
        discounted = _first_period_totals(customer=customer, price=price, quantity=quantity, discount=percent,
                                          now=now, balance=balance)
        return OfferEffect(restart=True, currency=price.currency, price=price, quantity=quantity, percent_off=percent,
                           periods=offer.periods, renews_at=None, regular_total=regular.total,
                           discounted_total=discounted.total, due_now=discounted.amount_due,
                           balance_applied=discounted.balance_applied)
    regular = subscription_next_renewal(subscription=subscription)
    discounted_subscription = copy.copy(subscription)
    discounted_subscription.discount_percent = percent
    discounted = subscription_next_renewal(subscription=discounted_subscription)
    return OfferEffect(restart=False, currency=regular.currency, price=regular.price, quantity=regular.quantity,
                       percent_off=percent, periods=offer.periods, renews_at=regular.at,
                       regular_total=regular.total, discounted_total=discounted.total, due_now=Decimal(0),
                       balance_applied=Decimal(0))


def winback_offer_accept(*, enrolment_id: int, step_id: int, actor: AbstractBaseUser | None,
                         now: datetime) -> WinBackEnrolment:
    """Apply the step's discount once. A cancelled subscription starts again now at its previous plan with the
    discount (the first period invoiced and collected with the saved payment method); a live one gets the
    discount from its next renewal for the offer's periods. Accepting again (double click, second tab, retry)
    returns the enrolment as it is and changes nothing."""
    enrolment = WinBackEnrolment.objects.get(pk=enrolment_id)
    step = WinBackStep.objects.select_related("offer").get(pk=step_id, campaign_id=enrolment.campaign_id)
    offer = step.offer
    if offer is None or offer.kind != "discount" or offer.percent_off is None:
        raise BillingError("offer_unavailable", _("This email has no offer to accept."))
    from billing.services.invoices import invoice_for_renewal
    from entitlements.services import entitlements_sync

    with transaction.atomic():
        customer = Customer.objects.select_for_update(no_key=True).get(pk=enrolment.customer_id)
        subscription = None
        if enrolment.subscription_id is not None:
            subscription = (Subscription.objects.select_for_update(of=("self",), no_key=True)
                            .select_related("price__plan").get(pk=enrolment.subscription_id))
        enrolment = (WinBackEnrolment.objects.select_for_update(of=("self",))
                     .select_related("plan_change__from_price__plan", "customer").get(pk=enrolment_id))
        if enrolment.offer_accepted_at is not None:
            return enrolment
        if enrolment.status == WinBackEnrolment.Status.CONVERTED:
            raise BillingError("offer_unavailable", _("You are already back with us, so this offer no longer "
                                                      "applies."))
        if not offer.is_active:
            raise BillingError("offer_unavailable", _("This offer has ended."))
        if subscription is None:
            raise BillingError("offer_unavailable", _("The subscription this offer was for no longer exists."))
        enrolment.subscription = subscription
        periods = offer.periods
        if subscription.status == Subscription.Status.CANCELLED:
            price, quantity = _restart_terms(enrolment)
            if not price.is_active:
                raise BillingError("offer_unavailable", _("Your previous plan is no longer sold; choose a plan on "
                                                          "the plans page instead."))
            if Subscription.objects.filter(customer=customer, product_id=price.plan.product_id).exclude(
                    status=Subscription.Status.CANCELLED).exists():
                raise BillingError("already_subscribed", _("You already subscribe to this product again."))
            if payment_method_default(customer=customer) is None:
                raise BillingError("no_payment_method", _("Add a payment method before coming back."))
            start = now.replace(microsecond=0)
            restarted = Subscription.objects.create(
                customer=customer, product_id=price.plan.product_id, price=price, quantity=quantity,
                discount_percent=offer.percent_off, discount_periods_left=None if periods is None else max(periods - 1, 0),
                status=Subscription.Status.ACTIVE, current_period_start=start,
                current_period_end=proration.add_interval(start, price.interval, ZoneInfo(customer.timezone)),
            )
            invoice_for_renewal(customer=customer, subscription=restarted, now=now)
            entitlements_sync(customer=customer)
            enrolment.converted_subscription = restarted
            enrolment.revenue_won_back = _monthly(price=price, quantity=quantity, discount_percent=offer.percent_off)
            enrolment.currency = price.currency
            audit_event_record(actor=actor, action="subscription.restarted", target=restarted, now=now,
                               customer=customer, reason_code="winback_offer", before=None,
                               after=subscription_snapshot(restarted),
                               message=f"Restarted through win-back offer '{offer.name}' ({step.campaign})")
        else:
            if subscription.next_discount_percent is not None:
                raise BillingError("discount_pending", _("A discount already starts at your next renewal; this "
                                                         "offer cannot be added to it."))
            before = subscription_snapshot(subscription)
            subscription.next_discount_percent = offer.percent_off
            subscription.next_discount_periods = periods
            subscription.save(update_fields=["next_discount_percent", "next_discount_periods", "updated_at"])
            enrolment.revenue_won_back = Decimal(0)
            enrolment.currency = subscription.price.currency
            audit_event_record(actor=actor, action="subscription.discount_scheduled", target=subscription, now=now,
                               customer=customer, reason_code="winback_offer", before=before,
                               after={**subscription_snapshot(subscription),
                                      "next_discount_percent": str(offer.percent_off), "next_discount_periods": periods},
                               message=f"Win-back offer '{offer.name}' from the next renewal ({step.campaign})")
        enrolment.offer_accepted_at = now
        enrolment.converted_step = step
        enrolment.status = WinBackEnrolment.Status.CONVERTED
        enrolment.converted_at = now
        enrolment.next_send_at = None
        enrolment.save()
        audit_event_record(actor=actor, action="winback.offer_accepted", target=enrolment, now=now, customer=customer,
                           reason_code="winback_offer",
                           after={"campaign": enrolment.campaign_id, "step": step.pk, "offer": offer.pk},
                           message=f"Accepted '{offer.headline}'")
    return enrolment


# --- the sweep ----------------------------------------------------------------------------------------------


def _email_context(*, enrolment: WinBackEnrolment, step: WinBackStep) -> dict:
    offer = step.offer
    context = {
        "customer_name": enrolment.customer.name,
        "trigger": enrolment.campaign.trigger,
        "subject": step.subject,
        "unsubscribe_url": winback_unsubscribe_url(customer_id=enrolment.customer_id),
        "comeback_url": absolute_url(reverse("portal:overview", args=[enrolment.customer_id])),
    }
    if offer is not None:
        context.update(offer_url=winback_offer_url(enrolment_id=enrolment.pk, step_id=step.pk),
                       offer_headline=offer.headline, percent_off=str(offer.percent_off), periods=offer.periods)
    return context


def _send_chunk(*, rows: list[WinBackEnrolment], steps: dict[tuple[int, int], WinBackStep],
                opted_out: set[int], now: datetime) -> tuple[int, int, list[int]]:
    """Queue one chunk's emails and advance its enrolments (in the caller's transaction, rows locked)."""
    notifications: list[Notification] = []
    sends: list[WinBackSend] = []
    stopped = 0
    for enrolment in rows:
        step = steps.get((enrolment.campaign_id, enrolment.next_position))
        campaign = enrolment.campaign
        if enrolment.customer_id in opted_out:
            enrolment.status, enrolment.stop_reason, enrolment.next_send_at = "stopped", "opted_out", None
            stopped += 1
            continue
        if now > enrolment.triggered_at + timedelta(days=campaign.max_age_days):
            enrolment.status, enrolment.stop_reason, enrolment.next_send_at = "stopped", "max_age", None
            stopped += 1
            continue
        if step is None:  # the campaign's steps were edited: nothing left to send
            enrolment.status, enrolment.next_send_at = WinBackEnrolment.Status.FINISHED, None
            continue
        key = f"winback-{enrolment.pk}-step-{step.pk}"
        notifications.append(Notification(
            customer_id=enrolment.customer_id, kind=step.email_kind, key=key, to_email=enrolment.customer.email,
            language=enrolment.customer.language or "en", context=_email_context(enrolment=enrolment, step=step),
            created_at=now))
        sends.append(WinBackSend(enrolment=enrolment, step=step, created_at=now))
        following = steps.get((enrolment.campaign_id, enrolment.next_position + 1))
        if following is None:
            enrolment.status, enrolment.next_send_at = WinBackEnrolment.Status.FINISHED, None
        else:
            enrolment.next_position = following.position
            # At least a day between two emails, even when a late sweep finds both steps due.
            enrolment.next_send_at = max(enrolment.triggered_at + timedelta(days=following.delay_days),
                                         now + MIN_STEP_GAP)
    ids_by_key = notifications_queue_many(notifications=notifications)
    for send, notification in zip(sends, notifications, strict=True):
        send.notification_id = ids_by_key.get(notification.key)
    WinBackSend.objects.bulk_create(sends, ignore_conflicts=True)
    _advance(rows)
    return len(sends), stopped, list(ids_by_key.values())


def _advance(rows: list[WinBackEnrolment]) -> None:
    """Write the chunk's new status and next step in one statement (bulk_update's CASE per row is far slower)."""
    if connection.vendor != "postgresql":
        WinBackEnrolment.objects.bulk_update(rows, ["status", "stop_reason", "next_position", "next_send_at"])
        return
    table = WinBackEnrolment._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{table}" AS e SET status = v.status, stop_reason = v.stop_reason, '  # noqa: S608 - our table
            "next_position = v.next_position, next_send_at = v.next_send_at "
            "FROM unnest(%s::bigint[], %s::varchar[], %s::varchar[], %s::smallint[], %s::timestamptz[]) "
            "AS v(id, status, stop_reason, next_position, next_send_at) WHERE e.id = v.id",
            [[r.pk for r in rows], [r.status for r in rows], [r.stop_reason for r in rows],
             [r.next_position for r in rows], [r.next_send_at for r in rows]])


def winback_sweep(*, now: datetime, chunk_size: int = 1000, max_chunks: int | None = None) -> dict[str, int]:
    """Send every due step (beat). Chunks of due enrolments are locked with SKIP LOCKED, so two sweeps at once
    share the work instead of doubling it; each email's unique key makes a retried chunk queue nothing twice."""
    counts = {"queued": 0, "stopped": 0, "chunks": 0}
    while max_chunks is None or counts["chunks"] < max_chunks:
        with transaction.atomic():
            rows = list(WinBackEnrolment.objects.select_for_update(of=("self",), skip_locked=True)
                        .filter(status=WinBackEnrolment.Status.ACTIVE, next_send_at__lte=now,
                                campaign__is_active=True)
                        .select_related("customer", "campaign").order_by("next_send_at", "pk")[:chunk_size])
            if not rows:
                break
            campaign_ids = {row.campaign_id for row in rows}
            steps = {(step.campaign_id, step.position): step
                     for step in WinBackStep.objects.filter(campaign_id__in=campaign_ids).select_related("offer")}
            opted_out = set(EmailOptOut.objects.filter(customer_id__in={row.customer_id for row in rows})
                            .values_list("customer_id", flat=True))
            queued, stopped, ids = _send_chunk(rows=rows, steps=steps, opted_out=opted_out, now=now)
            transaction.on_commit(lambda ids=ids: _enqueue(ids), robust=True)
        counts["queued"] += queued
        counts["stopped"] += stopped
        counts["chunks"] += 1
        if len(rows) < chunk_size:
            break
    return counts


SEND_BATCH = 50


def _enqueue(notification_ids: list[int]) -> None:
    """Hand the emails to the workers in batches (one broker message per SEND_BATCH emails)."""
    from retention.tasks import send_winback_emails

    for start in range(0, len(notification_ids), SEND_BATCH):
        send_winback_emails.delay(notification_ids[start:start + SEND_BATCH])
