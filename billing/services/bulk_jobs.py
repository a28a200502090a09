"""Bulk plan changes: rows from an admin selection or a CSV, previewed with their total, confirmed, then executed
by workers in chunks as scheduled changes (billing/services/scheduled_changes.py). One bad row never stops the
others; every row ends with its result (applied, refused with the reason, failed with the error)."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count

from billing.errors import BillingError, ChangeConflict, ChangeRefused
from billing.models import BulkJob, Customer, Price, ScheduledChange, Subscription
from billing.money import format_amount
from billing.selectors_context import ReadContext
from billing.services.audit import audit_event_record
from billing.services.quotes import PricingContext, pricing_contexts, quote_price

CSV_COLUMNS = ["customer", "product", "plan", "interval", "seats", "effective_date"]
MAX_ROWS = 50_000
CHUNK_SIZE = 200


@dataclass(frozen=True)
class Target:
    product: str
    plan: str
    interval: str
    seats: int | None
    effective: str = ""


def _parse_effective(value: str, customer: Customer, now: datetime) -> datetime:
    """Empty: now. A date: midnight of that day on the customer's billing calendar. A date-time with offset."""
    value = value.strip()
    if not value:
        return now
    try:
        if len(value) == 10:
            day = datetime.fromisoformat(value).date()
            return datetime.combine(day, time(0), tzinfo=ZoneInfo(customer.timezone))
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ChangeRefused("bad_effective_date", f"effective_date {value!r} is not a date (YYYY-MM-DD) or an ISO "
                                                  "date-time with offset.") from None
    if moment.tzinfo is None:
        raise ChangeRefused("bad_effective_date", f"effective_date {value!r} needs a UTC offset.")
    return moment


def _row(*, job: BulkJob, line: int | None, source: dict, customer: Customer | None, target: Target,
         prices: dict, subscriptions: dict, contexts: dict[int, PricingContext], now: datetime,
         actor: AbstractBaseUser) -> ScheduledChange:
    row = ScheduledChange(job=job, line_number=line, source=source, customer=customer, created_by=actor,
                          created_at=now, reason=job.reason, status=ScheduledChange.Status.PREVIEW)
    try:
        if customer is None:
            raise ChangeRefused("unknown_customer", f"No customer {source.get('customer', '')!r} (give its id or exact name).")
        price = prices.get((target.product, target.plan, customer.currency, target.interval))
        if price is None:
            raise ChangeRefused("unknown_price", f"No active {target.interval} price of {target.product}/{target.plan} "
                                                 f"in {customer.currency}.")
        subscription = subscriptions.get((customer.pk, price.plan.product_id))
        if subscription is None:
            raise ChangeRefused("no_subscription", f"{customer} has no live subscription to {price.plan.product}.")
        seats = target.seats if target.seats is not None else subscription.quantity
        row.subscription, row.to_price, row.to_quantity = subscription, price, seats
        row.effective_at = _parse_effective(target.effective, customer, now)
        row.currency = price.currency
        if row.effective_at <= now:
            quote = quote_price(subscription=subscription, to_price=price, quantity=seats, now=now,
                                context=contexts[subscription.pk])
            row.preview_amount_due = quote.amount_due
            row.message = f"{quote.get_direction_display()}, {quote.get_timing_display().lower()}"
        else:
            row.message = "Priced when it takes effect"
    except BillingError as error:
        row.status = ScheduledChange.Status.INVALID
        row.result_code = error.code
        row.message = str(error.detail)[:500]
    return row


def _lookups(customers: list[Customer], *, now: datetime) -> tuple[dict, dict, dict[int, PricingContext]]:
    """Every row's price, subscription and pricing context, read for the whole job at once (the preview prices
    thousands of rows: nothing is read again per row)."""
    active = list(Price.objects.filter(is_active=True).select_related("plan__product").prefetch_related("tiers"))
    prices = {(p.plan.product.code, p.plan.code, p.currency, p.interval): p for p in active}
    by_id = {p.pk: p for p in active}
    subscriptions = {}
    for s in Subscription.objects.filter(customer__in=[c for c in customers if c is not None]).exclude(
            status=Subscription.Status.CANCELLED).select_related("customer", "price__plan__product"):
        s.price = by_id.get(s.price_id, s.price)  # with its tiers
        subscriptions[(s.customer_id, s.product_id)] = s
    contexts = pricing_contexts(subscriptions=list(subscriptions.values()), now=now, ctx=ReadContext())
    return prices, subscriptions, contexts


