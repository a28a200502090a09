"""Invoices and credit notes for applied plan changes; numbers taken only at issue, without gaps.

A document is built from the plan change's own lines and amounts (what was charged or credited), with the
VAT treatment recalculated for the supply date. It is issued inside the transaction that applies the
change, so a change never exists without its document, nor a number without its document.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import translation

from billing import proration
from billing.errors import BillingError
from billing.models import (
    BalanceEntry,
    Contract,
    Customer,
    DocumentSeries,
    Invoice,
    InvoiceLine,
    LegalEntity,
    PlanChange,
    Subscription,
    Timing,
)
from billing.selectors import (
    contract_in_force,
    customer_balance,
    period_price,
)
from billing.selectors_context import ReadContext
from billing.tax import TaxDecision, document_mention
from billing.templatetags.billing_format import bands_text, line_text


def document_number_take(*, entity: LegalEntity, kind: str, year: int) -> str:
    """The next number of the series, in the caller's transaction: the series row stays locked until it
    commits, so concurrent issuers queue (no duplicates) and a rolled-back issue returns its number (no gaps).
    One statement once the series exists (UPDATE … RETURNING takes the row lock and the number together)."""
    return document_numbers_take(entity=entity, kind=kind, year=year, count=1)[0]


def document_numbers_take(*, entity: LegalEntity, kind: str, year: int, count: int) -> list[str]:
    """The next `count` numbers of the series, contiguous, under the same rules as document_number_take."""
    taken = _series_next(entity=entity, kind=kind, year=year, count=count)
    if taken is None:  # the year's first document of this kind: create the series, then take from it
        prefix = entity.invoice_prefix if kind == Invoice.Kind.INVOICE else entity.credit_note_prefix
        try:
            with transaction.atomic():
                DocumentSeries.objects.get_or_create(legal_entity=entity, kind=kind, year=year,
                                                     defaults={"prefix": prefix})
        except IntegrityError:  # another transaction created the series first
            pass
        taken = _series_next(entity=entity, kind=kind, year=year, count=count)
        if taken is None:
            raise DocumentSeries.DoesNotExist(f"no {kind} series {year} for {entity}")
    prefix, first = taken
    return [f"{prefix}-{year}-{number:06d}" for number in range(first, first + count)]


def _series_next(*, entity: LegalEntity, kind: str, year: int, count: int) -> tuple[str, int] | None:
    """(prefix, first number taken), or None when the series does not exist yet."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_documentseries SET next_number = next_number + %s "
                       "WHERE legal_entity_id = %s AND kind = %s AND year = %s RETURNING prefix, next_number - %s",
                       [count, entity.pk, kind, year, count])
        row = cursor.fetchone()
    return (row[0], row[1]) if row is not None else None


def _issue_fields(*, entity: LegalEntity, kind: str, now: datetime) -> dict:
    """Number, issue instant and issue date of a document issued now (the series stays locked until commit)."""
    return issue_fields_for(entity=entity, kind=kind, now=now, count=1)[0]


def issue_fields_for(*, entity: LegalEntity, kind: str, now: datetime, count: int) -> list[dict]:
    """Number, issue instant and issue date of `count` documents issued now, in number order (the series stays
    locked until commit). They share the issue instant, as documents issued one by one at `now` would."""
    tz = ZoneInfo(entity.timezone)  # issue dates follow the seller's calendar
    year = now.astimezone(tz).year
    numbers = document_numbers_take(entity=entity, kind=kind, year=year, count=count)
    # Numbers and issue dates run in the same order: a worker whose clock was read before another worker's
    # (a chunk of renewals started earlier) never dates a later number before an earlier one.
    latest = (Invoice.objects.filter(legal_entity=entity, kind=kind, issued_at__isnull=False,
                                     number__startswith=numbers[0].rsplit("-", 1)[0] + "-")
              .order_by("-issued_at").values_list("issued_at", flat=True).first())
    issued_at = max(now, latest) if latest is not None else now
    return [{"number": number, "issued_at": issued_at, "issue_date": issued_at.astimezone(tz).date()}
            for number in numbers]


