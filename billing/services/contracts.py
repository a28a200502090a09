"""Enterprise contracts: the term and its commitments, and amendments drafted, previewed, submitted and applied.

Co-terming (docs/contracts.md): a contract's term is a whole number of the subscription's billing periods, so the
current period never runs past the term's end. An amendment effective at instant D is prorated by
billing.proration (shared/PRORATION.md) over the current period, exactly like a customer's change at D; its new
terms then renew with every period until the term ends.

Lock order (STYLE.md, extended): customer → subscription → contract → amendment → approval request → plan change.
The gateway is never called here: an applied amendment is invoiced and collected afterwards (collection.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from billing import proration
from billing.errors import ChangeConflict, ChangeRefused
from billing.models import (
    Amendment,
    Contract,
    ContractPrice,
    Customer,
    Direction,
    Interval,
    PlanChange,
    Price,
    Subscription,
    Timing,
)
from billing.money import format_amount, minor_unit
from billing.selectors import (
    billing_date,
    customer_balance,
    legal_entity_default,
    price_item,
    tax_decision_for,
    tax_for_price,
)
from billing.services.audit import audit_event_record
from billing.services.plan_changes import _apply, _lock
from billing.tax import missing_rate

logger = logging.getLogger(__name__)

MAX_TERM_PERIODS = 120  # ten years of monthly periods: far beyond any contract, keeps the boundary walk bounded


# --- the term ---------------------------------------------------------------------------------------------


def _boundaries(*, first: datetime, interval: str, tz: ZoneInfo, count: int) -> list[datetime]:
    """`first` and the next `count` period boundaries after it, as renewals chain them (add_interval)."""
    moments = [first]
    for _step in range(count):
        moments.append(proration.add_interval(moments[-1], interval, tz))
    return moments


def periods_between(*, start: datetime, end: datetime, interval: str, tz: ZoneInfo) -> int | None:
    """How many whole billing periods lead from `start` to `end` on the billing calendar; None if `end` is not
    a boundary of the chain that starts at `start`."""
    moment, periods = start, 0
    while moment < end and periods <= MAX_TERM_PERIODS:
        moment = proration.add_interval(moment, interval, tz)
        periods += 1
    return periods if moment == end else None


def contract_term_for(*, subscription: Subscription, start_on: date, periods: int) -> tuple[datetime, datetime]:
    """The term that starts at the subscription's period boundary on `start_on` (its billing calendar) and lasts
    `periods` billing periods. Terms start at the current period's start or a later boundary."""
    if periods < 1 or periods > MAX_TERM_PERIODS:
        raise ValidationError(f"A term lasts 1 to {MAX_TERM_PERIODS} billing periods.")
    tz = ZoneInfo(subscription.customer.timezone)
    interval = subscription.price.interval
    chain = [subscription.current_period_start,
             *_boundaries(first=subscription.current_period_end, interval=interval, tz=tz, count=MAX_TERM_PERIODS)]
    start = next((moment for moment in chain if moment.astimezone(tz).date() == start_on), None)
    if start is None:
        options = ", ".join(f"{moment.astimezone(tz):%Y-%m-%d}" for moment in chain[:4])
        raise ValidationError(f"The term must start where a billing period of the subscription starts (co-terming), "
                              f"e.g. {options} ({tz.key}).")
    end = _boundaries(first=start, interval=interval, tz=tz, count=periods)[-1]
    return start, end


def contract_snapshot(contract: Contract) -> dict[str, Any]:
    return {
        "number": contract.number, "term_start": contract.term_start.isoformat(),
        "term_end": contract.term_end.isoformat(), "billing_interval": contract.billing_interval,
        "committed_seats": contract.committed_seats, "minimum_spend": str(contract.minimum_spend),
        "purchase_order": contract.purchase_order,
        "budget_cap": str(contract.budget_cap) if contract.budget_cap is not None else None,
        "auto_renew": contract.auto_renew, "renewal_term_months": contract.renewal_term_months,
        "renewal_notice_days": contract.renewal_notice_days,
        "prices": {str(row.price_id): str(row.unit_amount) for row in contract.prices.order_by("price_id")},
    }