def _job_save(*, job: BulkJob, rows: list[ScheduledChange], actor: AbstractBaseUser, now: datetime) -> BulkJob:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        if row.status == ScheduledChange.Status.PREVIEW and row.preview_amount_due:
            totals[row.currency] += row.preview_amount_due
    job.preview_totals = {currency: format_amount(amount, currency) for currency, amount in sorted(totals.items())}
    with transaction.atomic():
        job.save()
        for row in rows:
            row.job = job
        ScheduledChange.objects.bulk_create(rows, batch_size=2000)
        audit_event_record(actor=actor, action="bulk_job.created", target=job, now=now, reason_code="bulk_change",
                           message=f"{len(rows)} row(s): {job.reason}")
    return job


def bulk_job_from_csv(*, name: str, reason: str, data: bytes, actor: AbstractBaseUser, now: datetime) -> BulkJob:
    """A job from a CSV upload (columns: customer, product, plan, interval, seats, effective_date)."""
    if not reason.strip():
        raise ChangeRefused("reason_required", "Say why these changes are made (it is audited).")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ChangeRefused("bad_csv", "The file is not UTF-8 text.") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS[:5] if c not in (reader.fieldnames or [])]
    if missing:
        raise ChangeRefused("bad_csv", f"The CSV needs a header row with: {', '.join(CSV_COLUMNS)} "
                                       f"(missing: {', '.join(missing)}).")
    records = list(reader)
    if not records:
        raise ChangeRefused("bad_csv", "The CSV has no rows.")
    if len(records) > MAX_ROWS:
        raise ChangeRefused("bad_csv", f"At most {MAX_ROWS} rows per job; this file has {len(records)}.")
    keys = {r.get("customer", "").strip() for r in records}
    by_id = {str(c.pk): c for c in Customer.objects.filter(pk__in=[k for k in keys if k.isdigit()])}
    by_name = {c.name: c for c in Customer.objects.filter(name__in=keys)}
    customers = {k: by_id.get(k) or by_name.get(k) for k in keys}
    prices, subscriptions, contexts = _lookups(list(customers.values()), now=now)
    job = BulkJob(name=name.strip()[:200] or "CSV upload", reason=reason.strip()[:300], created_by=actor, created_at=now)
    rows = []
    for line, record in enumerate(records, start=2):
        seats_text = (record.get("seats") or "").strip()
        source = {k: (record.get(k) or "").strip() for k in CSV_COLUMNS}
        if seats_text and not seats_text.isdigit():
            row = ScheduledChange(job=job, line_number=line, source=source, status=ScheduledChange.Status.INVALID,
                                  result_code="bad_seats", message=f"seats {seats_text!r} is not a whole number.",
                                  created_by=actor, created_at=now, reason=job.reason)
        else:
            target = Target(product=source["product"], plan=source["plan"], interval=source["interval"],
                            seats=int(seats_text) if seats_text else None, effective=source["effective_date"])
            row = _row(job=job, line=line, source=source, customer=customers.get(source["customer"]), target=target,
                       prices=prices, subscriptions=subscriptions, contexts=contexts, now=now, actor=actor)
        rows.append(row)
    return _job_save(job=job, rows=rows, actor=actor, now=now)


def bulk_job_from_selection(*, name: str, reason: str, customers: list[Customer], product: str, plan: str,
                            interval: str, seats: int | None, effective: str, actor: AbstractBaseUser,
                            now: datetime) -> BulkJob:
    """A job from customers selected in admin, all moved to the same plan (seats kept unless given)."""
    if not reason.strip():
        raise ChangeRefused("reason_required", "Say why these changes are made (it is audited).")
    prices, subscriptions, contexts = _lookups(customers, now=now)
    job = BulkJob(name=name.strip()[:200] or "Selection", reason=reason.strip()[:300], created_by=actor, created_at=now)
    target = Target(product=product, plan=plan, interval=interval, seats=seats, effective=effective)
    rows = [_row(job=job, line=None, source={"customer": str(c.pk)}, customer=c, target=target, prices=prices,
                 subscriptions=subscriptions, contexts=contexts, now=now, actor=actor) for c in customers]
    return _job_save(job=job, rows=rows, actor=actor, now=now)


