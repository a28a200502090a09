"""Races on PostgreSQL with real threads: the email sweep in several workers at once queues one email per
subscription and period; "Not now" clicked ten times at once is one dismissal; the offer's quote confirmed from
ten requests at once is charged and its discount applied once."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import AuditEvent, LocalPayment, Notification, PlanChange, Subscription
from billing.tests.factories import BERLIN, live_subscription_setup, subscription_setup
from billing.tests.test_concurrency import THREADS, accept_over_api, run_in_threads
from conftest import requires_postgres
from retention.models import RenewalOffer, RenewalOfferDismissal
from retention.services.renewal_offers import (
    renewal_offer_dismiss,
    renewal_offer_emails_queue,
    renewal_offer_quote_create,
)

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


def test_two_workers_sweeping_at_once_queue_each_email_once():
    s = subscription_setup()
    RenewalOffer.objects.create(name="Annual", window_days=14, email_after_days=3)
    now = datetime(2026, 1, 25, tzinfo=BERLIN)
    results = run_in_threads(THREADS, lambda _i: renewal_offer_emails_queue(now=now))
    assert all(isinstance(r, int) for r in results), results
    assert sum(results) == 1
    assert Notification.objects.filter(kind="renewal_offer", customer=s.customer).count() == 1
    assert AuditEvent.objects.filter(action="renewal_offer.emailed").count() == 1


def test_not_now_clicked_at_once_is_one_dismissal():
    s = subscription_setup()
    RenewalOffer.objects.create(name="Annual", window_days=14)
    now = datetime(2026, 1, 20, tzinfo=BERLIN)

    def click(_i):
        sub = Subscription.objects.select_related("customer", "price__plan").get(pk=s.subscription.pk)
        return renewal_offer_dismiss(subscription=sub, actor=s.owner, now=now).pk

    results = run_in_threads(THREADS, click)
    assert all(isinstance(r, int) for r in results), results
    assert len(set(results)) == 1 and RenewalOfferDismissal.objects.count() == 1
    assert AuditEvent.objects.filter(action="renewal_offer.dismissed").count() == 1


def test_the_offer_quote_confirmed_at_once_is_charged_and_discounted_once():
    s = live_subscription_setup()
    now = timezone.now()
    Subscription.objects.filter(pk=s.subscription.pk).update(current_period_start=now - timedelta(days=25),
                                                             current_period_end=now + timedelta(days=5))
    RenewalOffer.objects.create(name="Annual", window_days=14, discount_percent=Decimal("10"))
    sub = Subscription.objects.select_related("customer", "price__plan__product").get(pk=s.subscription.pk)
    quote = renewal_offer_quote_create(subscription=sub, actor=s.owner, now=now)
    results = run_in_threads(THREADS, lambda i: accept_over_api(s.owner, quote.pk, f"key-{i}"))
    assert all(isinstance(r, tuple) for r in results), results
    applied = PlanChange.objects.filter(status=PlanChange.Status.APPLIED)
    assert applied.count() == 1 and applied.get().amount_due == quote.amount_due
    assert LocalPayment.objects.filter(status="succeeded").count() == 1
    assert AuditEvent.objects.filter(action="subscription.discount_set").count() == 1
    after = Subscription.objects.get(pk=s.subscription.pk)
    assert (after.discount_percent, after.discount_periods_left, after.price.interval) == (Decimal("10"), 0, "year")
