"""Two staff members rolling back the same change at the same instant, on PostgreSQL with real threads."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.errors import BillingError
from billing.models import BalanceEntry, CashRefund, Invoice, LocalRefund, PlanChange, PlanChangeRollback, Subscription
from billing.selectors import customer_balance
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.services.rollbacks import plan_change_rollback
from billing.tests.factories import live_subscription_setup, staff_user
from billing.tests.test_concurrency import run_in_threads
from conftest import requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("refund", [False, True])
def test_two_staff_rolling_back_one_change_make_one_rollback_and_one_credit_note(refund):
    s = live_subscription_setup()
    now = timezone.now()
    quote = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=now, actor=s.owner)
    change = quote_accept(quote=quote, actor=s.owner, now=now)
    assert change.status == "applied"
    staff = [staff_user("rollback_plan_change", "refund_credit_note", username=f"staff{i}") for i in range(2)]

    def roll_back(index: int):
        return plan_change_rollback(plan_change=PlanChange.objects.get(pk=change.pk), actor=staff[index],
                                    reason=f"ticket {index}", refund=refund, now=now + timedelta(minutes=1))

    results = run_in_threads(2, roll_back)
    refused = [r for r in results if isinstance(r, BillingError)]
    assert len(refused) == 1 and refused[0].code == "already_rolled_back", results
    assert Counter(type(r).__name__ for r in results) == Counter({"RollbackOutcome": 1, "ChangeRefused": 1})
    assert PlanChangeRollback.objects.count() == 1
    assert Invoice.objects.filter(kind="credit_note", billing_reason="rollback").count() == 1
    assert BalanceEntry.objects.filter(kind="rollback_credit").count() == 1
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    assert (subscription.price, subscription.version) == (s.basic_month, 3)
    if refund:
        assert CashRefund.objects.count() == 1 and LocalRefund.objects.count() == 1
        assert customer_balance(customer=s.customer, currency="EUR") == 0
    else:
        assert customer_balance(customer=s.customer, currency="EUR") == change.total > Decimal(0)