def contract_save(*, contract: Contract, actor: AbstractBaseUser, now: datetime, created: bool) -> Contract:
    """Create a contract or edit its commitments (admin), audited. The term, interval and currency come from the
    subscription when it is created; afterwards the term moves only by an 'extend term' amendment."""
    with transaction.atomic():
        subscription = Subscription.objects.select_related("customer", "price").get(pk=contract.subscription_id)
        before = None
        if created:
            contract.customer = subscription.customer
            contract.currency = subscription.price.currency
            contract.billing_interval = subscription.price.interval
            contract.created_at = now
            contract.created_by = actor
        else:
            before = contract_snapshot(Contract.objects.select_for_update().get(pk=contract.pk))
        contract.save()
        audit_event_record(actor=actor, action="contract.created" if created else "contract.edited", target=contract,
                           now=now, customer=contract.customer, reason_code="staff", before=before,
                           after=contract_snapshot(contract))
    return contract


def contract_prices_recorded(*, contract: Contract, actor: AbstractBaseUser, now: datetime) -> None:
    """Audit the negotiated prices set with a new contract (the admin saves them after the contract row)."""
    audit_event_record(actor=actor, action="contract.prices_set", target=contract, now=now,
                       customer=contract.customer, reason_code="staff", after=contract_snapshot(contract))


def _date_text(moment: datetime, timezone_name: str) -> str:
    from babel.dates import format_date

    from billing.templatetags.billing_format import current_locale

    return format_date(moment.astimezone(ZoneInfo(timezone_name)).date(), format="long", locale=current_locale())


def _money_text(amount: Decimal, currency: str) -> str:
    from billing.templatetags.billing_format import money

    return money(amount, currency)


def contract_check_change(*, contract: Contract, subscription: Subscription, to_price: Price, quantity: int,
                          cancel: bool, effective_at: datetime) -> None:
    """Refuse a change that would leave the committed term's commitments (with the term's end date): going below
    the committed seats or the minimum spend, cancelling, or leaving the contract's billing interval. Upgrades
    and seat additions pass. A change taking effect at or after the end of the term is not bound by it."""
    if effective_at >= contract.term_end:
        return
    end = _date_text(contract.term_end, subscription.customer.timezone)
    facts = {"date": end,
             "contract_end": contract.term_end.astimezone(ZoneInfo(subscription.customer.timezone)).isoformat()}
    if cancel:
        raise ChangeRefused("contract_commitment", _("Your contract runs until %(date)s: the subscription cannot be "
                                                     "cancelled before then.") % facts, contract_end=facts["contract_end"])
    if to_price.interval != contract.billing_interval:
        raise ChangeRefused(
            "contract_interval",
            _("Your contract is billed %(interval)s until %(date)s; the billing interval can change from then on.")
            % {**facts, "interval": Interval(contract.billing_interval).label.lower()},
            contract_end=facts["contract_end"])
    if to_price.pricing == Price.Pricing.PER_SEAT and quantity < contract.committed_seats:
        raise ChangeRefused(
            "contract_commitment",
            _("Your contract commits you to at least %(seats)s seats until %(date)s; you asked for %(quantity)s.")
            % {**facts, "seats": contract.committed_seats, "quantity": quantity},
            contract_end=facts["contract_end"], committed_seats=contract.committed_seats)
    if contract.minimum_spend > 0:
        net = proration.period_amount(price_item(price=to_price, quantity=quantity, contract=contract,
                                                 discount_percent=subscription.discount_percent), to_price.currency)
        if net < contract.minimum_spend:
            raise ChangeRefused(
                "contract_commitment",
                _("Your contract commits you to at least %(minimum)s a billing period until %(date)s; this change "
                  "would bring it to %(amount)s.")
                % {**facts, "minimum": _money_text(contract.minimum_spend, contract.currency),
                   "amount": _money_text(net, contract.currency)},
                contract_end=facts["contract_end"], minimum_spend=format_amount(contract.minimum_spend,
                                                                                contract.currency))


