"""Renewals end to end by a real Celery worker process over Redis, against the test database, on the real clock:
the beat task hands the due period ends to the workers, which renew, issue, collect, render the PDFs and send
the emails; a chunk task delivered twice bills nothing twice."""

from __future__ import annotations

import email
import io
from datetime import timedelta
from pathlib import Path

import pytest
from babel.numbers import format_currency
from django.utils import timezone
from pypdf import PdfReader

from billing.models import (
    Invoice,
    LocalPayment,
    Membership,
    Notification,
    PaymentAttempt,
    PaymentMethod,
    Subscription,
)
from billing.tests.celery_worker import CeleryWorker, wait_for
from billing.tests.factories import CustomerFactory, MembershipFactory, PaymentMethodFactory, subscription_setup
from config.celery import app
from conftest import requires_postgres, requires_redis

pytestmark = [requires_postgres, requires_redis, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RETRY_SCHEDULE_DAYS = [2, 4]  # the worker's, from its environment


class Worker(CeleryWorker):
    """The renewal tests' worker: the local gateway, emails to files, the retry schedule from its environment."""

    def __init__(self, var_dir: Path, email_dir: Path, *, name: str = "renewal-test") -> None:
        super().__init__(hostname=name, var_dir=var_dir, env={
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend", "EMAIL_FILE_PATH": str(email_dir),
            "PAYMENT_GATEWAY": "local", "RENEWAL_RETRY_SCHEDULE_DAYS": ",".join(map(str, RETRY_SCHEDULE_DAYS))})


@pytest.fixture
def worker(tmp_path, settings):
    """A worker whose media folder is this process's too; tasks sent from here go to it over Redis."""
    var_dir = tmp_path / "var"
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(var_dir / "media")}}}
    app.control.purge()  # our own Redis database: nothing left over from an interrupted run
    was_eager = app.conf.task_always_eager
    running = Worker(var_dir, tmp_path / "emails")
    app.conf.task_always_eager = False
    try:
        yield running
    finally:
        app.conf.task_always_eager = was_eager
        output = running.stop()
    assert "Traceback" not in output, output
    assert " ERROR/" not in output, output


def due_customers():
    """Two customers whose monthly period ended a minute ago: one card declines, the other pays.
    Returns (declining setup, paying subscription)."""
    declining = subscription_setup(payment_method="pm_card_chargeDeclined")
    paying_customer = CustomerFactory()
    MembershipFactory(customer=paying_customer, role=Membership.Role.OWNER)
    PaymentMethodFactory(customer=paying_customer, reference="pm_card_visa")
    paying = Subscription.objects.create(customer=paying_customer, product=declining.product,
                                         price=declining.pro_month, quantity=3,
                                         current_period_start=declining.subscription.current_period_start,
                                         current_period_end=declining.subscription.current_period_end)
    now = timezone.now()
    Subscription.objects.filter(pk__in=[declining.subscription.pk, paying.pk]).update(
        current_period_start=now - timedelta(days=30), current_period_end=now - timedelta(minutes=1))
    return declining, Subscription.objects.get(pk=paying.pk)


def renewal_invoices(subscription) -> list[Invoice]:
    return list(Invoice.objects.filter(subscription=subscription, billing_reason="renewal"))


def pdf_text(invoice: Invoice) -> str:
    with invoice.pdf.open("rb") as handle:
        return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(handle.read())).pages)


def sent_emails(email_dir: Path) -> list[email.message.Message]:
    """The file backend writes each message followed by a line of 79 dashes."""
    messages = []
    for path in sorted(email_dir.glob("*.log")):
        for chunk in path.read_bytes().split(b"\n" + b"-" * 79 + b"\n"):
            if chunk.strip():
                messages.append(email.message_from_bytes(chunk))
    return messages


