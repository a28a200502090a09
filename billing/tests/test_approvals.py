"""Approvals: policies as data, the budget-cap hold, every separation-of-duties refusal, decisions and their emails,
expiry, the held change completing (or failing with its reason) once approved, and amendments approved."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.errors import ApprovalRefused, ChangeConflict, ChangeRefused
from billing.models import (
    Amendment,
    ApprovalPolicy,
    ApprovalRequest,
    ApprovalStep,
    AuditEvent,
    ChangeRule,
    LocalPayment,
    Notification,
    PlanChange,
    Subscription,
)
from billing.selectors_approvals import approval_requests_waiting_for
from billing.services.approvals import (
    ChangeFacts,
    approval_hold_for,
    approval_request_decide,
    approval_requests_expire,
    approved_change_proceed,
    approved_changes_dispatch,
)
from billing.services.contracts import amendment_save_draft, amendment_submit
from billing.services.notifications import notification_render
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.factories import (
    BERLIN,
    MID_JANUARY,
    PERIOD_END,
    approval_policy,
    approver,
    contract_for,
    live_subscription_setup,
    subscription_setup,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _english():
    """Refusals are in the reader's language: these tests read English (another test may have left German on)."""
    from django.utils import translation

    with translation.override("en"):
        yield



@pytest.fixture
def setup():
    return subscription_setup()


@pytest.fixture
def people():
    """maria (sales manager), fiona and frank (finance), both (in both roles), nobody (no role)."""
    return {
        "maria": approver("maria", "Sales managers"),
        "fiona": approver("fiona", "Finance"),
        "frank": approver("frank", "Finance"),
        "both": approver("both", "Sales managers", "Finance"),
        "nobody": approver("nobody"),
    }


@pytest.fixture
def live():
    """The period around the real clock (10 days used, 20 to go): the task that completes an approved change reads
    the clock, as every task does."""
    return live_subscription_setup()


@pytest.fixture
def held(live, people):
    """Basic × 5 → Pro × 5 at the contract's prices (27.00 → 45.00), about 71.40 for the 20 days left, above the
    contract's budget cap of 50.00: held for a sales manager, then finance."""
    contract_for(live, budget_cap="50.00")
    approval_policy("Over the budget cap", "budget_cap", "Sales managers", "Finance")
    change = accept(live, live.pro_month, now=timezone.now())
    assert change.status == "pending_approval" and change.amount_due > 50
    return change


def later(change, **delta):
    """An instant after the change was held (default: two hours later)."""
    return change.created_at + (timedelta(**delta) if delta else timedelta(hours=2))


def fresh(s):
    return Subscription.objects.get(pk=s.subscription.pk)


def accept(s, price, quantity=5, now=MID_JANUARY):
    q = quote_create(subscription=fresh(s), to_price=price, quantity=quantity, now=now, actor=s.owner)
    return quote_accept(quote=q, actor=s.owner, now=now)


def request_of(change) -> ApprovalRequest:
    return change.approval_requests.get()


def step(request, position) -> ApprovalStep:
    return request.steps.get(position=position)


def decide(request, position, user, approve=True, comment="", now=None):
    now = now or request.created_at + timedelta(minutes=5)
    return approval_request_decide(request_id=request.pk, step_id=step(request, position).pk, actor=user,
                                   approve=approve, comment=comment, now=now)


# --- policies as data ------------------------------------------------------------------------------------------


def facts(**values) -> ChangeFacts:
    return ChangeFacts(**{"subject": "customer_changes", "currency": "EUR", "amount_due": Decimal("100.00"), **values})