# --- amendments: pricing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AmendmentPreview:
    """An amendment priced at its effective date: today's prorated lines (PRORATION.md) and, co-termed, what its
    terms cost every period until the contract ends."""

    currency: str
    timezone: str
    effective_at: datetime
    period_start: datetime
    period_end: datetime
    term_end: datetime  # after the amendment (moved by 'extend term')
    from_price: Price
    from_quantity: int
    to_price: Price
    to_quantity: int
    unit_amount_before: Decimal | None  # negotiated (None: the catalog price applies)
    unit_amount_after: Decimal | None
    lines: list[dict] = field(default_factory=list)
    subtotal: Decimal = Decimal(0)
    tax_rate: Decimal | None = None
    reverse_charge: bool = False
    tax_inclusive: bool = False
    tax: Decimal = Decimal(0)
    total: Decimal = Decimal(0)
    balance_before: Decimal = Decimal(0)
    balance_applied: Decimal = Decimal(0)
    amount_due: Decimal = Decimal(0)
    balance_after: Decimal = Decimal(0)
    next_period_net: Decimal = Decimal(0)
    next_period_total: Decimal = Decimal(0)  # tax included, at the amended terms
    periods_after: int = 0  # whole periods after the current one until the term's end (after the amendment)
    added_periods: int = 0  # 'extend term': periods added
    until_term_end: Decimal = Decimal(0)  # total now + periods_after × next_period_total (or the added periods')
    catalog_net: Decimal = Decimal(0)  # the target's period at catalog prices, no discount
    discount_percent: Decimal = Decimal(0)  # how far below the catalog the target's period is
    price_override: bool = False
    term_change: bool = False
    direction: str = Direction.CROSSGRADE

    def as_json(self) -> dict[str, Any]:
        def amount(value: Decimal) -> str:
            return format_amount(value, self.currency)

        return {
            "currency": self.currency, "timezone": self.timezone, "effective_at": self.effective_at.isoformat(),
            "period_start": self.period_start.isoformat(), "period_end": self.period_end.isoformat(),
            "term_end": self.term_end.isoformat(), "from_price_id": self.from_price.pk,
            "from_plan": str(self.from_price.plan), "from_quantity": self.from_quantity,
            "to_price_id": self.to_price.pk, "to_plan": str(self.to_price.plan), "to_quantity": self.to_quantity,
            "unit_amount_before": str(self.unit_amount_before) if self.unit_amount_before is not None else None,
            "unit_amount_after": str(self.unit_amount_after) if self.unit_amount_after is not None else None,
            "lines": self.lines, "subtotal": amount(self.subtotal),
            "tax_rate": str(self.tax_rate) if self.tax_rate is not None else None,
            "reverse_charge": self.reverse_charge, "tax_inclusive": self.tax_inclusive, "tax": amount(self.tax),
            "total": amount(self.total), "credit": self.total < 0, "balance_applied": amount(self.balance_applied),
            "amount_due": amount(self.amount_due), "balance_after": amount(self.balance_after),
            "next_period_net": amount(self.next_period_net), "next_period_total": amount(self.next_period_total),
            "periods_after": self.periods_after, "added_periods": self.added_periods,
            "until_term_end": amount(self.until_term_end), "catalog_net": amount(self.catalog_net),
            "discount_percent": str(self.discount_percent.quantize(Decimal("0.01"))),
            "price_override": self.price_override, "term_change": self.term_change, "direction": self.direction,
        }


def amendment_effective_at(*, effective_on: date, subscription: Subscription) -> datetime:
    """The start of `effective_on` on the billing calendar, or the period's start when that is later that day."""
    tz = ZoneInfo(subscription.customer.timezone)
    start_of_day = datetime.combine(effective_on, time(0), tzinfo=tz)
    period_start = subscription.current_period_start
    if start_of_day < period_start and period_start.astimezone(tz).date() == effective_on:
        return period_start
    return start_of_day


def _refuse(code: str, detail: str, **extra) -> None:
    raise ChangeRefused(code, detail, **extra)


