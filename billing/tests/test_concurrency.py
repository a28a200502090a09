"""Races on PostgreSQL with real threads: double clicks, retries and racing workers charge once, apply once."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import AuditEvent, LocalPayment, PlanChange, Subscription
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.services.renewals import plan_changes_apply_due
from billing.tests.factories import PaymentMethodFactory, live_subscription_setup, subscription_setup
from conftest import requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]
THREADS = 10


def run_in_threads(count: int, work) -> list:
    """Start `count` threads at the same instant; return each one's result (or exception)."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def runner(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except Exception as exc:  # noqa: BLE001 - collected and asserted on by the test
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.fixture
def live_setup():
    return live_subscription_setup()


def accept_over_api(user, quote_id: int, key: str):
    client = APIClient()
    client.force_authenticate(user)
    response = client.post(reverse("api-quote-accept", args=[quote_id]), HTTP_IDEMPOTENCY_KEY=key)
    return response.status_code, response.json()


def assert_charged_and_applied_once(setup) -> None:
    assert LocalPayment.objects.count() == 1
    assert PlanChange.objects.filter(status="applied").count() == 1
    assert Subscription.objects.get(pk=setup.subscription.pk).version == 2
    assert AuditEvent.objects.filter(action="plan_change.applied").count() == 1


def test_ten_threads_accept_one_quote_with_one_key(live_setup):
    s = live_setup
    q = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=timezone.now(), actor=s.owner)
    results = run_in_threads(THREADS, lambda i: accept_over_api(s.owner, q.pk, "double-click"))
    assert not [r for r in results if isinstance(r, Exception)], results
    statuses = Counter(code for code, _ in results)
    assert set(statuses) <= {200, 409}, results
    applied = [body for code, body in results if code == 200]
    assert applied and all(body == applied[0] for body in applied)
    assert all(body["code"] == "idempotency_in_progress" for code, body in results if code == 409)
    assert_charged_and_applied_once(s)


def test_ten_threads_accept_one_quote_with_different_keys(live_setup):
    s = live_setup
    q = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=timezone.now(), actor=s.owner)
    results = run_in_threads(THREADS, lambda i: accept_over_api(s.owner, q.pk, f"key-{i}"))
    assert not [r for r in results if isinstance(r, Exception)], results
    codes = Counter(code for code, _ in results)
    assert codes[200] >= 1 and set(codes) <= {200, 409}, results
    assert {body["code"] for code, body in results if code == 409} <= {"quote_already_accepted",
                                                                        "change_in_progress"}
    assert_charged_and_applied_once(s)


def test_ten_threads_accept_ten_quotes_of_one_subscription(live_setup):
    s = live_setup
    now = timezone.now()
    quotes = [quote_create(subscription=s.subscription, to_price=price, quantity=qty, now=now, actor=s.owner)
              for price in (s.pro_month, s.business_month) for qty in (5, 6, 7, 8, 9)]
    results = run_in_threads(len(quotes), lambda i: accept_over_api(s.owner, quotes[i].pk, f"q-{i}"))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert Counter(code for code, _ in results)[200] == 1, results
    assert {body["code"] for code, body in results if code != 200} <= {"subscription_changed", "change_in_progress"}
    assert_charged_and_applied_once(s)


def test_two_sweeps_racing_apply_each_due_change_once():
    now = timezone.now()
    changes = []
    for _ in range(12):
        s = subscription_setup_for_sweep(now)
        changes.append(s)
    due = changes[0][1].effective_at + timedelta(seconds=1)
    results = run_in_threads(4, lambda i: plan_changes_apply_due(now=due))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(results) == 12
    assert PlanChange.objects.filter(status="applied").count() == 12
    assert AuditEvent.objects.filter(action="plan_change.applied").count() == 12
    assert set(Subscription.objects.values_list("version", flat=True)) == {2}


def subscription_setup_for_sweep(now):
    """A customer on Pro with a downgrade to Basic scheduled at period end (its own catalog)."""
    from billing.models import Product

    # The first customer brings the catalog and the change rules; the others reuse them.
    s = subscription_setup() if not Product.objects.filter(code="analytics").exists() else _another_customer()
    Subscription.objects.filter(pk=s.subscription.pk).update(
        price=s.pro_month, current_period_start=now - timedelta(days=10), current_period_end=now + timedelta(days=20))
    s.subscription.refresh_from_db()
    q = quote_create(subscription=s.subscription, to_price=s.basic_month, quantity=5, now=now, actor=s.owner)
    change = quote_accept(quote=q, actor=s.owner, now=now)
    assert change.status == "scheduled"
    return s, change


