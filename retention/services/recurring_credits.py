"""Amount-off retention discounts: "X off each of your next N invoices".

An accepted amount-off offer is a `RecurringCredit` on the subscription. At each of the next N renewals that bill
something (a paused period, or one with nothing to bill, doesn't use one up), the renewal step calls
`recurring_credit_grant` under the subscription's lock, just before `invoice_for_renewal`: the customer's balance in
the credit's currency receives the amount off, capped at that invoice's total so the offer never leaves a credit
behind, and the invoice applies the balance first (shared/PRORATION.md's balance rule: after tax; the invoice shows
it as balance applied). A debit already on the balance is settled by it first, as by any credit.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from billing.models import BalanceEntry, Customer, Subscription
from billing.money import format_amount
from billing.selectors import period_price
from billing.selectors_context import ReadContext
from billing.services.audit import audit_event_record
from retention.models import RecurringCredit


def recurring_credit_pending(*, subscription_id: int) -> RecurringCredit | None:
    """The amount-off discount the subscription's next renewals still receive, if any."""
    return (RecurringCredit.objects.filter(subscription_id=subscription_id, periods_left__gt=0)
            .select_related("presentation__offer").order_by("pk").first())


def recurring_credit_capped(*, amount: Decimal, total: Decimal) -> Decimal:
    """What one renewal receives: the amount off, at most the invoice's total (never below zero)."""
    return max(min(amount, total), Decimal(0))


def recurring_credit_grant(*, customer: Customer, subscription: Subscription, now: datetime,
                           ctx: ReadContext) -> BalanceEntry | None:
    """Credit this renewal's amount off to the balance (audited) and count it down, for the period the subscription
    has just entered, before its invoice is issued (the renewal step's locks held). None when there is nothing to
    grant: no credit pending, another currency, or nothing billed this period (none used up then)."""
    credit = (RecurringCredit.objects.select_for_update(of=("self",)).select_related("presentation__offer")
              .filter(subscription_id=subscription.pk, periods_left__gt=0).order_by("pk").first())
    if credit is None:
        return None
    price = ctx.price(subscription.price_id)
    if price.currency != credit.currency:
        return None  # billed in another currency now: the credit waits (the offer was made in its currency)
    start = subscription.current_period_start
    # The invoice's total exactly as renewal_invoice_build prices it (same function, same terms, same instant).
    total = period_price(customer=customer, subscription=subscription, price=price, quantity=subscription.quantity,
                         discount_percent=subscription.discount_percent, start=start, ctx=ctx).totals.total
    amount = recurring_credit_capped(amount=credit.amount, total=total)
    if amount <= 0:
        return None
    credit.periods_left -= 1
    credit.save(update_fields=["periods_left"])
    number = credit.periods - credit.periods_left
    offer = credit.presentation.offer.name if credit.presentation is not None else "amount off"
    shown = format_amount(amount, credit.currency)
    description = (f"Retention offer “{offer}”: {shown} {credit.currency} off the renewal of "
                   f"{start.astimezone(ZoneInfo(customer.timezone)).date().isoformat()} ({number} of {credit.periods})")[:300]
    entry = BalanceEntry.objects.create(customer=customer, currency=credit.currency, amount=amount,
                                        kind=BalanceEntry.Kind.RETENTION_CREDIT, created_at=now,
                                        description=description)
    audit_event_record(actor=None, action="retention.credit_granted", target=credit, now=now, customer=customer,
                       reason_code="retention_offer",
                       after={"amount": shown, "currency": credit.currency, "periods_left": credit.periods_left,
                              "period_start": start.isoformat()},
                       message=description)
    return entry
