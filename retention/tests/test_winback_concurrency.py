"""Races on PostgreSQL with real threads: two sweeps at once queue each email once; a double-clicked offer
restarts one subscription; a double-clicked unsubscribe opts out once."""

from __future__ import annotations

from collections import Counter

import pytest
from django.utils import timezone

from billing.models import AuditEvent, Invoice, Notification, Subscription
from billing.tests.factories import PERIOD_END, subscription_setup
from billing.tests.test_concurrency import run_in_threads
from conftest import requires_postgres
from retention.models import EmailOptOut, WinBackEnrolment, WinBackSend
from retention.services.winback import winback_offer_accept, winback_opt_out, winback_sweep
from retention.tests.winback_support import DAY, campaigns, cancel_at_period_end

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def no_sending(monkeypatch):
    """Queue only: the emails themselves are not what these races are about."""
    monkeypatch.setattr("retention.services.winback._enqueue", lambda ids: None)


def many_enrolled(count: int):
    s = subscription_setup()
    c = campaigns()
    cancel_at_period_end(s)
    enrolment = WinBackEnrolment.objects.get()
    WinBackEnrolment.objects.bulk_create([
        WinBackEnrolment(customer=s.customer, campaign=c.cancel, plan_change=None, subscription=s.subscription,
                         triggered_at=PERIOD_END, next_position=1, next_send_at=enrolment.next_send_at,
                         created_at=PERIOD_END) for _ in range(count - 1)])
    return s, c


def test_eight_sweeps_at_once_queue_each_step_once(no_sending):
    s, c = many_enrolled(300)
    due = PERIOD_END + 7 * DAY
    results = run_in_threads(8, lambda i: winback_sweep(now=due, chunk_size=25))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r["queued"] for r in results) == 300
    assert Notification.objects.filter(kind="winback").count() == 300
    assert WinBackSend.objects.count() == 300
    assert set(Counter(WinBackSend.objects.values_list("enrolment_id", flat=True)).values()) == {1}
    assert WinBackEnrolment.objects.filter(next_position=2).count() == 300
    # and again, all at once: nothing more is due
    results = run_in_threads(4, lambda i: winback_sweep(now=due, chunk_size=25))
    assert sum(r["queued"] for r in results) == 0 and Notification.objects.count() == 300


def test_ten_clicks_on_accept_restart_one_subscription():
    s = subscription_setup()
    c = campaigns()
    cancel_at_period_end(s)
    enrolment = WinBackEnrolment.objects.get()
    now = timezone.now()
    results = run_in_threads(10, lambda i: winback_offer_accept(enrolment_id=enrolment.pk, step_id=c.second.pk,
                                                                actor=s.owner, now=now))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert Subscription.objects.filter(customer=s.customer, status="active").count() == 1
    assert Invoice.objects.filter(billing_reason="renewal", subscription__status="active").count() == 1
    assert AuditEvent.objects.filter(action="winback.offer_accepted").count() == 1


def test_ten_unsubscribe_clicks_opt_out_once():
    s = subscription_setup()
    results = run_in_threads(10, lambda i: winback_opt_out(customer_id=s.customer.pk, source="link",
                                                           now=timezone.now()))
    assert sorted(results) == [False] * 9 + [True]
    assert EmailOptOut.objects.count() == 1
    assert AuditEvent.objects.filter(action="winback.opted_out").count() == 1
