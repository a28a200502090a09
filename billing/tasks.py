"""Thin Celery wrappers: parse, read the clock once, call one service. Every task is idempotent."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from billing.errors import ChangeConflict
from billing.models import PlanChange, ScheduledChange
from billing.services.bulk_jobs import bulk_job_dispatch, bulk_job_finish_if_done
from billing.services.collection import (
    invoice_collect,
    invoices_collect_due,
    payment_attempt_for_gateway_payment,
    payment_attempt_refresh,
)
from billing.services.invoice_pdfs import invoice_pdf_render, invoices_pdf_missing_enqueue
from billing.services.notifications import notification_send, notifications_pending_enqueue
from billing.services.plan_changes import plan_change_refresh_payment, plan_changes_reconcile
from billing.services.renewals import period_ends_dispatch, period_ends_run
from billing.services.scheduled_changes import scheduled_changes_run


@shared_task(name="billing.tasks.apply_due_changes")
def apply_due_changes() -> int:
    """The sweep (beat, every minute): hands what is due to the workers in chunks."""
    return period_ends_dispatch(now=timezone.now())


@shared_task(name="billing.tasks.apply_period_ends")
def apply_period_ends(subscription_ids: list[int], plan_change_ids: list[int]) -> int:
    return period_ends_run(subscription_ids=subscription_ids, plan_change_ids=plan_change_ids, now=timezone.now())


@shared_task(name="billing.tasks.collect_invoice")
def collect_invoice(invoice_id: int) -> str | None:
    attempt = invoice_collect(invoice_id=invoice_id, now=timezone.now())
    return attempt.status if attempt is not None else None


@shared_task(name="billing.tasks.collect_due_invoices")
def collect_due_invoices() -> int:
    """Beat: scheduled retries that are due, and attempts whose outcome was never recorded."""
    ids = invoices_collect_due(now=timezone.now())
    for invoice_id in ids:
        collect_invoice.delay(invoice_id)
    return len(ids)


@shared_task(name="billing.tasks.reconcile_pending_changes")
def reconcile_pending_changes() -> dict[str, int]:
    return plan_changes_reconcile(now=timezone.now())


@shared_task(name="billing.tasks.payment_updated", autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def payment_updated(*, gateway: str, reference: str) -> str | None:
    change = PlanChange.objects.filter(payment_gateway=gateway, payment_reference=reference).first()
    if change is None:
        attempt = payment_attempt_for_gateway_payment(gateway=gateway, reference=reference)
        if attempt is None:
            return None
        return payment_attempt_refresh(attempt=attempt, now=timezone.now()).status
    return plan_change_refresh_payment(plan_change=change, now=timezone.now()).status


@shared_task(name="billing.tasks.render_invoice_pdf", autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def render_invoice_pdf(invoice_id: int) -> str:
    return invoice_pdf_render(invoice_id=invoice_id).pdf.name


@shared_task(name="billing.tasks.render_missing_pdfs")
def render_missing_pdfs() -> int:
    """Catch-up sweep (beat): issued documents still without a PDF a minute after issue are sent to the
    workers again, e.g. after the broker was down when they committed."""
    return invoices_pdf_missing_enqueue(now=timezone.now())


@shared_task(name="billing.tasks.process_stripe_event", autoretry_for=(Exception,), retry_backoff=True,
             max_retries=8)
def process_stripe_event(event_id: str) -> str:
    from billing.webhooks import stripe_event_process

    return stripe_event_process(event_id=event_id, now=timezone.now())


@shared_task(name="billing.tasks.process_stuck_stripe_events")
def process_stuck_stripe_events() -> int:
    from billing.webhooks import stripe_events_unprocessed_enqueue

    return stripe_events_unprocessed_enqueue(now=timezone.now())


@shared_task(name="billing.tasks.send_notification", autoretry_for=(Exception,), retry_backoff=True, max_retries=7)
def send_notification(notification_id: int) -> bool:
    return notification_send(notification_id=notification_id, now=timezone.now())


@shared_task(name="billing.tasks.send_pending_notifications")
def send_pending_notifications() -> int:
    return notifications_pending_enqueue(now=timezone.now())


@shared_task(name="billing.tasks.apply_scheduled_changes")
def apply_scheduled_changes(scheduled_change_ids: list[int], job_id: int | None = None) -> int:
    """A chunk of staff changes (the sweep's or a bulk job's). Idempotent: a chunk delivered twice, or resumed
    after its worker was killed, applies each change once."""
    now = timezone.now()
    done = scheduled_changes_run(ids=scheduled_change_ids, now=now)
    # The sweep's chunks carry bulk-job rows too (dated later, or resumed after a worker died): finish those jobs.
    job_ids = {job_id} if job_id is not None else set()
    job_ids |= set(ScheduledChange.objects.filter(pk__in=scheduled_change_ids, job__isnull=False)
                   .values_list("job_id", flat=True).distinct())
    for each in sorted(job_ids):
        bulk_job_finish_if_done(job_id=each, now=now)
    return done


@shared_task(name="billing.tasks.run_bulk_job")
def run_bulk_job(job_id: int) -> int:
    return bulk_job_dispatch(job_id=job_id, now=timezone.now())


@shared_task(name="billing.tasks.proceed_approved_change", autoretry_for=(ChangeConflict,), retry_backoff=True,
             max_retries=8)
def proceed_approved_change(plan_change_id: int) -> str:
    """After the final approval: charge and apply the held change (idempotent; retried while another change of
    the customer waits for its payment)."""
    from billing.services.approvals import approved_change_proceed

    return approved_change_proceed(plan_change_id=plan_change_id, now=timezone.now()).status


@shared_task(name="billing.tasks.sweep_approvals")
def sweep_approvals() -> dict[str, int]:
    """Beat: expire undecided requests, hand approved held changes the broker missed to the workers, and apply
    approved amendments whose date has come. Each step is idempotent."""
    from billing.services.approvals import approval_requests_expire, approved_changes_dispatch
    from billing.services.contracts import amendments_apply_due

    now = timezone.now()
    return {"expired": approval_requests_expire(now=now), "dispatched": approved_changes_dispatch(now=now),
            "amendments_applied": amendments_apply_due(now=now)}
