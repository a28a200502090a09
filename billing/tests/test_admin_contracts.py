"""Back office: contracts and their co-termed term, amendments with the live preview and submit, approval policies,
and the approval queue ("waiting for me") with approve and reject; every action checks its permission."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from billing.models import (
    Amendment,
    ApprovalRequest,
    AuditEvent,
    Contract,
    PlanChange,
    Subscription,
)
from billing.services.contracts import amendment_save_draft, amendment_submit
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.factories import (
    BERLIN,
    MID_JANUARY,
    UserFactory,
    approval_policy,
    approver,
    contract_for,
    live_subscription_setup,
    subscription_setup,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _english():
    from django.utils import translation

    with translation.override("en"):
        yield


@pytest.fixture
def setup():
    return subscription_setup()


@pytest.fixture
def live():
    return live_subscription_setup()


@pytest.fixture
def superuser():
    return UserFactory(username="boss", is_staff=True, is_superuser=True)


@pytest.fixture
def people():
    return {"maria": approver("maria", "Sales managers"), "fiona": approver("fiona", "Finance")}


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def held_change(s):
    """Basic → Pro at the contract's prices (about 71.40 for the 20 days left) over a budget cap of 50.00: held.
    On the real clock, as the admin decides on it."""
    contract_for(s, budget_cap="50.00")
    approval_policy("Over the budget cap", "budget_cap", "Sales managers", "Finance")
    now = timezone.now()
    q = quote_create(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=s.pro_month, quantity=5,
                     now=now, actor=s.owner)
    change = quote_accept(quote=q, actor=s.owner, now=now)
    assert change.status == "pending_approval"
    return change.approval_requests.get()


# --- contracts ---------------------------------------------------------------------------------------------------


def contract_post(s, **fields):
    return {"subscription": s.subscription.pk, "number": "ENT-7", "term_start_on": "2026-01-01", "term_periods": "12",
            "committed_seats": "5", "minimum_spend": "100.00", "purchase_order": "PO-1", "budget_cap": "",
            "renewal_term_months": "12", "renewal_notice_days": "60", "notes": "",
            "prices-TOTAL_FORMS": "1", "prices-INITIAL_FORMS": "0", "prices-MIN_NUM_FORMS": "0",
            "prices-MAX_NUM_FORMS": "1000", "prices-0-price": s.pro_month.pk, "prices-0-unit_amount": "45.00",
            "amendments-TOTAL_FORMS": "0", "amendments-INITIAL_FORMS": "0", "amendments-MIN_NUM_FORMS": "0",
            "amendments-MAX_NUM_FORMS": "0", **fields}


def test_staff_create_a_contract_co_termed_with_negotiated_prices_audited(client, setup, superuser):
    client.force_login(superuser)
    response = client.post(reverse("admin:billing_contract_add"), contract_post(setup))
    assert response.status_code == 302, response.content.decode()[:3000]
    contract = Contract.objects.get()
    assert (contract.term_start.isoformat(), contract.term_end.isoformat()) == ("2025-12-31T23:00:00+00:00",
                                                                              "2026-12-31T23:00:00+00:00")
    assert (contract.customer, contract.currency, contract.billing_interval) == (setup.customer, "EUR", "month")
    assert contract.negotiated_unit_amount(setup.pro_month) == Decimal("45.00")
    assert list(AuditEvent.objects.filter(object_type="billing.Contract").values_list("action", flat=True)
                .order_by("pk")) == ["contract.created", "contract.prices_set"]
    page = client.get(reverse("admin:billing_contract_change", args=[contract.pk])).content.decode()
    assert "Draft an amendment" in page


def test_a_term_off_the_billing_periods_or_a_foreign_price_is_refused(client, setup, superuser):
    client.force_login(superuser)
    response = client.post(reverse("admin:billing_contract_add"), contract_post(setup, term_start_on="2026-01-16"))
    assert response.status_code == 200 and "where a billing period of the subscription starts" in \
        response.content.decode()
    response = client.post(reverse("admin:billing_contract_add"),
                           contract_post(setup, **{"prices-0-price": setup.pro_year.pk}))
    assert response.status_code == 200 and "billed monthly, like the subscription" in response.content.decode()
    assert not Contract.objects.exists()


def test_the_term_and_the_negotiated_prices_are_frozen_once_created(client, setup, superuser):
    contract = contract_for(setup)
    client.force_login(superuser)
    page = client.get(reverse("admin:billing_contract_change", args=[contract.pk])).content.decode()
    assert 'name="term_start_on"' not in page and 'name="prices-0-unit_amount"' not in page
    assert 'name="budget_cap"' in page  # commitments and limits stay editable, audited


# --- amendments ----------------------------------------------------------------------------------------------------


def amendment_post(contract, **fields):
    return {"contract": contract.pk, "kind": "add_seats", "effective_on": "2026-01-16", "seats": "5",
            "to_price": "", "unit_amount": "", "extend_periods": "", "note": "More analysts", **fields}


def test_the_live_preview_prices_the_form_as_typed(client, setup, superuser):
    contract = contract_for(setup)
    client.force_login(superuser)
    url = reverse("admin:billing_amendment_preview")
    fragment = client.get(url, amendment_post(contract)).content.decode()
    assert 'data-testid="preview-amount-due">€82.91<' in fragment  # docs/contracts.md's worked example
    assert "€3,617.21" in fragment and "11 more periods" in fragment
    assert "No approval policy matches" in fragment
    refused = client.get(url, amendment_post(contract, effective_on="2026-02-03")).content.decode()
    assert "current billing period" in refused
    approval_policy("Every amendment", "any", "Sales managers", "Finance", applies_to="amendments")
    assert "Needs approval by Sales managers then Finance" in client.get(url, amendment_post(contract)).content.decode()


def test_the_preview_needs_the_amendment_permissions(client, setup):
    contract = contract_for(setup)
    client.force_login(UserFactory(username="viewer", is_staff=True))
    assert client.get(reverse("admin:billing_amendment_preview"), amendment_post(contract)).status_code == 403


def test_staff_draft_and_submit_an_amendment_in_admin(client, setup, superuser, people):
    contract = contract_for(setup)
    approval_policy("Every amendment", "any", "Sales managers", "Finance", applies_to="amendments", hours=24 * 30)
    client.force_login(superuser)
    response = client.post(reverse("admin:billing_amendment_add"), amendment_post(contract))
    assert response.status_code == 302
    amendment = Amendment.objects.get()
    assert (amendment.status, amendment.created_by) == ("draft", superuser)
    page = client.get(reverse("admin:billing_amendment_change", args=[amendment.pk])).content.decode()
    assert "Submit for approval" in page and "€82.91" in page
    response = client.post(reverse("admin:billing_amendment_submit", args=[amendment.pk]))
    amendment.refresh_from_db()
    assert amendment.status == "pending_approval" and amendment.amount_due == Decimal("82.91")
    assert "submitted: waiting for approval" in messages_of(response)[0]
    page = client.get(reverse("admin:billing_amendment_change", args=[amendment.pk])).content.decode()
    assert 'name="seats"' not in page and "Request " in page  # read-only now, linked to its request
    assert "Cancel this amendment" in page and 'name="_save"' not in page
    change_url = reverse("admin:billing_amendment_change", args=[amendment.pk])
    assert client.post(change_url, amendment_post(contract, seats="9")).status_code == 403
    assert Amendment.objects.get().seats == 5


def test_an_amendment_the_rules_refuse_is_not_saved(client, setup, superuser):
    contract = contract_for(setup)
    client.force_login(superuser)
    response = client.post(reverse("admin:billing_amendment_add"), amendment_post(contract, seats="200"))
    assert response.status_code == 200 and "allows 1 to 50 seats; this makes 205" in response.content.decode()
    assert not Amendment.objects.exists()


def test_submitting_needs_the_change_permission_and_a_post(client, setup, superuser):
    contract = contract_for(setup)
    amendment = amendment_save_draft(amendment=Amendment(contract=contract, kind="add_seats", seats=1,
                                                         effective_on=date(2026, 1, 16)), actor=superuser,
                                     now=MID_JANUARY)
    client.force_login(UserFactory(username="viewer", is_staff=True))
    assert client.post(reverse("admin:billing_amendment_submit", args=[amendment.pk])).status_code == 403
    client.force_login(superuser)
    assert client.get(reverse("admin:billing_amendment_submit", args=[amendment.pk])).status_code == 405
    assert Amendment.objects.get().status == "draft"


# --- the approval queue -----------------------------------------------------------------------------------------


def test_the_queue_shows_what_waits_for_me_by_default(client, live, people):
    request = held_change(live)
    changelist = reverse("admin:billing_approvalrequest_changelist")
    client.force_login(people["maria"])
    page = client.get(changelist).content.decode()
    assert f"/admin/billing/approvalrequest/{request.pk}/change/" in page and "Waiting for me" in page
    client.force_login(people["fiona"])  # finance's turn comes after the sales manager's
    assert f"/admin/billing/approvalrequest/{request.pk}/change/" not in client.get(changelist).content.decode()
    assert f"/admin/billing/approvalrequest/{request.pk}/change/" in \
        client.get(changelist, {"queue": "pending"}).content.decode()


def test_approve_then_reject_with_a_comment_from_admin(client, live, people):
    request = held_change(live)
    first, second = request.steps.order_by("position")
    decide = reverse("admin:billing_approvalrequest_decide", args=[request.pk])
    client.force_login(people["maria"])
    page = client.get(reverse("admin:billing_approvalrequest_change", args=[request.pk])).content.decode()
    assert "Your decision on step 1 (Sales managers)" in page and "Your decision on step 2" not in page
    assert "Step 2 is for Finance, and you are not one of them." in page  # why not step 2
    response = client.post(decide, {"step": first.pk, "decision": "approve", "comment": ""})
    assert response.status_code == 302 and messages_of(response) == ["Approved. The request is waiting for approval."]
    client.force_login(people["fiona"])
    response = client.post(decide, {"step": second.pk, "decision": "reject", "comment": ""})
    assert "Say why you reject it" in messages_of(response)[-1]
    assert ApprovalRequest.objects.get(pk=request.pk).status == "pending"
    client.post(decide, {"step": second.pk, "decision": "reject", "comment": "Budget frozen until Q2."})
    request.refresh_from_db()
    assert request.status == "rejected" and PlanChange.objects.get().failure_code == "approval_rejected"


def test_separation_of_duties_refusals_are_shown_and_change_nothing(client, live, people):
    request = held_change(live)
    first = request.steps.get(position=1)
    decide = reverse("admin:billing_approvalrequest_decide", args=[request.pk])
    client.force_login(people["fiona"])
    response = client.post(decide, {"step": first.pk, "decision": "approve"})
    assert messages_of(response) == ["Step 1 is for Sales managers, and you are not one of them."]
    client.force_login(UserFactory(username="support", is_staff=True))
    assert client.post(decide, {"step": first.pk, "decision": "approve"}).status_code == 403
    assert client.get(decide).status_code == 405
    assert set(request.steps.values_list("status", flat=True)) == {"pending"}


def test_approval_policies_are_edited_with_their_roles(client, superuser, people):
    approval_policy("Big amounts", "amount_due_above", "Finance", threshold="1000", currency="EUR")
    client.force_login(superuser)
    page = client.get(reverse("admin:billing_approvalpolicy_changelist")).content.decode()
    assert "Big amounts" in page and "Finance" in page


def test_every_new_admin_page_renders(client, live, superuser, people):
    request = held_change(live)
    contract = Contract.objects.get()
    now = timezone.now()
    amendment = amendment_save_draft(amendment=Amendment(contract=contract, kind="extend_term", extend_periods=12,
                                                         effective_on=now.astimezone(BERLIN).date()),
                                     actor=superuser, now=now)
    amendment_submit(amendment_id=amendment.pk, actor=superuser, now=now)
    client.force_login(superuser)
    for name, args in [("contract_changelist", []), ("contract_change", [contract.pk]), ("amendment_changelist", []),
                       ("amendment_add", []), ("amendment_change", [amendment.pk]),
                       ("approvalpolicy_changelist", []), ("approvalpolicy_add", []),
                       ("approvalrequest_changelist", []), ("approvalrequest_change", [request.pk])]:
        assert client.get(reverse(f"admin:billing_{name}", args=args)).status_code == 200, name
