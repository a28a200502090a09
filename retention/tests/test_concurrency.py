"""Races on PostgreSQL with real threads: a double click or two workers accept an offer once."""

from __future__ import annotations

from collections import Counter

import pytest
from django.utils import timezone

from billing.errors import BillingError
from billing.models import AuditEvent, PlanChange, Subscription
from billing.tests.test_concurrency import run_in_threads
from conftest import requires_postgres
from retention.models import OfferPresentation
from retention.services.exit_flow import exit_survey_start
from retention.services.offers import offer_accept, offer_present
from retention.tests.factories import exit_setup

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]
THREADS = 10


def shown(x, reason: str):
    now = timezone.now()
    subscription = Subscription.objects.select_related("customer", "price__plan__product").get(pk=x.subscription.pk)
    survey = exit_survey_start(subscription=subscription, flow="cancel", reason_code=reason, details="",
                               actor=x.s.owner, now=now)
    return offer_present(survey=survey, now=now)


def accept(x, presentation_id: int):
    try:
        return offer_accept(presentation=OfferPresentation.objects.get(pk=presentation_id), actor=x.s.owner,
                            now=timezone.now()).status
    except BillingError as error:
        return error.code


def test_ten_threads_accept_one_discount_once():
    x = exit_setup()
    presentation = shown(x, "too_expensive")[0]
    results = run_in_threads(THREADS, lambda i: accept(x, presentation.pk))
    assert results == ["accepted"] * THREADS, results
    assert AuditEvent.objects.filter(action="retention.offer_accepted").count() == 1
    subscription = Subscription.objects.get(pk=x.subscription.pk)
    assert subscription.next_discount_periods == 3 and subscription.version == x.subscription.version + 1


def test_ten_threads_accept_one_amount_off_discount_once():
    from decimal import Decimal

    from retention.models import RecurringCredit, RetentionOffer

    x = exit_setup()
    RetentionOffer.objects.filter(pk=x.discount.pk).update(percent_off=None, amount_off=Decimal("10.00"),
                                                           currency="EUR")
    presentation = shown(x, "too_expensive")[0]
    results = run_in_threads(THREADS, lambda i: accept(x, presentation.pk))
    assert results == ["accepted"] * THREADS, results
    assert AuditEvent.objects.filter(action="retention.offer_accepted").count() == 1
    assert RecurringCredit.objects.get().periods_left == 3
    assert Subscription.objects.get(pk=x.subscription.pk).version == x.subscription.version + 1


def test_ten_threads_accept_one_crossgrade_once():
    x = exit_setup()
    presentation = shown(x, "too_expensive")[1]
    results = run_in_threads(THREADS, lambda i: accept(x, presentation.pk))
    assert results == ["accepted"] * THREADS, results
    assert PlanChange.objects.count() == 1 and PlanChange.objects.get().status == "scheduled"
    assert AuditEvent.objects.filter(action="retention.offer_accepted").count() == 1


def test_two_offers_of_one_survey_raced_only_one_wins():
    x = exit_setup()
    discount, crossgrade = shown(x, "too_expensive")
    results = run_in_threads(THREADS, lambda i: accept(x, (discount, crossgrade)[i % 2].pk))
    counts = Counter(results)
    assert counts["accepted"] == THREADS // 2 and counts["offer_already_taken"] == THREADS // 2, results
    assert OfferPresentation.objects.filter(status="accepted").count() == 1
    assert AuditEvent.objects.filter(action="retention.offer_accepted").count() == 1