def test_each_trigger_matches_only_its_changes(people):
    amount = approval_policy("Over 1000 EUR", "amount_due_above", "Finance", threshold="1000", currency="EUR")
    discount = approval_policy("Discount over 20 %", "discount_above", "Sales managers", threshold="20")
    override = approval_policy("Price overrides", "price_override", "Sales managers", applies_to="amendments")
    term = approval_policy("Term changes", "term_change", "Sales managers", applies_to="amendments")
    cap = approval_policy("Budget cap", "budget_cap", "Sales managers")
    rule = approval_policy("Rule says so", "change_rule", "Sales managers", applies_to="customer_changes")
    assert approval_hold_for(facts=facts()) is None
    cases = [
        (facts(amount_due=Decimal("1000.01")), amount), (facts(discount_percent=Decimal("20.5")), discount),
        (facts(subject="amendments", price_override=True), override),
        (facts(subject="amendments", term_change=True), term),
        (facts(budget_cap=Decimal("99.99")), cap), (facts(rule_requires_approval=True), rule),
    ]
    for change, policy in cases:
        assert approval_hold_for(facts=change).policies == [policy], policy.name
    # thresholds are strict, amounts are per currency, and applies_to is respected
    assert approval_hold_for(facts=facts(amount_due=Decimal("1000.00"))) is None
    assert approval_hold_for(facts=facts(currency="USD", amount_due=Decimal("5000"))) is None
    assert approval_hold_for(facts=facts(discount_percent=Decimal("20"))) is None
    assert approval_hold_for(facts=facts(price_override=True, term_change=True)) is None  # customer changes
    assert approval_hold_for(facts=facts(budget_cap=Decimal("100.00"))) is None
    ApprovalPolicy.objects.filter(pk=amount.pk).update(is_active=False)
    assert approval_hold_for(facts=facts(amount_due=Decimal("5000"))) is None


def test_matching_policies_add_their_roles_once_in_order_and_the_shortest_deadline_wins(people):
    approval_policy("Big amounts", "amount_due_above", "Finance", "Sales managers", threshold="10", currency="EUR",
                    in_order=False, hours=48, position=20)
    approval_policy("Everything", "any", "Sales managers", "Legal", in_order=True, hours=96, position=10)
    hold = approval_hold_for(facts=facts())
    assert [name for _id, name in hold.steps] == ["Sales managers", "Legal", "Finance"]
    assert hold.in_order and hold.decide_within == timedelta(hours=48)
    assert [reason["policy"] for reason in hold.reasons] == ["Everything", "Big amounts"]


def test_a_hold_nobody_can_approve_is_refused_rather_than_charged(setup):
    contract_for(setup, budget_cap="50.00")
    with pytest.raises(ChangeRefused) as refusal:
        accept(setup, setup.pro_month)
    assert refusal.value.code == "approval_not_configured"
    assert not PlanChange.objects.exists() and not LocalPayment.objects.exists()


# --- the budget-cap hold --------------------------------------------------------------------------------------


def test_a_change_over_the_budget_cap_is_held_not_charged(live, held):
    assert not LocalPayment.objects.exists()
    subscription = fresh(live)
    assert (subscription.price_id, subscription.version) == (live.basic_month.pk, 1)
    request = request_of(held)
    assert (request.status, request.amount_due, request.requested_by) == ("pending", held.amount_due, live.owner)
    assert [(s.position, s.group_name, s.status) for s in request.steps.all()] == [
        (1, "Sales managers", "pending"), (2, "Finance", "pending")]
    assert request.reasons[0]["trigger"] == "budget_cap"
    assert request.expires_at == later(held, hours=72)
    assert AuditEvent.objects.filter(action="plan_change.held", object_id=str(held.pk)).exists()
    with pytest.raises(ChangeConflict) as again:  # the same quote cannot be accepted twice
        quote_accept(quote=held.quote, actor=live.owner, now=held.created_at)
    assert again.value.code == "quote_already_accepted"


def test_a_change_within_the_budget_cap_is_charged_as_usual(setup, people):
    contract_for(setup, budget_cap="60.00")
    approval_policy("Over the budget cap", "budget_cap", "Sales managers")
    assert accept(setup, setup.pro_month).status == "applied"
    assert LocalPayment.objects.count() == 1


def test_a_change_rule_requiring_approval_holds_the_change(setup, people):
    ChangeRule.objects.filter(name="Upgrades").update(requires_approval=True)
    approval_policy("Rules", "change_rule", "Sales managers")
    change = accept(setup, setup.pro_month)
    assert change.status == "pending_approval" and not LocalPayment.objects.exists()


# --- separation of duties: every refusal, and that it changes nothing ---------------------------------------------