def _target(amendment: Amendment, contract: Contract, subscription: Subscription) -> tuple[Price, int, Decimal | None]:
    """The price, seats and negotiated unit amount after the amendment (checked)."""
    price, quantity = subscription.price, subscription.quantity
    kind = amendment.kind
    if kind == Amendment.Kind.ADD_SEATS:
        if not amendment.seats:
            _refuse("seats_required", _("Say how many seats to add."))
        if price.pricing != Price.Pricing.PER_SEAT:
            _refuse("not_per_seat", _("%(plan)s is a flat price: it has no seats to add.") % {"plan": price.plan})
        quantity += amendment.seats
        unit = contract.negotiated_unit_amount(price)
    elif kind == Amendment.Kind.CHANGE_TIER:
        target = amendment.to_price
        if target is None:
            _refuse("price_required", _("Choose the new tier's price."))
        if target.pk == price.pk:
            _refuse("no_change", _("The subscription is on this price already."))
        if target.plan.product_id != price.plan.product_id:
            _refuse("other_product", _("A tier change stays within %(product)s.") % {"product": price.plan.product})
        if target.currency != contract.currency or target.interval != contract.billing_interval:
            _refuse("price_terms", _("The new tier's price must be in %(currency)s and billed like the contract "
                                     "(%(interval)s).") % {"currency": contract.currency,
                                                           "interval": Interval(contract.billing_interval).label.lower()})
        if target.tax_behavior != price.tax_behavior:
            _refuse("tax_basis_mismatch", _("The new tier's price is taxed on another basis than the current one."))
        if not target.is_active:
            _refuse("price_unavailable", _("%(plan)s is not available any more.") % {"plan": target.plan})
        price = target
        if target.pricing == Price.Pricing.FLAT:
            quantity = 1
        unit = amendment.unit_amount if amendment.unit_amount is not None else contract.negotiated_unit_amount(target)
    elif kind == Amendment.Kind.CHANGE_PRICE:
        if amendment.unit_amount is None:
            _refuse("unit_amount_required", _("Give the new negotiated unit amount."))
        current = contract.negotiated_unit_amount(price)
        if amendment.unit_amount == (current if current is not None else price.unit_amount) and not price.is_tiered:
            _refuse("no_change", _("This is the unit amount the customer pays already."))
        unit = amendment.unit_amount
    else:
        unit = contract.negotiated_unit_amount(price)
    if quantity < price.min_quantity or (price.max_quantity is not None and quantity > price.max_quantity):
        _refuse("quantity_out_of_range", _("%(plan)s allows %(low)s to %(high)s seats; this makes %(quantity)s.")
                % {"plan": price.plan, "low": price.min_quantity, "high": price.max_quantity or "∞",
                   "quantity": quantity})
    return price, quantity, unit