def invoice_issue(*, invoice: Invoice, now: datetime) -> Invoice:
    """Draft → issued: the number is taken now, inside this transaction, and saved with whatever else the
    caller set (paid already, say) in one update, so the series stays locked briefly."""
    if invoice.number:
        raise BillingError("not_a_draft", f"{invoice} is already issued.", status=409)
    for name, value in _issue_fields(entity=invoice.legal_entity, kind=invoice.kind, now=now).items():
        setattr(invoice, name, value)
    if invoice.status == Invoice.Status.DRAFT:
        invoice.status = Invoice.Status.ISSUED
    invoice.save()
    return invoice


def _enqueue_pdf(invoice_id: int) -> None:
    from billing.tasks import render_invoice_pdf

    render_invoice_pdf.delay(invoice_id)


def invoice_for_plan_change(*, change: PlanChange, customer: Customer, now: datetime,
                            actor: AbstractBaseUser | None, ctx: ReadContext | None = None) -> Invoice | None:
    """The invoice (total ≥ 0) or credit note (total < 0) of an applied immediate change; call in _apply's
    transaction. Nothing for changes with nothing to bill (period-end changes, trials)."""
    if change.timing != Timing.NOW or not change.lines:
        return None
    ctx = ctx or ReadContext()
    credit = change.total < 0
    corrected = None
    if credit:  # the invoice that billed the period now credited (EU VAT Directive, Article 219)
        # Not an invoice a rollback reversed in full, nor a rollback's own document: neither billed the period.
        corrected = (Invoice.objects.filter(customer=customer, kind=Invoice.Kind.INVOICE,
                                            billing_reason=Invoice.Reason.PLAN_CHANGE,
                                            plan_change__subscription_id=change.subscription_id,
                                            supply_start__lte=change.effective_at, supply_end__gt=change.effective_at)
                     .exclude(status=Invoice.Status.DRAFT).exclude(plan_change__status=PlanChange.Status.ROLLED_BACK)
                     .order_by("-issued_at", "-pk").first())
    contract = contract_in_force(subscription_id=change.subscription_id, at=change.effective_at)
    invoice, lines = plan_change_invoice_build(change=change, customer=customer, now=now, actor=actor, ctx=ctx,
                                               contract=contract, corrected=corrected)
    for name, value in _issue_fields(entity=invoice.legal_entity, kind=invoice.kind, now=now).items():
        setattr(invoice, name, value)  # inserted issued (number taken first, in this transaction)
    invoice.save(force_insert=True)
    for line in lines:
        line.invoice = invoice
    InvoiceLine.objects.bulk_create(lines)
    plan_change_invoice_enqueue(invoice)
    return invoice


def plan_change_invoice_build(*, change: PlanChange, customer: Customer, now: datetime,
                              actor: AbstractBaseUser | None, ctx: ReadContext, contract: Contract | None,
                              corrected: Invoice | None) -> tuple[Invoice, list[InvoiceLine]]:
    """The document invoice_for_plan_change issues, and its lines, unsaved and not numbered yet (the number fields
    come from issue_fields_for; the set-based staff step numbers a chunk's documents from one range). `contract`:
    the contract in force at the change's effective date; `corrected`: the invoice a credit note corrects."""
    entity = ctx.legal_entity()
    if entity is None:
        raise BillingError("no_legal_entity", "No default legal entity is configured to issue invoices.", status=500)
    # The document states exactly the tax that was charged: the change's rate and treatment, which were
    # decided for the quote and checked again when it was accepted, before payment.
    decision = TaxDecision(rate=change.tax_rate, reverse_charge=change.reverse_charge,
                           mention=document_mention(rate=change.tax_rate, reverse_charge=change.reverse_charge,
                                                    seller_country=entity.country, buyer_country=customer.country))
    credit = change.total < 0
    sign = Decimal(-1) if credit else Decimal(1)
    inclusive = ctx.price(change.to_price_id).tax_behavior == "inclusive" and decision.rate is not None
    # Contract amendments apply at their date and are collected afterwards, like renewals; customer changes were
    # paid before they applied.
    invoiced = change.collection_method == PlanChange.CollectionMethod.INVOICE and not credit and change.amount_due > 0
    kind = Invoice.Kind.CREDIT_NOTE if credit else Invoice.Kind.INVOICE
    paid = not invoiced and not credit
    # Issued, and paid already unless it is collected later.
    invoice = Invoice(
        kind=kind, legal_entity=entity, customer=customer,
        status=Invoice.Status.PAID if paid else Invoice.Status.ISSUED, paid_at=now if paid else None,
        plan_change=change, subscription_id=change.subscription_id, related_invoice=corrected,
        supply_start=change.effective_at, supply_end=change.new_period_end,
        currency=change.currency, language=customer.language, billing_timezone=customer.timezone,
        seller_name=entity.name, seller_address=entity.address, seller_country=entity.country,
        seller_vat_id=entity.vat_id, buyer_name=customer.name, buyer_address=customer.address,
        buyer_country=customer.country, buyer_vat_id=customer.vat_id,
        tax_inclusive=inclusive, reverse_charge=decision.reverse_charge,
        legal_mention=decision.mention, purchase_order=contract.purchase_order if contract else "",
        subtotal=sign * change.subtotal, tax_total=sign * change.tax, total=sign * change.total,
        tax_breakdown=[{"rate": str(decision.rate if decision.rate is not None else 0),
                        "taxable": str(sign * (change.subtotal - change.tax if inclusive else change.subtotal)),
                        "tax": str(sign * change.tax)}],
        balance_applied=change.balance_applied, amount_paid=Decimal(0) if invoiced else change.amount_due,
        amount_due=change.amount_due, next_payment_attempt_at=now if invoiced else None,
        payment_reference=change.payment_reference, created_at=now,
        created_by=actor if actor is not None and actor.is_authenticated else None,
    )
    with translation.override(customer.language or "en"):  # the snapshot keeps the words the customer reads
        descriptions = [line_text(line)[:500] for line in change.lines]
        details = [bands_text(line, change.currency) for line in change.lines]  # a tiered price's bands
    lines = [InvoiceLine(position=index, description=descriptions[index - 1], detail=details[index - 1],
                         quantity=1, unit_amount=sign * Decimal(line["amount"]), amount=sign * Decimal(line["amount"]),
                         tax_rate=decision.rate)
             for index, line in enumerate(change.lines, start=1)]
    return invoice, lines