def refused(request, position, user, code, **kwargs):
    with pytest.raises(ApprovalRefused) as refusal:
        decide(request, position, user, **kwargs)
    assert refusal.value.code == code, refusal.value.detail
    return refusal.value


def test_the_requester_can_never_approve_their_own_request(live, held, people):
    # even as a sales manager with the permission
    from billing.tests.factories import approver as make_approver

    owner = make_approver(live.owner.username, "Sales managers")
    refusal = refused(request_of(held), 1, owner, "own_request")
    assert refusal.detail == "You asked for this change: someone else must approve it."
    assert refusal.status == 403


def test_the_drafter_and_the_submitter_of_an_amendment_cannot_approve_it(setup, people):
    contract_for(setup)
    approval_policy("Price overrides", "price_override", "Sales managers", "Finance", applies_to="amendments")
    amendment = amendment_save_draft(amendment=Amendment(
        contract=setup.subscription.contracts.get(), kind="change_price", unit_amount=Decimal("25.00"),
        effective_on=date(2026, 1, 16)), actor=people["maria"], now=MID_JANUARY)
    amendment = amendment_submit(amendment_id=amendment.pk, actor=people["fiona"], now=MID_JANUARY)
    request = amendment.approval_requests.get()
    refused(request, 1, people["maria"], "own_request")  # drafted it
    decide(request, 1, people["both"])
    refused(request, 2, people["fiona"], "own_request")  # submitted it


def test_one_person_cannot_fill_two_steps(held, people):
    request = request_of(held)
    decide(request, 1, people["both"])
    refusal = refused(request, 2, people["both"], "one_step_per_person")
    assert "a different person must decide this one" in refusal.detail
    # the schema says so too
    with pytest.raises(IntegrityError), transaction.atomic():
        ApprovalStep.objects.filter(pk=step(request, 2).pk).update(decided_by=people["both"])


def test_an_approver_needs_the_role_of_the_step(held, people):
    refusal = refused(request_of(held), 1, people["fiona"], "not_in_role")
    assert refusal.detail == "Step 1 is for Sales managers, and you are not one of them."
    refused(request_of(held), 1, people["nobody"], "not_in_role")


def test_an_approver_needs_the_permission(held, people):
    from django.contrib.auth.models import Permission

    maria = people["maria"]
    maria.user_permissions.remove(Permission.objects.get(codename="decide_approvalrequest"))
    maria = type(maria).objects.get(pk=maria.pk)
    refused(request_of(held), 1, maria, "permission_required")
    people["fiona"].is_staff = False  # not staff any more: no back office, no decisions
    refused(request_of(held), 1, people["fiona"], "permission_required")


def test_steps_in_order_wait_for_the_earlier_ones(held, people):
    refusal = refused(request_of(held), 2, people["fiona"], "step_out_of_order")
    assert refusal.detail == "Steps are decided in order: step 1 (Sales managers) comes first."


def test_steps_in_any_order_do_not_wait(setup, people):
    contract_for(setup, budget_cap="50.00")
    approval_policy("Over the budget cap", "budget_cap", "Sales managers", "Finance", in_order=False)
    change = accept(setup, setup.pro_month)
    request = request_of(change)
    decide(request, 2, people["fiona"])
    assert decide(request, 1, people["maria"]).status == "approved"


def test_a_decided_step_a_decided_request_and_an_expired_request_are_refused(held, people):
    request = request_of(held)
    decide(request, 1, people["maria"])
    refused(request, 1, people["both"], "step_decided")
    refused(request, 2, people["fiona"], "approval_expired", now=later(held, hours=72))
    decide(request, 2, people["fiona"], approve=False, comment="Over budget this quarter")
    refused(request, 2, people["frank"], "approval_not_pending")


def test_a_rejection_needs_a_comment(held, people):
    refusal = refused(request_of(held), 1, people["maria"], "comment_required", approve=False, comment="  ")
    assert refusal.status == 422