def _another_customer():
    from billing.models import Plan, Price
    from billing.tests.factories import CustomerFactory, MembershipFactory, Setup

    customer = CustomerFactory()
    owner = MembershipFactory(customer=customer, role="owner").user
    PaymentMethodFactory(customer=customer)
    plans = {p.code: p for p in Plan.objects.all()}
    prices = {(p.plan.code, p.interval): p for p in Price.objects.select_related("plan")}
    first = Subscription.objects.first()
    sub = Subscription.objects.create(customer=customer, product=first.product, price=prices[("basic", "month")],
                                      quantity=5, current_period_start=first.current_period_start,
                                      current_period_end=first.current_period_end)
    return Setup(customer, owner, owner, owner, first.product, plans["basic"], plans["pro"], plans["business"],
                 prices[("basic", "month")], prices[("pro", "month")], prices[("business", "month")],
                 prices[("pro", "year")], sub, None, None)


def test_customers_crossing_prices_in_opposite_directions_do_not_deadlock():
    """Locks cover our own rows only, never the shared catalog rows joined to them."""
    from billing.models import ChangeRule

    first = subscription_setup()
    ChangeRule.objects.filter(name="Downgrades").update(timing="now", charge="prorated", credit="prorated")
    now = timezone.now()
    customers = []
    for index in range(10):
        s = first if index == 0 else _another_customer()
        price = s.basic_month if index % 2 == 0 else s.pro_month
        Subscription.objects.filter(pk=s.subscription.pk).update(
            price=price, current_period_start=now - timedelta(days=10), current_period_end=now + timedelta(days=20))
        s.subscription.refresh_from_db()
        target = s.pro_month if index % 2 == 0 else s.basic_month
        customers.append((s, quote_create(subscription=s.subscription, to_price=target, quantity=5, now=now,
                                          actor=s.owner)))
    results = run_in_threads(len(customers), lambda i: quote_accept(quote=customers[i][1], actor=customers[i][0].owner,
                                                                     now=now).status)
    assert results == ["applied"] * len(customers), results


def test_concurrent_issuing_takes_unique_contiguous_numbers_and_leaves_no_gaps():
    """12 threads issue at once; every third one fails after taking its number and rolls back."""
    from billing.models import LegalEntity
    from billing.services.invoices import document_number_take

    subscription_setup()
    entity = LegalEntity.objects.get()

    def issue(index: int) -> str | None:
        from django.db import transaction

        try:
            with transaction.atomic():
                number = document_number_take(entity=entity, kind="invoice", year=2026)
                if index % 3 == 0:
                    raise RuntimeError("issuing failed after the number was taken")
                return number
        except RuntimeError:
            return None

    results = run_in_threads(12, issue)
    numbers = sorted(r for r in results if isinstance(r, str))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert numbers == [f"CG-2026-{n:06d}" for n in range(1, 9)]  # 8 committed, 1..8, no gap, no duplicate


def test_two_staff_refunding_one_credit_note_at_once_pay_once():
    from billing.models import CashRefund, LocalRefund
    from billing.selectors import customer_balance
    from billing.services.refunds import credit_note_refund
    from billing.tests.factories import MID_JANUARY, UserFactory, credit_note_setup

    s, note = credit_note_setup()
    staff = [UserFactory(), UserFactory()]
    results = run_in_threads(2, lambda i: credit_note_refund(credit_note=note, actor=staff[i], reason="race",
                                                             now=MID_JANUARY))
    assert LocalRefund.objects.count() == 1
    # The second staff member is refused, or (when the first refund is still pending) resumes that very refund.
    refunds = {r.pk for r in results if not isinstance(r, Exception)}
    assert len(refunds) == 1 and CashRefund.objects.count() == 1, results
    assert customer_balance(customer=s.customer, currency="EUR") == 0  # debited once


# --- renewals and dunning ------------------------------------------------------------------------------------------