def _price_amendment(*, amendment: Amendment, contract: Contract, subscription: Subscription,
                     customer: Customer) -> AmendmentPreview:
    """Check and price one amendment at its effective date. Raises ChangeRefused with the reason."""
    if subscription.status == Subscription.Status.PAST_DUE:
        _refuse("invoice_unpaid", _("A renewal invoice of this subscription is unpaid; it must be paid before the "
                                    "contract is amended."))
    if subscription.status != Subscription.Status.ACTIVE:
        _refuse("subscription_not_active", _("Only an active subscription can be amended."))
    if amendment.effective_on is None:
        _refuse("effective_date_required", _("Give the day the amendment takes effect."))
    tz = ZoneInfo(customer.timezone)
    effective_at = amendment_effective_at(effective_on=amendment.effective_on, subscription=subscription)
    start, end = subscription.current_period_start, subscription.current_period_end
    if not contract.in_force(effective_at):
        _refuse("effective_date_outside_term",
                _("The effective date must fall within the contract's term, %(start)s – %(end)s.")
                % {"start": _date_text(contract.term_start, customer.timezone),
                   "end": _date_text(contract.term_end, customer.timezone)})
    if not start <= effective_at < end:
        _refuse("effective_date_outside_period",
                _("The effective date must fall within the subscription's current billing period, %(start)s – "
                  "%(end)s (a later date: draft it after the renewal).")
                % {"start": _date_text(start, customer.timezone), "end": _date_text(end, customer.timezone)})
    currency = contract.currency
    balance = customer_balance(customer=customer, currency=currency)
    discount = subscription.discount_percent
    before_unit = contract.negotiated_unit_amount(subscription.price)
    to_price, to_quantity, after_unit = _target(amendment, contract, subscription)
    common = {"currency": currency, "timezone": customer.timezone, "effective_at": effective_at, "period_start": start,
              "period_end": end,
              "from_price": subscription.price, "from_quantity": subscription.quantity, "to_price": to_price,
              "to_quantity": to_quantity, "unit_amount_before": before_unit, "unit_amount_after": after_unit,
              "balance_before": balance}
    entity = legal_entity_default()
    decision = tax_decision_for(customer=customer, on=billing_date(customer=customer, moment=effective_at),
                                entity=entity)
    if entity is None:
        _refuse("no_legal_entity", _("Invoicing is not set up yet; contact support."))
    if missing_rate(seller_country=entity.country, buyer_country=customer.country, decision=decision):
        _refuse("tax_not_configured", _("No VAT rate is set up for the customer's country."))
    tax = tax_for_price(decision=decision, price=to_price)
    target = price_item(price=to_price, quantity=to_quantity, discount_percent=discount, unit_amount=after_unit)
    next_net = proration.period_amount(target, currency)
    next_total = proration.totals_for(next_net, tax, Decimal(0), currency).total
    catalog_net = proration.period_amount(price_item(price=to_price, quantity=to_quantity), currency)
    discount_percent = (catalog_net - next_net) / catalog_net * 100 if catalog_net > 0 else Decimal(0)
    zero = Decimal(0).scaleb(-minor_unit(currency))
    if amendment.kind == Amendment.Kind.EXTEND_TERM:
        if not amendment.extend_periods:
            _refuse("periods_required", _("Say by how many billing periods the term is extended."))
        term_end = _boundaries(first=contract.term_end, interval=contract.billing_interval, tz=tz,
                               count=amendment.extend_periods)[-1]
        totals = proration.totals_for(zero, tax, balance, currency)
        periods_after = periods_between(start=end, end=term_end, interval=contract.billing_interval, tz=tz) or 0
        return AmendmentPreview(
            **common, term_end=term_end, subtotal=totals.subtotal, tax_rate=decision.rate,
            reverse_charge=decision.reverse_charge, tax_inclusive=bool(tax and tax.inclusive), tax=totals.tax,
            total=totals.total, balance_applied=totals.balance_applied, amount_due=totals.amount_due,
            balance_after=totals.balance_after, next_period_net=next_net, next_period_total=next_total,
            periods_after=periods_after, added_periods=amendment.extend_periods,
            until_term_end=amendment.extend_periods * next_total, catalog_net=catalog_net,
            discount_percent=discount_percent, term_change=True, direction=Direction.UPGRADE)
    below = ((to_price.pricing == Price.Pricing.PER_SEAT and to_quantity < contract.committed_seats)
             or next_net < contract.minimum_spend)
    if below:
        _refuse("contract_commitment",
                _("This would go below the contract's commitment (%(seats)s seats, %(minimum)s a billing period) "
                  "before its end on %(date)s; change the commitment first.")
                % {"seats": contract.committed_seats, "minimum": _money_text(contract.minimum_spend, currency),
                   "date": _date_text(contract.term_end, customer.timezone)})
    current = price_item(price=subscription.price, quantity=subscription.quantity, discount_percent=discount,
                         contract=contract)
    result = proration.prorate(proration.Change(
        currency=currency, timezone=customer.timezone, granularity=customer.granularity, period_start=start,
        period_end=end, change_at=effective_at, current=current, target=target, tax=tax, customer_balance=balance))
    from billing.services.quotes import _line_json, change_direction

    if to_price.pk != subscription.price_id:
        direction = change_direction(from_price=subscription.price, from_quantity=subscription.quantity,
                                     to_price=to_price, to_quantity=to_quantity)
    else:
        before_net = proration.period_amount(current, currency)
        direction = Direction.UPGRADE if next_net > before_net else Direction.DOWNGRADE
    periods_after = periods_between(start=end, end=contract.term_end, interval=contract.billing_interval, tz=tz) or 0
    totals = result.totals
    return AmendmentPreview(
        **common, term_end=contract.term_end, lines=[_line_json(line, currency) for line in result.lines],
        subtotal=totals.subtotal, tax_rate=decision.rate, reverse_charge=decision.reverse_charge,
        tax_inclusive=bool(tax and tax.inclusive), tax=totals.tax, total=totals.total,
        balance_applied=totals.balance_applied, amount_due=totals.amount_due, balance_after=totals.balance_after,
        next_period_net=next_net, next_period_total=next_total, periods_after=periods_after,
        until_term_end=totals.total + periods_after * next_total, catalog_net=catalog_net,
        discount_percent=discount_percent, price_override=amendment.unit_amount is not None, direction=direction)