def plan_change_invoice_enqueue(invoice: Invoice) -> None:
    """After commit: the PDF, and the collection of a document collected later (call in the issuing transaction)."""
    # robust: the change and its payment are done; a broker that is down must not turn that into an error
    # (the catch-up sweep `render_missing_pdfs` enqueues it later).
    transaction.on_commit(lambda: _enqueue_pdf(invoice.pk), robust=True)
    if invoice.next_payment_attempt_at is not None:  # robust: if the broker is down, collect_due_invoices picks it up
        transaction.on_commit(lambda: _enqueue_collect(invoice.pk), robust=True)


_ADJECTIVE = {"month": "monthly", "quarter": "quarterly", "year": "yearly"}


def invoice_for_renewal(*, customer: Customer, subscription: Subscription, now: datetime,
                        ctx: ReadContext | None = None) -> Invoice | None:
    """The invoice for the period the subscription has just entered, issued in the caller's transaction (the
    renewal's locks held). Priced and taxed now, from the current terms; the customer's balance in the
    invoice's currency is applied first (PRORATION.md's balance rule). None for a free period."""
    ctx = ctx or ReadContext()
    contract = contract_in_force(subscription_id=subscription.pk, at=subscription.current_period_start)
    built = renewal_invoice_build(customer=customer, subscription=subscription, now=now, ctx=ctx, contract=contract,
                                  balance_of=lambda currency: customer_balance(customer=customer, currency=currency))
    if built is None:
        return None
    invoice, line = built
    # Inserted issued (number taken first, in this transaction).
    for name, value in _issue_fields(entity=invoice.legal_entity, kind=invoice.kind, now=now).items():
        setattr(invoice, name, value)
    invoice.save(force_insert=True)
    line.invoice = invoice
    line.save(force_insert=True)
    if invoice.balance_applied > 0:
        BalanceEntry.objects.create(customer=customer, currency=invoice.currency, amount=-invoice.balance_applied,
                                    kind=BalanceEntry.Kind.APPLIED_TO_INVOICE, invoice=invoice, created_at=now,
                                    description=f"Applied to invoice {invoice.number}")
    renewal_invoice_enqueue(invoice)
    return invoice


def renewal_invoice_enqueue(invoice: Invoice) -> None:
    """After commit: the PDF, and the collection of what is due (robust: if the broker is down, the catch-up sweeps
    `render_missing_pdfs` and `collect_due_invoices` pick them up)."""
    transaction.on_commit(lambda: _enqueue_pdf(invoice.pk), robust=True)
    if invoice.amount_due > 0:
        transaction.on_commit(lambda: _enqueue_collect(invoice.pk), robust=True)