def test_refusals_change_nothing(held, people):
    request = request_of(held)
    for user in (people["fiona"], people["nobody"]):
        with pytest.raises(ApprovalRefused):
            decide(request, 1, user)
    assert set(request.steps.values_list("status", flat=True)) == {"pending"}
    assert ApprovalRequest.objects.get(pk=request.pk).status == "pending"
    assert PlanChange.objects.get(pk=held.pk).status == "pending_approval"
    assert not AuditEvent.objects.filter(action__startswith="approval.step").exists()


def test_waiting_for_me_lists_exactly_what_each_approver_may_decide_now(live, held, people):
    now = later(held)
    waiting = {name: list(approval_requests_waiting_for(user=user, now=now)) for name, user in people.items()}
    request = request_of(held)
    assert waiting["maria"] == [request] and waiting["both"] == [request]
    assert waiting["fiona"] == [] and waiting["frank"] == [] and waiting["nobody"] == []  # finance waits its turn
    decide(request, 1, people["both"])
    assert list(approval_requests_waiting_for(user=people["fiona"], now=now)) == [request]
    assert list(approval_requests_waiting_for(user=people["both"], now=now)) == []  # decided a step already
    assert list(approval_requests_waiting_for(user=people["maria"], now=now)) == []
    assert list(approval_requests_waiting_for(user=people["fiona"], now=later(held, hours=73))) == []


# --- decisions ------------------------------------------------------------------------------------------------------


def test_approved_in_order_the_held_change_is_charged_and_applied_once(live, held, people,
                                                                       django_capture_on_commit_callbacks):
    request = request_of(held)
    decide(request, 1, people["maria"])
    assert not Notification.objects.exists()  # nothing decided yet
    with django_capture_on_commit_callbacks(execute=True):
        decided = decide(request, 2, people["fiona"])
    assert decided.status == "approved"
    change = PlanChange.objects.get(pk=held.pk)
    assert change.status == "applied" and change.amount_due == held.amount_due  # exactly as quoted
    payment = LocalPayment.objects.get()
    assert payment.amount_minor == held.amount_due * 100 and change.payment_reference == payment.reference
    assert (fresh(live).price_id, fresh(live).version) == (live.pro_month.pk, 2)
    # the task delivered again changes nothing
    assert approved_change_proceed(plan_change_id=change.pk, now=later(held)).status == "applied"
    assert LocalPayment.objects.count() == 1 and approved_changes_dispatch(now=later(held, hours=3)) == 0
    emails = {n.key: n for n in Notification.objects.all()}
    assert set(emails) == {f"approval-{request.pk}-approved", f"approval-{request.pk}-approved-requester"}
    assert emails[f"approval-{request.pk}-approved"].to_email == live.customer.email
    assert emails[f"approval-{request.pk}-approved-requester"].to_email == live.owner.email
    actions = list(AuditEvent.objects.filter(object_type="billing.ApprovalRequest").values_list("action", flat=True))
    assert sorted(actions) == ["approval.approved", "approval.requested", "approval.step_approved",
                               "approval.step_approved"]


def test_rejected_the_change_fails_with_the_comment_and_nothing_is_charged(live, held, people):
    request = request_of(held)
    decide(request, 1, people["maria"], approve=False, comment="Please talk to your account manager first.")
    change = PlanChange.objects.get(pk=held.pk)
    assert (change.status, change.failure_code) == ("failed", "approval_rejected")
    assert request_of(held).status == "rejected" and not LocalPayment.objects.exists()
    assert fresh(live).version == 1
    email = Notification.objects.get(key=f"approval-{request.pk}-rejected")
    message = notification_render(notification=email)
    assert message.subject == "Not approved: your change to Analytics Pro"
    assert "Please talk to your account manager first." in message.body
    assert "Nothing was charged and nothing changed." in message.body


def test_decision_emails_in_german_for_a_german_customer(live, held, people):
    live.customer.language = "de"
    live.customer.save()
    request = request_of(held)
    decide(request, 1, people["maria"], approve=False, comment="Bitte erst mit dem Vertrieb sprechen.")
    message = notification_render(notification=Notification.objects.get(key=f"approval-{request.pk}-rejected"))
    assert message.subject == "Nicht genehmigt: Ihre Änderung zu Analytics Pro"
    assert "Es wurde nichts berechnet und nichts geändert." in message.body
    assert "Bitte erst mit dem Vertrieb sprechen." in message.alternatives[0][0]


