"""The portal with a contract: the contract's prices on the plans page, the commitment refusal naming the end date,
and a change over the budget cap: "submitted for approval" → approved → applied (or not approved, with the
comment), in English and German."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from billing.models import LocalPayment, PlanChange
from billing.services.approvals import approval_request_decide
from billing.tests.factories import approval_policy, approver, contract_for, live_subscription_setup
from portal.tests.test_views import (
    confirm,
    eur,
    html,
    logged_in,
    messages_of,
    plans_url,
    quote_via_portal,
    request_review,
    state,
    url,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(client):
    """The owner's Basic × 5 under a contract (Basic 27.00, Pro 45.00 a seat; at least 5 seats; budget cap 50.00);
    changes over the cap wait for a sales manager, then finance."""
    s = live_subscription_setup()
    contract_for(s, budget_cap="50.00")
    approval_policy("Over the budget cap", "budget_cap", "Sales managers", "Finance")
    logged_in(client, s.owner)
    return s


def decide_all(change, *, approve=True, comment=""):
    request = change.approval_requests.get()
    now = timezone.now()
    for step, name in zip(request.steps.order_by("position"), ("maria", "fiona"), strict=True):
        user = approver(name, step.group_name)
        request = approval_request_decide(request_id=request.pk, step_id=step.pk, actor=user, approve=approve,
                                          comment=comment, now=now)
        if not approve:
            break
    return request


def test_the_plans_page_shows_the_contract_prices(client, setup):
    page = html(client.get(plans_url(setup)))
    assert f"{eur('45.00')}</span>" in page and "your contract price" in page


def test_going_below_the_commitment_is_refused_with_the_end_date(client, setup):
    contract_end = setup.subscription.contracts.get().term_end.astimezone(timezone.get_current_timezone())
    response = request_review(client, setup, plan=setup.basic, seats=4)
    assert response.url == plans_url(setup)
    [message] = messages_of(client.get(response.url))
    assert message.startswith("Your contract commits you to at least 5 seats until ")
    assert str(contract_end.year) in message


def test_the_review_page_says_the_change_needs_approval(client, setup):
    quote = quote_via_portal(client, setup, plan=setup.pro)
    page = html(client.get(url("review", setup.customer.pk, quote.pk)))
    assert 'data-testid="needs-approval"' in page and "Submit for approval" in page
    assert "Confirm and pay" not in page


def test_submitted_for_approval_then_approved_then_applied(client, setup, django_capture_on_commit_callbacks):
    quote = quote_via_portal(client, setup, plan=setup.pro)
    before = state(setup)
    response = confirm(client, setup, quote)
    change = PlanChange.objects.get()
    assert response.url == url("change", setup.customer.pk, change.pk)
    page = html(client.get(response.url))
    assert "<h1>Submitted for approval</h1>" in page
    assert "Your change to Pro × 5 needs approval by our team." in page
    assert f'data-testid="amount-held">{eur(quote.amount_due)}<' in page
    assert state(setup) == before and not LocalPayment.objects.exists()
    assert "Waiting for approval" in html(client.get(url("billing", setup.customer.pk)))
    with django_capture_on_commit_callbacks(execute=True):
        decide_all(change)
    page = html(client.get(url("change", setup.customer.pk, change.pk)))
    assert "<h1>You are on Pro now</h1>" in page
    assert f'data-testid="amount-paid">{eur(quote.amount_due)}<' in page
    assert LocalPayment.objects.get().amount_minor == quote.amount_due * 100


def test_not_approved_shows_the_comment_and_changes_nothing(client, setup):
    quote = quote_via_portal(client, setup, plan=setup.pro)
    before = state(setup)
    confirm(client, setup, quote)
    change = PlanChange.objects.get()
    decide_all(change, approve=False, comment="Please ask your procurement team to raise the cap first.")
    page = html(client.get(url("change", setup.customer.pk, change.pk)))
    assert "<h1>Your change was not approved</h1>" in page
    assert "Comment: Please ask your procurement team to raise the cap first." in page
    assert "Nothing has changed and nothing was charged." in page
    assert state(setup) == before


def test_an_approved_change_that_can_no_longer_be_made_says_why(client, setup):
    from billing.services.approvals import approved_change_proceed

    quote = quote_via_portal(client, setup, plan=setup.pro)
    confirm(client, setup, quote)
    change = PlanChange.objects.get()
    decide_all(change)
    approved_change_proceed(plan_change_id=change.pk, now=change.quote.subscription.current_period_end
                            + timedelta(minutes=1))
    page = html(client.get(url("change", setup.customer.pk, change.pk)))
    assert "<h1>Your approved change could not be made</h1>" in page
    assert "The billing period the change was priced for has ended." in page


def test_submitted_for_approval_in_german(client, setup):
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "de"
    quote = quote_via_portal(client, setup, plan=setup.pro)
    review = html(client.get(url("review", setup.customer.pk, quote.pk)))
    assert "Zur Genehmigung einreichen" in review
    confirm(client, setup, quote)
    page = html(client.get(url("change", setup.customer.pk, PlanChange.objects.get().pk)))
    assert "<h1>Zur Genehmigung eingereicht</h1>" in page
    assert "Ihre Änderung zu Pro × 5 muss von unserem Team genehmigt werden." in page
    assert "Es wurde noch nichts berechnet." in page
