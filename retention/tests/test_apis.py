"""The exit flow over the REST API: survey with offers, accept, decline → the usual quote accept, reactivate,
resume; clear 4xx errors, roles and other customers."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from billing.models import AuditEvent, Membership, PlanChange, Subscription
from billing.tests.factories import CustomerFactory, MembershipFactory
from retention.models import OfferPresentation
from retention.tests.factories import exit_setup

pytestmark = pytest.mark.django_db


@pytest.fixture
def x():
    return exit_setup()


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def start(client, x, **data):
    return client.post(reverse("api-exit-survey-create", args=[x.subscription.pk]),
                       {"flow": "cancel", "reason": "too_expensive"} | data, format="json")


def test_reasons_are_listed(x):
    response = api(x.s.owner).get(reverse("api-exit-reasons"))
    assert response.status_code == 200
    assert [r["code"] for r in response.json()][:2] == ["too_expensive", "missing_feature"]
    assert {"code": "other", "label": "Other", "asks_details": True} in response.json()


def test_survey_answers_with_the_offers_and_their_effects(x):
    response = start(api(x.s.owner), x)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["reason"] == "too_expensive" and body["flow"] == "cancel"
    assert [o["kind"] for o in body["offers"]] == ["discount", "crossgrade"]
    discount = body["offers"][0]
    assert discount["status"] == "shown" and discount["effect"]["pay"] == "208.25"
    assert discount["effect"]["instead_of"] == "297.50" and discount["currency"] == "EUR"
    again = api(x.s.owner).get(reverse("api-exit-survey", args=[body["id"]]))
    assert again.status_code == 200 and again.json()["offers"] == body["offers"]


@pytest.mark.parametrize(("data", "status", "code"), [
    ({"reason": "nope"}, 422, "invalid_reason"),
    ({"reason": "other"}, 422, "details_required"),
    ({"flow": "away"}, 400, "invalid"),
    ({"flow": "downgrade"}, 422, "target_required"),
    ({"flow": "downgrade", "price": 999999}, 422, "price_not_found"),
])
def test_bad_surveys_get_clear_errors(x, data, status, code):
    response = start(api(x.s.owner), x, **data)
    assert response.status_code == status and response.json()["code"] == code and response.json()["detail"]


def test_accept_applies_once(x):
    client = api(x.s.owner)
    offer = start(client, x).json()["offers"][0]
    first = client.post(reverse("api-offer-accept", args=[offer["id"]]))
    second = client.post(reverse("api-offer-accept", args=[offer["id"]]))
    assert first.status_code == second.status_code == 200 and first.json() == second.json()
    assert first.json()["status"] == "accepted"
    assert Subscription.objects.get(pk=x.subscription.pk).next_discount_percent == 30
    assert AuditEvent.objects.filter(action="retention.offer_accepted").count() == 1


def test_decline_gives_the_cancellation_quote_accepted_as_usual(x):
    client = api(x.s.owner)
    survey = start(client, x).json()
    response = client.post(reverse("api-exit-survey-decline", args=[survey["id"]]))
    assert response.status_code == 201 and response.json()["direction"] == "cancel"
    quote_id = response.json()["id"]
    accepted = client.post(reverse("api-quote-accept", args=[quote_id]), HTTP_IDEMPOTENCY_KEY="leave-1")
    assert accepted.status_code == 200 and accepted.json()["status"] == "scheduled"
    change = PlanChange.objects.get()
    assert change.reason_code == "too_expensive"
    assert client.get(reverse("api-exit-survey", args=[survey["id"]])).json()["plan_change"] == change.pk
    late = client.post(reverse("api-offer-accept", args=[survey["offers"][0]["id"]]))
    assert late.status_code == 409 and late.json()["code"] == "offer_declined"
    kept = client.post(reverse("api-subscription-reactivate", args=[x.subscription.pk]))
    assert kept.status_code == 200 and kept.json()["status"] == "cancelled"
    nothing = client.post(reverse("api-subscription-reactivate", args=[x.subscription.pk]))
    assert nothing.status_code == 409 and nothing.json()["code"] == "nothing_scheduled"


def test_pause_and_resume(x):
    client = api(x.s.owner)
    offer = start(client, x, reason="temporary_pause").json()["offers"][0]
    assert offer["kind"] == "pause"
    client.post(reverse("api-offer-accept", args=[offer["id"]]))
    assert Subscription.objects.get(pk=x.subscription.pk).paused_until is not None
    response = client.post(reverse("api-subscription-resume", args=[x.subscription.pk]))
    assert response.status_code == 200
    again = client.post(reverse("api-subscription-resume", args=[x.subscription.pk]))
    assert again.status_code == 409 and again.json()["code"] == "not_paused"


def test_members_are_refused_and_outsiders_not_found(x):
    survey = start(api(x.s.owner), x).json()
    member = api(x.s.member)
    assert start(member, x).status_code == 403
    assert member.post(reverse("api-offer-accept", args=[survey["offers"][0]["id"]])).status_code == 403
    assert member.post(reverse("api-exit-survey-decline", args=[survey["id"]])).status_code == 403
    outsider = api(MembershipFactory(customer=CustomerFactory(), role=Membership.Role.OWNER).user)
    assert start(outsider, x).status_code == 404
    assert outsider.get(reverse("api-exit-survey", args=[survey["id"]])).status_code == 404
    assert outsider.post(reverse("api-offer-accept", args=[survey["offers"][0]["id"]])).status_code == 404
    assert outsider.post(reverse("api-exit-survey-decline", args=[survey["id"]])).status_code == 404
    assert outsider.post(reverse("api-subscription-reactivate", args=[x.subscription.pk])).status_code == 404
    assert OfferPresentation.objects.filter(status="shown").count() == 2


def test_the_schema_documents_the_exit_flow(x):
    response = api(x.s.owner).get(reverse("api-schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json")
    paths = response.json()["paths"]
    assert "/api/subscriptions/{subscription_id}/exit-surveys/" in paths
    assert "/api/offers/{presentation_id}/accept/" in paths
    assert "/api/exit-surveys/{survey_id}/decline/" in paths