def test_the_beat_task_renews_issues_collects_renders_and_emails_through_the_worker(worker, tmp_path):
    from billing.tasks import apply_due_changes, apply_period_ends

    declining, paying = due_customers()
    before = {s.pk: s.current_period_end for s in Subscription.objects.all()}

    apply_due_changes.delay()  # what beat sends every minute

    def both_settled():
        attempts = PaymentAttempt.objects.exclude(status__in=PaymentAttempt.OPEN)
        emails_sent = Notification.objects.filter(status="sent").count()
        pdfs = Invoice.objects.exclude(pdf="").count()
        return attempts.count() == 2 and emails_sent == 2 and pdfs == 2
    wait_for(both_settled, worker=worker, what="both renewals collected, both PDFs rendered, both emails sent")
    assert list(worker.succeeded("billing.tasks.apply_due_changes").values()) == ["2"]  # both due, dispatched

    # The paying customer: the next period, its invoice paid from the saved card, the receipt sent.
    paying.refresh_from_db()
    assert (paying.status, paying.version) == ("active", 2)
    assert paying.current_period_start == before[paying.pk] and paying.current_period_end > before[paying.pk]
    [paid] = renewal_invoices(paying)
    assert paid.status == "paid" and paid.amount_paid == paid.amount_due == paid.total > 0
    assert (paid.supply_start, paid.supply_end) == (paying.current_period_start, paying.current_period_end)
    payment = LocalPayment.objects.get(status="succeeded")
    assert payment.amount_minor == int(paid.total * 100) and payment.reference == paid.payment_reference
    assert Notification.objects.get(customer=paying.customer).kind == "renewal_paid"

    # The declining customer: the next period too, but past due with the next attempt planned.
    unpaid_sub = Subscription.objects.get(pk=declining.subscription.pk)
    assert (unpaid_sub.status, unpaid_sub.version) == ("past_due", 2)
    [unpaid] = renewal_invoices(unpaid_sub)
    attempt = unpaid.payment_attempts.get()
    assert (attempt.status, attempt.failure_code, attempt.off_session) == ("declined", "card_declined", True)
    assert unpaid.status == "issued" and unpaid.amount_paid == 0
    assert unpaid.next_payment_attempt_at == attempt.completed_at + timedelta(days=RETRY_SCHEDULE_DAYS[0])
    assert Notification.objects.get(customer=declining.customer).kind == "renewal_payment_failed"

    # Both PDFs, written by the worker where this process reads, from the issued snapshot.
    for invoice in (paid, unpaid):
        assert invoice.pdf.name == f"invoices/{invoice.number}.pdf"
        text = pdf_text(invoice)
        assert invoice.number in text
        assert format_currency(invoice.total, invoice.currency, locale="en") in text

    # Both emails, through the file backend configured in the worker's environment.
    messages = {m["X-Crossgrade-Notification"]: m for m in sent_emails(tmp_path / "emails")}
    assert set(messages) == {f"invoice-{paid.pk}-paid", f"invoice-{unpaid.pk}-attempt-1-failed"}
    receipt, failure = messages[f"invoice-{paid.pk}-paid"], messages[f"invoice-{unpaid.pk}-attempt-1-failed"]
    assert receipt["To"] == paying.customer.email and receipt["Subject"] == f"Receipt for invoice {paid.number}"
    assert failure["To"] == declining.customer.email
    assert failure["Subject"] == f"Payment failed for invoice {unpaid.number}"

    # The chunk task delivered twice more (a redelivery after a lost worker, an overlapping sweep): nothing twice.
    ids = [declining.subscription.pk, paying.pk]
    redeliveries = {apply_period_ends.delay(ids, []).id, apply_period_ends.delay(ids, []).id}
    done = wait_for(lambda: redeliveries <= set(worker.succeeded("billing.tasks.apply_period_ends")) and
                    worker.succeeded("billing.tasks.apply_period_ends"), worker=worker,
                    what="the worker runs both redeliveries")
    assert [done[task_id] for task_id in redeliveries] == ["0", "0"]
    for subscription in (paying, unpaid_sub):
        assert len(renewal_invoices(subscription)) == 1
        assert Subscription.objects.get(pk=subscription.pk).version == 2
    assert LocalPayment.objects.filter(status="succeeded").count() == 1
    assert LocalPayment.objects.count() == 2  # the paid one and the declined one
    assert PaymentAttempt.objects.count() == 2 and Notification.objects.count() == 2


def test_a_chunk_delivered_twice_while_due_renews_and_charges_once(worker, tmp_path):
    """The chunk task arrives twice at once (and beat dispatches the same ids): two worker processes race."""
    from billing.tasks import apply_due_changes, apply_period_ends

    declining, paying = due_customers()
    PaymentMethod.objects.filter(customer=declining.customer).update(reference="pm_card_visa")
    ids = [declining.subscription.pk, paying.pk]
    sent = [apply_period_ends.delay(ids, []).id, apply_period_ends.delay(ids, []).id]
    apply_due_changes.delay()

    def all_done():
        dispatched = list(worker.succeeded("billing.tasks.apply_due_changes").values())
        chunks = worker.succeeded("billing.tasks.apply_period_ends")
        # The sweep found them still due (then it sent a third chunk) or already renewed (then none).
        expected = 2 + (1 if dispatched and dispatched[0] != "0" else 0)
        return (dispatched and set(sent) <= set(chunks) and len(chunks) == expected
                and Notification.objects.filter(status="sent").count() == 2
                and Invoice.objects.exclude(pdf="").count() == 2)
    wait_for(all_done, worker=worker, what="every delivery done, invoices collected, rendered and emailed")
    renewed = sum(int(value) for value in worker.succeeded("billing.tasks.apply_period_ends").values())
    assert renewed == 2  # one period each, whichever delivery took it
    for subscription_id in ids:
        sub = Subscription.objects.get(pk=subscription_id)
        assert (sub.status, sub.version) == ("active", 2)
        [invoice] = renewal_invoices(sub)
        assert invoice.status == "paid" and invoice.payment_attempts.count() == 1
    assert LocalPayment.objects.filter(status="succeeded").count() == 2 == LocalPayment.objects.count()
    assert Notification.objects.filter(kind="renewal_paid").count() == 2