def test_four_workers_renewing_one_due_subscription_bill_the_period_once():
    from billing.models import Invoice
    from billing.services.renewals import subscription_renew
    from billing.tests.factories import PERIOD_END

    s = subscription_setup()
    results = run_in_threads(4, lambda i: subscription_renew(subscription_id=s.subscription.pk, now=PERIOD_END))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(results) == [False, False, False, True]
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert (sub.current_period_start, sub.version) == (PERIOD_END, 2)
    assert sub.current_period_end == PERIOD_END.replace(month=3)
    assert Invoice.objects.filter(subscription=s.subscription, billing_reason="renewal").count() == 1
    assert AuditEvent.objects.filter(action="subscription.renewed").count() == 1
    # The winner's commit sent the invoice to collection (eager here): charged once.
    assert LocalPayment.objects.filter(status="succeeded").count() == 1


def test_a_renewal_applying_a_scheduled_change_locks_its_own_rows_not_the_shared_price_and_plan(monkeypatch):
    """While one worker holds a renewal step's locks, another can still lock the target price and plan: the step
    locks the customer's rows only (it used to lock the joined catalog rows too, serialising the sweep's workers)."""
    from django.db import OperationalError, connections

    from billing.models import Plan, Price
    from billing.services import renewals
    from billing.tests.factories import MID_JANUARY, PERIOD_END

    s = subscription_setup()
    Subscription.objects.filter(pk=s.subscription.pk).update(price=s.pro_month)
    s.subscription.refresh_from_db()
    change = quote_accept(quote=quote_create(subscription=s.subscription, to_price=s.basic_month, quantity=3,
                                             now=MID_JANUARY, actor=s.owner), actor=s.owner, now=MID_JANUARY)
    assert change.status == "scheduled"
    holding, release = threading.Event(), threading.Event()
    issue = renewals.invoice_for_renewal

    def invoice_while_held(**kwargs):
        holding.set()
        release.wait(timeout=30)
        return issue(**kwargs)

    monkeypatch.setattr(renewals, "invoice_for_renewal", invoice_while_held)
    worker = threading.Thread(target=lambda: (renewals.subscription_renew(subscription_id=s.subscription.pk,
                                                                          now=PERIOD_END), connection.close()))
    worker.start()
    try:
        assert holding.wait(timeout=30)
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("BEGIN")
                for model, statement, pk in (
                    (Price, "SELECT id FROM billing_price WHERE id = %s FOR UPDATE NOWAIT", s.basic_month.pk),
                    (Plan, "SELECT id FROM billing_plan WHERE id = %s FOR UPDATE NOWAIT", s.basic_month.plan_id),
                ):
                    try:
                        cursor.execute(statement, [pk])
                    except OperationalError as error:
                        pytest.fail(f"the renewal step locked the shared {model.__name__} row: {error}")
                cursor.execute("ROLLBACK")
        finally:
            other.close()
    finally:
        release.set()
        worker.join(timeout=30)
    change.refresh_from_db()
    assert change.status == "applied"


def declined_renewal(s):
    """Renew `s` with a declining card (the tasks after commit run eagerly): past due, invoice open, the
    failure email sent. Returns the invoice."""
    from billing.models import Invoice, PaymentMethod
    from billing.tests.factories import PERIOD_END

    PaymentMethod.objects.filter(customer=s.customer).update(reference="pm_card_chargeDeclined")
    assert plan_changes_apply_due(now=PERIOD_END) == 1
    invoice = Invoice.objects.get(subscription=s.subscription, billing_reason="renewal")
    assert invoice.status == "issued" and invoice.payment_attempts.get().status == "declined"
    assert Subscription.objects.get(pk=s.subscription.pk).status == "past_due"
    return invoice