def amendment_preview(*, amendment: Amendment) -> AmendmentPreview:
    """Price an amendment (saved or not) as it would apply at its effective date: the admin's live preview.
    Raises ChangeRefused with the reason it cannot be made."""
    if amendment.contract_id is None:
        _refuse("contract_required", _("Choose the contract to amend."))
    contract = Contract.objects.prefetch_related("prices").get(pk=amendment.contract_id)
    subscription = (Subscription.objects.select_related("customer", "price__plan__product")
                    .get(pk=contract.subscription_id))
    return _price_amendment(amendment=amendment, contract=contract, subscription=subscription,
                            customer=subscription.customer)


# --- amendments: the lifecycle ---------------------------------------------------------------------------------


def amendment_snapshot(amendment: Amendment) -> dict[str, Any]:
    return {
        "status": amendment.status, "kind": amendment.kind, "effective_on": amendment.effective_on.isoformat(),
        "seats": amendment.seats, "to_price_id": amendment.to_price_id,
        "unit_amount": str(amendment.unit_amount) if amendment.unit_amount is not None else None,
        "extend_periods": amendment.extend_periods,
        "amount_due": str(amendment.amount_due) if amendment.amount_due is not None else None,
        "plan_change_id": amendment.plan_change_id,
    }


def _lock_amendment(amendment_id: int) -> tuple[Customer, Subscription, Contract, Amendment]:
    """Lock customer → subscription → contract → amendment (the amendment's own rows only)."""
    customer_id, subscription_id, contract_id = Amendment.objects.values_list(
        "contract__customer_id", "contract__subscription_id", "contract_id").get(pk=amendment_id)
    customer, subscription, _none = _lock(customer_id, subscription_id)
    contract = Contract.objects.select_for_update(of=("self",)).get(pk=contract_id)
    amendment = (Amendment.objects.select_for_update(of=("self",)).select_related("to_price__plan__product")
                 .get(pk=amendment_id))
    amendment.contract = contract
    return customer, subscription, contract, amendment


def amendment_save_draft(*, amendment: Amendment, actor: AbstractBaseUser, now: datetime) -> Amendment:
    """Create or edit a draft (admin), checked and priced first so that a draft always has a preview."""
    with transaction.atomic():
        created = amendment.pk is None
        before = None
        if not created:
            _customer, _subscription, _contract, stored = _lock_amendment(amendment.pk)
            if stored.status != Amendment.Status.DRAFT:
                raise ChangeConflict("not_a_draft", _("Only a draft can be edited; this amendment is %(status)s.")
                                     % {"status": stored.get_status_display().lower()})
            before = amendment_snapshot(stored)
        preview = amendment_preview(amendment=amendment)
        amendment.effective_at = preview.effective_at
        if created:
            amendment.status = Amendment.Status.DRAFT
            amendment.created_by = actor
            amendment.created_at = now
        amendment.save()
        audit_event_record(actor=actor, action="amendment.drafted" if created else "amendment.edited",
                           target=amendment, now=now, customer=amendment.contract.customer,
                           reason_code=amendment.reason_code, before=before, after=amendment_snapshot(amendment))
    return amendment


