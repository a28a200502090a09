"""Win-back exactly once with real Celery workers: two worker processes over Redis against the test database; the
beat task delivered five times and every email batch delivered twice still send one email per customer and step."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import Notification
from billing.tests.celery_worker import wait_for
from billing.tests.factories import CustomerFactory, subscription_setup
from billing.tests.test_renewal_worker import Worker, sent_emails
from config.celery import app
from conftest import requires_postgres, requires_redis
from retention.models import WinBackEnrolment, WinBackSend
from retention.tests.winback_support import campaigns

pytestmark = [requires_postgres, requires_redis, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
CUSTOMERS = 40


@pytest.fixture
def workers(tmp_path):
    app.control.purge()
    was_eager = app.conf.task_always_eager
    running = [Worker(tmp_path / f"var-{name}", tmp_path / "emails", name=f"winback-{name}") for name in ("a", "b")]
    app.conf.task_always_eager = False
    try:
        yield running
    finally:
        app.conf.task_always_eager = was_eager
        outputs = [each.stop() for each in running]
    for output in outputs:
        assert "Traceback" not in output, output
        assert " ERROR/" not in output, output


def test_two_workers_and_a_thrice_delivered_sweep_send_one_email_per_customer_and_step(workers, tmp_path):
    from retention.tasks import send_winback_emails, winback_sweep

    s = subscription_setup()
    c = campaigns()
    now = timezone.now()
    customers = [CustomerFactory(language="de" if i % 2 else "en") for i in range(CUSTOMERS)]
    # half are due for the first step, half (further along) for the second
    WinBackEnrolment.objects.bulk_create([
        WinBackEnrolment(customer=customer, campaign=c.cancel, subscription=s.subscription,
                         triggered_at=now - timedelta(days=31), next_position=1 + i % 2,
                         next_send_at=now - timedelta(days=1), created_at=now) for i, customer in enumerate(customers)])

    for _ in range(3):  # beat delivering the sweep again (a retry, a second beat, a redelivery)
        winback_sweep.delay()

    def all_sent():
        return Notification.objects.filter(kind="winback", status="sent").count() == CUSTOMERS
    wait_for(all_sent, worker=workers[0], what="the due emails sent", seconds=120)
    for _ in range(2):  # and twice more, once all were sent: nothing is due
        winback_sweep.delay()
    # every batch delivered twice more, to both workers: each email is claimed, so nothing is sent again
    ids = list(Notification.objects.filter(kind="winback").values_list("pk", flat=True))
    for start in range(0, len(ids), 10):
        send_winback_emails.delay(ids[start:start + 10])
        send_winback_emails.delay(ids[start:start + 10])

    def batches_done():
        return sum(len(w.succeeded("retention.tasks.send_winback_emails")) for w in workers) >= 2 * len(ids) // 10 + 1
    wait_for(batches_done, worker=workers[0], what="the redelivered batches processed", seconds=120)

    messages = sent_emails(tmp_path / "emails")
    per_step = {}
    for message in messages:
        key = message["X-Crossgrade-Notification"]
        per_step[key] = per_step.get(key, 0) + 1
    assert len(messages) == CUSTOMERS, [m["To"] for m in messages]
    assert set(per_step.values()) == {1} and len(per_step) == CUSTOMERS
    assert WinBackSend.objects.count() == CUSTOMERS
    assert WinBackEnrolment.objects.filter(status="finished").count() == CUSTOMERS // 2
    assert WinBackEnrolment.objects.filter(status="active", next_position=2).count() == CUSTOMERS // 2
    assert all(m["List-Unsubscribe"] and m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
               for m in messages)
    assert all(m.is_multipart() for m in messages)  # text and HTML
    sweeps = [value for w in workers for value in w.succeeded("retention.tasks.winback_sweep").values()]
    assert len(sweeps) == 5