def test_four_workers_collecting_one_due_invoice_charge_it_once():
    from billing.models import Invoice, Notification, PaymentAttempt, PaymentMethod
    from billing.services.collection import invoice_collect

    s = subscription_setup()
    invoice = declined_renewal(s)
    PaymentMethod.objects.filter(customer=s.customer).update(reference="pm_card_visa")  # a new card; retry due
    now = timezone.now()
    Invoice.objects.filter(pk=invoice.pk).update(next_payment_attempt_at=now - timedelta(seconds=1))
    results = run_in_threads(4, lambda i: invoice_collect(invoice_id=invoice.pk, now=now))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert {r.pk for r in results if r is not None} <= {invoice.payment_attempts.get(number=2).pk}
    assert LocalPayment.objects.filter(status="succeeded").count() == 1
    attempts = list(PaymentAttempt.objects.filter(invoice=invoice).values_list("number", "status"))
    assert attempts == [(1, "declined"), (2, "succeeded")]
    invoice.refresh_from_db()
    assert invoice.status == "paid" and invoice.amount_paid == invoice.amount_due
    assert Subscription.objects.get(pk=s.subscription.pk).status == "active"
    assert Notification.objects.filter(kind="renewal_paid").count() == 1
    assert AuditEvent.objects.filter(action="invoice.paid").count() == 1


def test_four_workers_sending_one_email_send_it_once():
    from django.core import mail

    from billing.models import Notification
    from billing.services.notifications import notification_send

    s = subscription_setup()
    declined_renewal(s)
    sent = Notification.objects.get(kind="renewal_payment_failed")
    assert sent.status == "sent" and len(mail.outbox) == 1  # sent after the renewal committed
    queued = Notification.objects.create(customer=s.customer, kind=sent.kind, key="race", to_email=sent.to_email,
                                         language="en", context=sent.context, created_at=timezone.now())
    mail.outbox.clear()
    now = timezone.now()
    results = run_in_threads(4, lambda i: notification_send(notification_id=queued.pk, now=now))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(results) == [False, False, False, True]
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [s.customer.email]
    queued.refresh_from_db()
    assert (queued.status, queued.attempts) == ("sent", 1)


# --- staff changes at a date and bulk jobs ---------------------------------------------------------------------------


def due_staff_changes(count: int) -> tuple[object, list[int]]:
    """`count` customers on Basic × 5, each with a staff upgrade to Pro × 6 due now. Returns (first setup, row ids)."""
    from billing.services.scheduled_changes import scheduled_change_create
    from billing.tests.factories import UserFactory

    first = live_subscription_setup()
    setups = [first, *(_another_customer() for _ in range(count - 1))]
    staff = UserFactory(is_staff=True)
    now = timezone.now()
    return first, [scheduled_change_create(subscription=s.subscription, to_price=first.pro_month, quantity=6,
                                           effective_at=now, actor=staff, reason="Upgrade agreed by phone", now=now).pk
                   for s in setups]


def test_four_workers_running_one_chunk_of_due_staff_changes_apply_and_charge_each_once():
    """Four workers on the same chunk (duplicate deliveries, overlapping sweeps). A worker may lose a deadlock on
    the way (see the xfail below): its row goes back to the sweep, which finishes it without doing anything twice."""
    from billing.models import Invoice, ScheduledChange
    from billing.services.scheduled_changes import scheduled_changes_run

    _first, ids = due_staff_changes(6)
    now = timezone.now()
    results = run_in_threads(4, lambda i: scheduled_changes_run(ids=ids, now=now))
    assert not [r for r in results if isinstance(r, Exception)], results

    def assert_each_applied_and_charged_once() -> None:
        for subscription in Subscription.objects.all():
            [change] = PlanChange.objects.filter(subscription=subscription)
            assert (change.status, change.to_quantity, subscription.version) == ("applied", 6, 2)
            assert LocalPayment.objects.filter(idempotency_key=change.payment_idempotency_key).count() == 1
            assert Invoice.objects.filter(plan_change=change).count() == 1
        assert LocalPayment.objects.filter(status="succeeded").count() == len(ids) == LocalPayment.objects.count()
        assert AuditEvent.objects.filter(action="plan_change.applied").count() == len(ids)

    assert_each_applied_and_charged_once()
    # The next sweep, once any backoff has passed: every row says what happened, and nothing happened twice.
    assert scheduled_changes_run(ids=ids, now=now + timedelta(minutes=2)) == len(ids)
    rows = ScheduledChange.objects.filter(pk__in=ids).select_related("plan_change")
    assert {(row.status, row.plan_change.subscription_id) for row in rows} == {
        ("applied", pk) for pk in Subscription.objects.values_list("pk", flat=True)}
    assert_each_applied_and_charged_once()
    assert AuditEvent.objects.filter(action="scheduled_change.applied").count() == len(ids)