def test_an_undecided_request_expires_with_its_change_and_everyone_is_told(live, held, people):
    request = request_of(held)
    assert approval_requests_expire(now=later(held, hours=71)) == 0
    assert approval_requests_expire(now=later(held, hours=72)) == 1
    assert approval_requests_expire(now=later(held, hours=73)) == 0  # once
    change = PlanChange.objects.get(pk=held.pk)
    assert (request_of(held).status, change.status, change.failure_code) == ("expired", "failed", "approval_expired")
    keys = set(Notification.objects.values_list("key", flat=True))
    assert keys == {f"approval-{request.pk}-expired", f"approval-{request.pk}-expired-requester"}
    message = notification_render(notification=Notification.objects.get(key=f"approval-{request.pk}-expired"))
    assert message.subject == "Not decided in time: your change to Analytics Pro"


def test_approved_after_the_subscription_changed_it_fails_and_the_customer_is_told(live, held, people,
                                                                                   django_capture_on_commit_callbacks):
    # meanwhile the owner adds a seat (within the cap): the held change was priced for the old version
    assert accept(live, live.basic_month, quantity=6, now=timezone.now()).status == "applied"
    request = request_of(held)
    decide(request, 1, people["maria"])
    with django_capture_on_commit_callbacks(execute=True):
        decide(request, 2, people["fiona"])
    change = PlanChange.objects.get(pk=held.pk)
    assert (change.status, change.failure_code) == ("failed", "subscription_changed")
    assert LocalPayment.objects.count() == 1  # only the seat
    failed = Notification.objects.get(key=f"plan-change-{change.pk}-failed-after-approval")
    message = notification_render(notification=failed)
    assert message.subject == "Your approved change could not be made"
    assert "The subscription changed while the change waited for approval." in message.body


def test_approved_after_the_period_ended_it_fails(live, held, people):
    request = request_of(held)
    decide(request, 1, people["maria"])
    decide(request, 2, people["fiona"])
    period_end = fresh(live).current_period_end
    change = approved_change_proceed(plan_change_id=held.pk, now=period_end + timedelta(minutes=1))
    assert (change.status, change.failure_code) == ("failed", "period_ended")
    assert not LocalPayment.objects.exists()


def test_a_declined_card_after_approval_fails_the_change_and_tells_the_customer(live, held, people):
    live.customer.payment_methods.update(reference="pm_card_chargeDeclined")
    PlanChange.objects.filter(pk=held.pk).update(payment_method_reference="pm_card_chargeDeclined")
    request = request_of(held)
    decide(request, 1, people["maria"])
    decide(request, 2, people["fiona"])
    change = approved_change_proceed(plan_change_id=held.pk, now=later(held))
    assert change.status == "failed" and fresh(live).version == 1
    assert Notification.objects.filter(key=f"plan-change-{change.pk}-failed-after-approval").exists()


def test_a_proceed_before_the_final_approval_does_nothing(live, held, people):
    decide(request_of(held), 1, people["maria"])
    assert approved_change_proceed(plan_change_id=held.pk, now=later(held)).status == "pending_approval"
    assert not LocalPayment.objects.exists()


def test_the_sweep_hands_over_approved_changes_the_broker_missed(live, held, people):
    request = request_of(held)
    decide(request, 1, people["maria"])
    decide(request, 2, people["fiona"])  # on_commit never ran here: as if the broker had been down
    assert PlanChange.objects.get(pk=held.pk).status == "pending_approval"
    assert approved_changes_dispatch(now=later(held, minutes=5)) == 0  # decided just now
    assert approved_changes_dispatch(now=later(held, minutes=8)) == 1  # eager in tests: it runs now
    assert PlanChange.objects.get(pk=held.pk).status == "applied"