def amendment_submit(*, amendment_id: int, actor: AbstractBaseUser, now: datetime) -> Amendment:
    """Price the draft as the approvers will see it and hold it for approval when a policy matches; with no
    policy matching it is approved at once (and applied when its date has come)."""
    from billing.services.approvals import approval_hold_for_amendment, approval_request_open

    with transaction.atomic():
        customer, subscription, contract, amendment = _lock_amendment(amendment_id)
        if amendment.status != Amendment.Status.DRAFT:
            raise ChangeConflict("not_a_draft", _("Only a draft can be submitted; this amendment is %(status)s.")
                                 % {"status": amendment.get_status_display().lower()})
        contract = Contract.objects.prefetch_related("prices").get(pk=contract.pk)
        preview = _price_amendment(amendment=amendment, contract=contract, subscription=subscription,
                                   customer=customer)
        amendment.contract = contract
        amendment.effective_at = preview.effective_at
        amendment.subscription_version = subscription.version
        amendment.currency = preview.currency
        amendment.total = preview.total
        amendment.amount_due = preview.amount_due
        amendment.priced = preview.as_json()
        amendment.submitted_by = actor
        amendment.submitted_at = now
        hold = approval_hold_for_amendment(amendment=amendment, preview=preview, contract=contract)
        if hold is not None:
            amendment.status = Amendment.Status.PENDING_APPROVAL
            amendment.save()
            approval_request_open(customer=customer, hold=hold, amendment=amendment, actor=actor, now=now,
                                  summary=amendment_summary(amendment))
            audit_event_record(actor=actor, action="amendment.submitted", target=amendment, now=now,
                               customer=customer, reason_code=amendment.reason_code, after=amendment_snapshot(amendment),
                               message=f"Waiting for approval: {format_amount(preview.amount_due, preview.currency)} "
                                       f"{preview.currency} due")
            return amendment
        amendment.status = Amendment.Status.APPROVED
        amendment.save()
        audit_event_record(actor=actor, action="amendment.approved", target=amendment, now=now, customer=customer,
                           reason_code="no_approval_needed", after=amendment_snapshot(amendment),
                           message="No approval policy matched.")
        amendment_apply_locked(amendment=amendment, contract=contract, customer=customer, subscription=subscription,
                               actor=actor, now=now)
    return amendment


def amendment_summary(amendment: Amendment) -> str:
    """One line for lists and the queue (staff, English)."""
    contract = amendment.contract
    kind = amendment.kind
    if kind == Amendment.Kind.ADD_SEATS:
        what = f"add {amendment.seats} seats"
    elif kind == Amendment.Kind.CHANGE_TIER:
        what = f"change tier to {amendment.to_price.plan}"
    elif kind == Amendment.Kind.CHANGE_PRICE:
        what = f"change price to {format_amount(amendment.unit_amount, contract.currency)} {contract.currency}"
    else:
        what = f"extend term by {amendment.extend_periods} periods"
    return f"{contract.number}: {what} from {amendment.effective_on.isoformat()}"[:300]


def _fail_amendment(*, amendment: Amendment, customer: Customer, code: str, message: str, actor, now: datetime,
                    notify: bool = True) -> None:
    before = amendment_snapshot(amendment)
    amendment.status = Amendment.Status.FAILED
    amendment.failure_code = code
    amendment.failure_message = message[:300]
    amendment.closed_at = now
    amendment.save()
    audit_event_record(actor=actor, action="amendment.failed", target=amendment, now=now, customer=customer,
                       reason_code=code, before=before, after=amendment_snapshot(amendment), message=message)
    if notify:
        from billing.services.approvals import approval_subject_failed_notify

        approval_subject_failed_notify(amendment=amendment, now=now)