def test_a_staff_change_resumed_while_the_customer_quotes_the_same_subscription_does_not_deadlock():
    """Orchestrated with a row lock, so the interleaving is the same on every run: the sweep resuming a staff change
    (its worker died after quoting) queues for the customer first, the customer's new quote commits second."""
    from billing.models import Customer, ScheduledChange
    from billing.services.scheduled_changes import scheduled_changes_run

    first, [row_id] = due_staff_changes(1)
    now = timezone.now()
    quote = quote_create(subscription=first.subscription, to_price=first.pro_month, quantity=6, now=now, actor=None)
    ScheduledChange.objects.filter(pk=row_id).update(status="processing", quote=quote, attempts=1)  # a worker died
    taken, release = threading.Event(), threading.Event()

    def hold_the_customer() -> None:  # another transaction of this customer (a payment being recorded, …)
        from django.db import transaction

        try:
            with transaction.atomic():
                Customer.objects.select_for_update().get(pk=first.customer.pk)
                taken.set()
                release.wait(30)
        finally:
            connection.close()

    def waiting() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock'")
            return cursor.fetchone()[0]

    def wait_until_waiting(count: int) -> None:
        for _ in range(300):
            if waiting() >= count:
                return
            threading.Event().wait(0.05)
        raise AssertionError(f"{count} session(s) never queued for the customer's lock")

    results: dict[str, object] = {}

    def run(name: str, work) -> threading.Thread:
        def target() -> None:
            try:
                results[name] = work()
            except Exception as exc:  # noqa: BLE001 - asserted on below
                results[name] = exc
            finally:
                connection.close()
        thread = threading.Thread(target=target)
        thread.start()
        return thread

    holder = threading.Thread(target=hold_the_customer)
    holder.start()
    assert taken.wait(10)
    sweep = run("sweep", lambda: scheduled_changes_run(ids=[row_id], now=now))
    wait_until_waiting(1)
    customer = run("customer", lambda: quote_create(subscription=Subscription.objects.get(pk=first.subscription.pk),
                                                    to_price=first.business_month, quantity=6, now=now,
                                                    actor=first.owner))
    wait_until_waiting(2)
    release.set()
    for thread in (holder, sweep, customer):
        thread.join(30)

    assert not isinstance(results["customer"], Exception), results  # the customer gets a quote
    row = ScheduledChange.objects.get(pk=row_id)
    assert (results["sweep"], row.status) == (1, "applied"), (results, row.message)
    assert LocalPayment.objects.filter(status="succeeded").count() == 1


def test_two_staff_confirming_one_bulk_job_at_once_run_it_once():
    from billing.errors import ChangeConflict
    from billing.models import BulkJob, Invoice, ScheduledChange
    from billing.services.bulk_jobs import bulk_job_confirm, bulk_job_from_selection
    from billing.tests.factories import UserFactory

    first = live_subscription_setup()
    setups = [first, *(_another_customer() for _ in range(3))]
    staff = [UserFactory(is_staff=True), UserFactory(is_staff=True)]
    now = timezone.now()
    job = bulk_job_from_selection(name="Everyone to Pro", reason="Repricing", customers=[s.customer for s in setups],
                                  product="analytics", plan="pro", interval="month", seats=None, effective="",
                                  actor=staff[0], now=now)
    results = run_in_threads(2, lambda i: bulk_job_confirm(job=job, actor=staff[i], now=now))
    [confirmed] = [r for r in results if isinstance(r, BulkJob)]
    [refused] = [r for r in results if isinstance(r, Exception)]
    assert isinstance(refused, ChangeConflict) and refused.code == "not_in_preview", results
    job.refresh_from_db()
    assert (job.status, job.confirmed_by) == ("done", staff[results.index(confirmed)])  # its rows ran eagerly
    assert AuditEvent.objects.filter(action="bulk_job.confirmed").count() == 1
    rows = list(ScheduledChange.objects.filter(job=job))
    assert len(rows) == len(setups) and {row.status for row in rows} == {"applied"}
    assert AuditEvent.objects.filter(action="scheduled_change.applied").count() == len(setups)
    assert PlanChange.objects.count() == len(setups) == Invoice.objects.count()
    assert LocalPayment.objects.filter(status="succeeded").count() == len(setups) == LocalPayment.objects.count()
