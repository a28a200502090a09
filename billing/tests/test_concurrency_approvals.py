"""Races on PostgreSQL with real threads: approvers deciding the last step at once apply the change exactly once."""

from __future__ import annotations

from collections import Counter

import pytest
from django.utils import timezone

from billing.errors import ApprovalRefused
from billing.models import (
    Amendment,
    ApprovalRequest,
    AuditEvent,
    Invoice,
    LocalPayment,
    PlanChange,
    Subscription,
)
from billing.services.approvals import approval_request_decide
from billing.services.contracts import amendment_save_draft, amendment_submit
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.factories import BERLIN, approval_policy, approver, contract_for, live_subscription_setup
from billing.tests.test_concurrency import run_in_threads
from conftest import requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]
APPROVERS = 6


def held_change(*, in_order: bool = True):
    s = live_subscription_setup()
    contract_for(s, budget_cap="50.00")
    approval_policy("Over the budget cap", "budget_cap", "Sales managers", "Finance", in_order=in_order)
    now = timezone.now()
    q = quote_create(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=s.pro_month, quantity=5,
                     now=now, actor=s.owner)
    change = quote_accept(quote=q, actor=s.owner, now=now)
    assert change.status == "pending_approval"
    return s, change, change.approval_requests.get()


def decide(request, position, user):
    step = request.steps.get(position=position)
    return approval_request_decide(request_id=request.pk, step_id=step.pk, actor=user, approve=True, comment="",
                                   now=timezone.now())


def assert_applied_once(s, change) -> None:
    change.refresh_from_db()
    assert change.status == "applied"
    assert LocalPayment.objects.count() == 1
    assert PlanChange.objects.filter(status="applied").count() == 1
    assert Subscription.objects.get(pk=s.subscription.pk).version == 2
    assert AuditEvent.objects.filter(action="plan_change.applied").count() == 1
    assert AuditEvent.objects.filter(action="approval.approved").count() == 1


def test_finance_approvers_racing_for_the_last_step_apply_the_held_change_once():
    s, change, request = held_change()
    decide(request, 1, approver("maria", "Sales managers"))
    finance = [approver(f"finance{i}", "Finance") for i in range(APPROVERS)]
    results = run_in_threads(APPROVERS, lambda i: decide(request, 2, finance[i]))
    approved = [r for r in results if isinstance(r, ApprovalRequest)]
    refused = [r for r in results if isinstance(r, ApprovalRefused)]
    assert len(approved) == 1 and len(refused) == APPROVERS - 1, results
    assert {r.code for r in refused} <= {"step_decided", "approval_not_pending"}
    assert ApprovalRequest.objects.get(pk=request.pk).status == "approved"
    assert request.steps.get(position=2).decided_by in finance
    assert_applied_once(s, change)


def test_the_last_two_steps_in_any_order_decided_at_once_apply_it_once():
    s, change, request = held_change(in_order=False)
    people = [approver("maria", "Sales managers"), approver("fiona", "Finance")]
    results = run_in_threads(2, lambda i: decide(request, i + 1, people[i]))
    assert all(isinstance(r, ApprovalRequest) for r in results), results
    assert Counter(r.status for r in results) == {"pending": 1, "approved": 1}
    assert_applied_once(s, change)


def test_approvers_racing_for_an_amendment_s_last_step_apply_it_once():
    s = live_subscription_setup()
    contract = contract_for(s)
    approval_policy("Every amendment", "any", "Sales managers", "Finance", applies_to="amendments")
    staff = approver("drafter")
    now = timezone.now()
    amendment = amendment_save_draft(amendment=Amendment(contract=contract, kind="add_seats", seats=3,
                                                         effective_on=now.astimezone(BERLIN).date()),
                                     actor=staff, now=now)
    request = amendment_submit(amendment_id=amendment.pk, actor=staff, now=now).approval_requests.get()
    decide(request, 1, approver("maria", "Sales managers"))
    finance = [approver(f"finance{i}", "Finance") for i in range(APPROVERS)]
    results = run_in_threads(APPROVERS, lambda i: decide(request, 2, finance[i]))
    assert Counter(type(r).__name__ for r in results) == {"ApprovalRequest": 1, "ApprovalRefused": APPROVERS - 1}
    amendment.refresh_from_db()
    assert amendment.status == "applied"
    assert PlanChange.objects.filter(status="applied").count() == 1
    assert Invoice.objects.filter(plan_change=amendment.plan_change).count() == 1
    assert Subscription.objects.get(pk=s.subscription.pk).quantity == 8