def amendment_apply_locked(*, amendment: Amendment, contract: Contract, customer: Customer, subscription: Subscription,
                           actor: AbstractBaseUser | None, now: datetime) -> bool:
    """Apply an approved amendment whose date has come, in the caller's transaction (locks held). Returns True
    when it is done (applied, or failed with its reason); False when it waits (its date, or a customer's payment
    in flight: the sweep tries again).

    It applies exactly as approved: the subscription must be the version it was priced for and the amendment must
    price to the same total; otherwise it fails and the requester and the customer are told.
    """
    if amendment.status != Amendment.Status.APPROVED or amendment.effective_at > now:
        return False
    if PlanChange.objects.filter(customer=customer, status__in=PlanChange.IN_FLIGHT).exists():
        return False
    if subscription.version != amendment.subscription_version:
        _fail_amendment(amendment=amendment, customer=customer, code="subscription_changed", actor=actor, now=now,
                        message="The subscription changed after the amendment was priced; draft it again.")
        return True
    contract = Contract.objects.prefetch_related("prices").get(pk=contract.pk)
    try:
        preview = _price_amendment(amendment=amendment, contract=contract, subscription=subscription,
                                   customer=customer)
    except ChangeRefused as refusal:
        _fail_amendment(amendment=amendment, customer=customer, code=refusal.code, message=refusal.detail,
                        actor=actor, now=now)
        return True
    if preview.total != amendment.total:
        _fail_amendment(amendment=amendment, customer=customer, code="amount_changed", actor=actor, now=now,
                        message=f"It now prices at {format_amount(preview.total, preview.currency)} "
                                f"{preview.currency}, not the approved {format_amount(amendment.total, preview.currency)}"
                                "; draft it again.")
        return True
    before = contract_snapshot(contract)
    if amendment.kind == Amendment.Kind.EXTEND_TERM:
        contract.term_end = preview.term_end
        contract.save(update_fields=["term_end"])
    else:
        if amendment.unit_amount is not None:
            ContractPrice.objects.update_or_create(contract=contract, price=preview.to_price,
                                                   defaults={"unit_amount": amendment.unit_amount})
        change = PlanChange.objects.create(
            customer=customer, subscription=subscription, quote=None, status=PlanChange.Status.PENDING,
            direction=preview.direction, timing=Timing.NOW, from_price=subscription.price,
            from_quantity=subscription.quantity, to_price=preview.to_price, to_quantity=preview.to_quantity,
            effective_at=preview.effective_at, new_period_start=preview.period_start,
            new_period_end=preview.period_end, currency=preview.currency, lines=preview.lines,
            subtotal=preview.subtotal, tax_rate=preview.tax_rate, reverse_charge=preview.reverse_charge,
            tax=preview.tax, total=preview.total, balance_applied=preview.balance_applied,
            amount_due=preview.amount_due, balance_after=preview.balance_after, reason_code=amendment.reason_code,
            collection_method=PlanChange.CollectionMethod.INVOICE,
            created_by=actor if actor is not None and actor.is_authenticated else None, created_at=now,
        )
        _apply(change=change, customer=customer, subscription=subscription, actor=actor, now=now)
        amendment.plan_change = change
    amendment.status = Amendment.Status.APPLIED
    amendment.applied_at = now
    amendment.save()
    contract = Contract.objects.prefetch_related("prices").get(pk=contract.pk)
    audit_event_record(actor=actor, action="amendment.applied", target=amendment, now=now, customer=customer,
                       reason_code=amendment.reason_code, before=before, after=contract_snapshot(contract),
                       message=f"{amendment_summary(amendment)}: {format_amount(preview.amount_due, preview.currency)} "
                               f"{preview.currency} invoiced")
    return True


def amendment_apply(*, amendment_id: int, now: datetime) -> bool:
    """The sweep's step for one approved amendment whose date has come; idempotent."""
    with transaction.atomic():
        customer, subscription, contract, amendment = _lock_amendment(amendment_id)
        return amendment_apply_locked(amendment=amendment, contract=contract, customer=customer,
                                      subscription=subscription, actor=None, now=now)


def amendments_apply_due(*, now: datetime) -> int:
    """Beat: apply approved amendments whose date has come. One failing never stops the others."""
    applied = 0
    ids = list(Amendment.objects.filter(status=Amendment.Status.APPROVED, effective_at__lte=now)
               .order_by("effective_at", "pk").values_list("pk", flat=True)[:500])
    for amendment_id in ids:
        try:
            applied += amendment_apply(amendment_id=amendment_id, now=now)
        except Exception:
            logger.exception("applying amendment %s failed", amendment_id)
    return applied


def amendment_cancel(*, amendment_id: int, actor: AbstractBaseUser, now: datetime) -> Amendment:
    """Withdraw a draft, a submitted amendment (its approval request is cancelled) or an approved one whose date
    has not come yet."""
    from billing.models import ApprovalRequest

    with transaction.atomic():
        customer, _subscription, _contract, amendment = _lock_amendment(amendment_id)
        if amendment.status not in Amendment.OPEN:
            raise ChangeConflict("not_cancellable", _("This amendment is %(status)s and can no longer be cancelled.")
                                 % {"status": amendment.get_status_display().lower()})
        before = amendment_snapshot(amendment)
        (ApprovalRequest.objects.select_for_update().filter(amendment=amendment, status=ApprovalRequest.Status.PENDING)
         .update(status=ApprovalRequest.Status.CANCELLED, decided_at=now))
        amendment.status = Amendment.Status.CANCELLED
        amendment.closed_at = now
        amendment.save()
        audit_event_record(actor=actor, action="amendment.cancelled", target=amendment, now=now, customer=customer,
                           reason_code="staff_cancelled", before=before, after=amendment_snapshot(amendment))
    return amendment