def bulk_job_confirm(*, job: BulkJob, actor: AbstractBaseUser, now: datetime) -> BulkJob:
    """Preview → running: valid rows become scheduled changes; workers take them in chunks after commit."""
    with transaction.atomic():
        job = BulkJob.objects.select_for_update().get(pk=job.pk)
        if job.status != BulkJob.Status.PREVIEW:
            raise ChangeConflict("not_in_preview", f"This job is {job.get_status_display().lower()}.")
        job.rows.filter(status=ScheduledChange.Status.PREVIEW, effective_at__lt=now).update(effective_at=now)
        job.rows.filter(status=ScheduledChange.Status.PREVIEW).update(status=ScheduledChange.Status.SCHEDULED)
        job.status = BulkJob.Status.RUNNING
        job.confirmed_by = actor
        job.confirmed_at = now
        job.save()
        audit_event_record(actor=actor, action="bulk_job.confirmed", target=job, now=now, reason_code="bulk_change",
                           message=job.reason)
        transaction.on_commit(lambda: _enqueue_job(job.pk))
    bulk_job_finish_if_done(job_id=job.pk, now=now)
    return job


def _enqueue_job(job_id: int) -> None:
    from billing.tasks import run_bulk_job

    run_bulk_job.delay(job_id)


def chunks_by_subscription(rows: list[tuple[int, int]], size: int = CHUNK_SIZE) -> list[list[int]]:
    """Row ids in chunks, keeping each subscription's rows together (applied in date order by one worker)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for row_id, subscription_id in rows:
        groups[subscription_id].append(row_id)
    chunks, current = [], []
    for ids in groups.values():
        current.extend(ids)
        if len(current) >= size:
            chunks.append(current)
            current = []
    if current:
        chunks.append(current)
    return chunks


def bulk_job_dispatch(*, job_id: int, now: datetime) -> int:
    """Hand the job's due rows to the workers; rows dated later are left to the sweep."""
    from billing.tasks import apply_scheduled_changes

    rows = list(ScheduledChange.objects.filter(job_id=job_id, status__in=ScheduledChange.OPEN, effective_at__lte=now)
                .order_by("effective_at", "id").values_list("pk", "subscription_id"))
    for chunk in chunks_by_subscription(rows):
        apply_scheduled_changes.delay(chunk, job_id)
    return len(rows)


def bulk_job_progress(*, job: BulkJob) -> dict[str, int]:
    counts = dict(job.rows.values_list("status").annotate(n=Count("id")).order_by())
    total = sum(counts.values())
    finished = sum(n for status, n in counts.items() if status in ScheduledChange.DONE)
    return {"total": total, "finished": finished, "percent": round(100 * finished / total) if total else 100,
            **{status: counts.get(status, 0) for status in ScheduledChange.Status.values}}


def bulk_job_finish_if_done(*, job_id: int, now: datetime) -> bool:
    if ScheduledChange.objects.filter(job_id=job_id).exclude(status__in=ScheduledChange.DONE).exists():
        return False
    return bool(BulkJob.objects.filter(pk=job_id, status=BulkJob.Status.RUNNING)
                .update(status=BulkJob.Status.DONE, finished_at=now))


def bulk_job_results_csv(*, job: BulkJob) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["line", "customer", "customer_id", "subscription_id", "target", "seats", "effective_at", "status",
                     "result_code", "amount_due_preview", "currency", "plan_change_id", "message"])
    for row in job.rows.select_related("customer", "to_price__plan__product").order_by("line_number", "id"):
        writer.writerow([row.line_number or "", row.customer.name if row.customer else row.source.get("customer", ""),
                         row.customer_id or "", row.subscription_id or "", str(row.to_price.plan) if row.to_price else "",
                         row.to_quantity or "", row.effective_at.isoformat() if row.effective_at else "",
                         row.get_status_display(), row.result_code,
                         format_amount(row.preview_amount_due, row.currency) if row.preview_amount_due is not None else "",
                         row.currency, row.plan_change_id or "", row.message])
    return out.getvalue()


def bulk_job_cancel(*, job: BulkJob, actor: AbstractBaseUser, now: datetime) -> BulkJob:
    with transaction.atomic():
        job = BulkJob.objects.select_for_update().get(pk=job.pk)
        if job.status != BulkJob.Status.PREVIEW:
            raise ChangeConflict("not_in_preview", "Only a job still in preview can be discarded.")
        job.rows.update(status=ScheduledChange.Status.CANCELLED, finished_at=now)
        job.status = BulkJob.Status.CANCELLED
        job.finished_at = now
        job.save()
        audit_event_record(actor=actor, action="bulk_job.cancelled", target=job, now=now, reason_code="bulk_change")
    return job