def renewal_invoice_build(*, customer: Customer, subscription: Subscription, now: datetime, ctx: ReadContext,
                          contract: Contract | None,
                          balance_of: Callable[[str], Decimal]) -> tuple[Invoice, InvoiceLine] | None:
    """The renewal invoice (unsaved, not numbered yet) and its line, for the subscription's current period with
    `contract` the one in force at its start and `balance_of(currency)` the customer's balance. None for a free
    period. Shared by invoice_for_renewal and the set-based period-end step, so both write the same document."""
    price = ctx.price(subscription.price_id)
    currency = price.currency
    start, end = subscription.current_period_start, subscription.current_period_end
    entity = ctx.legal_entity()
    priced = period_price(customer=customer, subscription=subscription, price=price, quantity=subscription.quantity,
                          discount_percent=subscription.discount_percent, start=start, contract=contract, ctx=ctx)
    item, amount, decision, tax = priced.item, priced.amount, priced.decision, priced.tax
    if amount == 0:
        return None
    if entity is None:
        raise BillingError("no_legal_entity", "No default legal entity is configured to issue invoices.", status=500)
    balance = max(balance_of(currency), Decimal(0))
    totals = proration.totals_for(amount, tax, balance, currency)
    inclusive = tax is not None and tax.inclusive
    tz = ZoneInfo(customer.timezone)
    span = proration.range_label(start.astimezone(tz), end.astimezone(tz))
    line = {"kind": "charge", "mode": "full", "remaining": "1", "total_units": "1", "unit": "period",
            "item_name": str(price.plan), "quantity": subscription.quantity, "amount": str(amount),
            "start": start.astimezone(tz).isoformat(), "end": end.astimezone(tz).isoformat(),
            "description": f"New billing period for {price.plan} × {subscription.quantity}, {span} "
                           f"({_ADJECTIVE[price.interval]})"}
    if item.tiers_mode != "none":  # the bands the period amount is made of, stated as quotes state them
        line.update(proration.tier_facts_json(proration.Line(
            kind="charge", description="", amount=amount, quantity=subscription.quantity, tiers_mode=item.tiers_mode,
            bands=proration.item_bands(item), tiered_amount=proration.tiered_amount(item)), currency))
    paid = totals.amount_due == 0  # issued as paid: the balance covers it
    invoice = Invoice(
        kind=Invoice.Kind.INVOICE, billing_reason=Invoice.Reason.RENEWAL, legal_entity=entity, customer=customer,
        status=Invoice.Status.PAID if paid else Invoice.Status.ISSUED, paid_at=now if paid else None,
        next_payment_attempt_at=None if paid else now,
        subscription=subscription, supply_start=start, supply_end=end, currency=currency,
        language=customer.language, billing_timezone=customer.timezone,
        seller_name=entity.name, seller_address=entity.address, seller_country=entity.country,
        seller_vat_id=entity.vat_id, buyer_name=customer.name, buyer_address=customer.address,
        buyer_country=customer.country, buyer_vat_id=customer.vat_id,
        tax_inclusive=inclusive, reverse_charge=decision.reverse_charge,
        legal_mention=document_mention(rate=decision.rate, reverse_charge=decision.reverse_charge,
                                       seller_country=entity.country, buyer_country=customer.country),
        purchase_order=contract.purchase_order if contract else "",
        subtotal=totals.subtotal, tax_total=totals.tax, total=totals.total,
        tax_breakdown=[{"rate": str(decision.rate if decision.rate is not None else 0),
                        "taxable": str(totals.subtotal - totals.tax if inclusive else totals.subtotal),
                        "tax": str(totals.tax)}],
        balance_applied=totals.balance_applied, amount_due=totals.amount_due, amount_paid=Decimal(0),
        created_at=now,
    )
    with translation.override(customer.language or "en"):
        description = line_text(line)[:500]
        detail = bands_text(line, currency)
    return invoice, InvoiceLine(position=1, description=description, detail=detail, quantity=1, unit_amount=amount,
                                amount=amount, tax_rate=decision.rate)


def _enqueue_collect(invoice_id: int) -> None:
    from billing.tasks import collect_invoice

    collect_invoice.delay(invoice_id)