def test_a_held_period_end_change_is_scheduled_once_approved(setup, people):
    Subscription.objects.filter(pk=setup.subscription.pk).update(price=setup.pro_month)
    ChangeRule.objects.filter(name="Downgrades").update(requires_approval=True)
    approval_policy("Rules", "change_rule", "Sales managers")
    change = accept(setup, setup.basic_month)
    assert change.status == "pending_approval"
    decide(request_of(change), 1, people["maria"])
    change = approved_change_proceed(plan_change_id=change.pk, now=later(change))
    assert (change.status, change.effective_at) == ("scheduled", PERIOD_END)


# --- amendments ----------------------------------------------------------------------------------------------------


@pytest.fixture
def amendment(setup, people):
    contract_for(setup)
    approval_policy("Price overrides", "price_override", "Sales managers", "Finance", applies_to="amendments",
                    hours=7 * 24)
    draft = amendment_save_draft(amendment=Amendment(
        contract=setup.subscription.contracts.get(), kind="change_price", unit_amount=Decimal("29.00"),
        effective_on=date(2026, 1, 20)), actor=people["nobody"], now=MID_JANUARY)
    submitted = amendment_submit(amendment_id=draft.pk, actor=people["nobody"], now=MID_JANUARY)
    assert submitted.status == "pending_approval"
    return submitted


def test_an_approved_amendment_applies_at_its_date(setup, amendment, people):
    from billing.services.contracts import amendments_apply_due

    request = amendment.approval_requests.get()
    decide(request, 1, people["maria"])
    decide(request, 2, people["fiona"])
    amendment.refresh_from_db()
    assert amendment.status == "approved"  # 16 Jan: its date (20 Jan) has not come
    assert amendments_apply_due(now=datetime(2026, 1, 20, 0, 1, tzinfo=BERLIN)) == 1
    amendment.refresh_from_db()
    assert amendment.status == "applied" and amendment.plan_change.reason_code == amendment.reason_code
    emails = set(Notification.objects.values_list("key", "to_email"))
    assert (f"approval-{request.pk}-approved", setup.customer.email) in emails
    assert (f"approval-{request.pk}-approved-requester", "nobody@example.com") in emails
    staff_email = notification_render(notification=Notification.objects.get(
        key=f"approval-{request.pk}-approved-requester"))
    assert staff_email.subject == f"Approved: amendment {amendment.pk} to contract ENT-2026-001"
    assert f"/admin/billing/amendment/{amendment.pk}/change/" in staff_email.body
    assert "because you asked for this change" in staff_email.alternatives[0][0]


def test_a_rejected_amendment_is_closed_with_the_comment(setup, amendment, people):
    request = amendment.approval_requests.get()
    decide(request, 1, people["maria"], approve=False, comment="Not below 30.00 this year.")
    amendment.refresh_from_db()
    assert (amendment.status, amendment.failure_message) == ("rejected", "Not below 30.00 this year.")
    assert not PlanChange.objects.exists()


def test_an_amendment_approved_on_its_date_applies_with_the_last_approval(setup, amendment, people):
    request = amendment.approval_requests.get()
    on_the_day = datetime(2026, 1, 20, 10, 0, tzinfo=BERLIN)
    decide(request, 1, people["maria"], now=on_the_day)
    decide(request, 2, people["fiona"], now=on_the_day)
    amendment.refresh_from_db()
    assert amendment.status == "applied" and amendment.plan_change.effective_at == datetime(2026, 1, 20, tzinfo=BERLIN)


def test_the_api_answers_202_for_a_change_held_for_approval(live, people):
    from django.urls import reverse
    from rest_framework.test import APIClient

    contract_for(live, budget_cap="50.00")
    approval_policy("Over the budget cap", "budget_cap", "Sales managers")
    quote = quote_create(subscription=fresh(live), to_price=live.pro_month, quantity=5, now=timezone.now(),
                         actor=live.owner)
    client = APIClient()
    client.force_authenticate(live.owner)
    response = client.post(reverse("api-quote-accept", args=[quote.pk]), HTTP_IDEMPOTENCY_KEY="held-1")
    assert response.status_code == 202 and response.json()["status"] == "pending_approval"
    assert not LocalPayment.objects.exists()
    again = client.post(reverse("api-quote-accept", args=[quote.pk]), HTTP_IDEMPOTENCY_KEY="held-1")
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
