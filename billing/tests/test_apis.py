"""The REST API: access rules, idempotent accept, error shape, schema."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from billing.models import LocalPayment, PlanChange, Subscription
from billing.tests.factories import MembershipFactory, live_subscription_setup

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup():
    return live_subscription_setup()  # the API prices "now"


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def create_quote(client, setup, **body):
    body = {"price": setup.pro_month.pk, "quantity": 5} | body
    return client.post(reverse("api-quote-create", args=[setup.subscription.pk]), body, format="json")


def accept(client, quote_id, key="key-1"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(reverse("api-quote-accept", args=[quote_id]), **headers)


def test_unauthenticated_requests_are_refused_with_json():
    response = APIClient().get(reverse("api-customers"))
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_token_login_and_listing(setup):
    user = setup.owner
    response = APIClient().post(reverse("api-token"), {"username": user.username, "password": "pw-for-tests"},
                                format="json")
    assert response.status_code == 200
    client = APIClient(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    customers = client.get(reverse("api-customers")).json()
    assert [c["id"] for c in customers] == [setup.customer.pk] and customers[0]["role"] == "owner"
    subscriptions = client.get(reverse("api-customer-subscriptions", args=[setup.customer.pk])).json()
    assert subscriptions[0]["price"]["plan"] == "basic" and subscriptions[0]["price"]["unit_amount"] == "30.00"


def test_plans_list_filters_by_currency_and_product(setup):
    client = client_for(setup.owner)
    products = client.get(reverse("api-plans"), {"currency": "eur", "product": "analytics"}).json()
    assert [p["code"] for p in products] == ["analytics"]
    plans = {p["code"]: p for p in products[0]["plans"]}
    assert {price["currency"] for plan in plans.values() for price in plan["prices"]} == {"EUR"}
    assert {f["feature"]: f["enabled"] for f in plans["pro"]["features"]}["sso"] is True


def test_quote_then_accept_then_replay(setup):
    client = client_for(setup.owner)
    response = create_quote(client, setup)
    assert response.status_code == 201, response.json()
    quote = response.json()
    assert quote["direction"] == "upgrade" and quote["expired"] is False
    assert [line["kind"] for line in quote["lines"]] == ["credit", "charge"]
    first = accept(client, quote["id"])
    assert first.status_code == 200 and first.json()["status"] == "applied"
    assert first.json()["receipt"]["amount_paid"] == quote["amount_due"]
    replay = accept(client, quote["id"])
    assert replay.status_code == 200 and replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert LocalPayment.objects.count() == 1
    changes = client.get(reverse("api-subscription-changes", args=[setup.subscription.pk])).json()
    assert [c["id"] for c in changes] == [first.json()["id"]]
    detail = client.get(reverse("api-plan-change", args=[first.json()["id"]])).json()
    assert detail["amount_due"] == quote["amount_due"]


def test_same_key_for_another_request_is_refused(setup):
    client = client_for(setup.owner)
    q1 = create_quote(client, setup).json()
    assert accept(client, q1["id"], key="shared").status_code == 200
    q2 = create_quote(client, setup, price=setup.business_month.pk).json()
    response = accept(client, q2["id"], key="shared")
    assert response.status_code == 422 and response.json()["code"] == "idempotency_key_reused"
    assert PlanChange.objects.count() == 1


def test_accept_requires_an_idempotency_key(setup):
    client = client_for(setup.owner)
    quote = create_quote(client, setup).json()
    response = accept(client, quote["id"], key=None)
    assert response.status_code == 400 and response.json()["code"] == "idempotency_key_required"
    assert not PlanChange.objects.exists()


def test_declined_payment_answers_402_and_is_replayed(setup):
    setup.customer.payment_methods.update(reference="pm_card_chargeDeclined")
    client = client_for(setup.owner)
    quote = create_quote(client, setup).json()
    response = accept(client, quote["id"])
    assert response.status_code == 402
    assert response.json()["code"] == "payment_declined" and response.json()["detail"] == "Your card was declined."
    assert accept(client, quote["id"]).json() == response.json()
    assert Subscription.objects.get(pk=setup.subscription.pk).version == 1


def test_authentication_flow_over_the_api(setup):
    setup.customer.payment_methods.update(reference="pm_card_authenticationRequired")
    client = client_for(setup.owner)
    quote = create_quote(client, setup).json()
    response = accept(client, quote["id"])
    assert response.status_code == 402 and response.json()["code"] == "payment_requires_action"
    change_id = response.json()["plan_change"]["id"]
    page = response.json()["next_action_url"].split("://", 1)[1].split("/", 1)[1]
    browser = APIClient()
    assert browser.get("/" + page).status_code == 200
    # The gateway's page notifies billing (like a webhook); the task runs eagerly in tests.
    assert browser.post("/" + page, {"answer": "approve"}).status_code == 200
    assert PlanChange.objects.get(pk=change_id).status == "applied"
    complete = client.post(reverse("api-plan-change-complete", args=[change_id]))
    assert complete.status_code == 200 and complete.json()["status"] == "applied"
    assert LocalPayment.objects.get().status == "succeeded"


def test_gateway_page_refuses_an_unknown_answer(setup):
    setup.customer.payment_methods.update(reference="pm_card_authenticationRequired")
    client = client_for(setup.owner)
    response = accept(client, create_quote(client, setup).json()["id"])
    page = "/" + response.json()["next_action_url"].split("://", 1)[1].split("/", 1)[1]
    assert APIClient().post(page, {"answer": "maybe"}).status_code == 400
    assert LocalPayment.objects.get().status == "requires_action"


def test_eligibility_refusal_is_json_with_code(setup):
    client = client_for(setup.owner)
    response = create_quote(client, setup, quantity=500)
    assert response.status_code == 422
    assert response.json() == {"code": "quantity_out_of_range",
                               "detail": "Analytics Pro allows 1 to 50 seats; you asked for 500.",
                               "min_quantity": 1, "max_quantity": 50}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [({"quantity": "many"}, "quantity"), ({"price": 1}, "quantity"), ({"quantity": 2}, "price, or plan and interval"),
     ({"plan": 1, "interval": "weekly", "quantity": 2}, "interval"), ({"quantity": -1}, "quantity")],
)
def test_bad_quote_input_names_the_problem(setup, body, fragment):
    response = client_for(setup.owner).post(reverse("api-quote-create", args=[setup.subscription.pk]), body,
                                            format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and fragment in response.json()["detail"]


def test_unknown_price_and_malformed_json(setup):
    client = client_for(setup.owner)
    response = create_quote(client, setup, price=999_999)
    assert response.status_code == 422 and response.json()["code"] == "price_not_found"
    response = client.post(reverse("api-quote-create", args=[setup.subscription.pk]), "{not json",
                           content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "parse_error"


def test_plan_and_interval_pick_the_price_in_the_subscription_currency(setup):
    client = client_for(setup.owner)
    response = create_quote(client, setup, price=None, plan=setup.pro.pk, interval="year")
    body = {"plan": setup.pro.pk, "interval": "year", "quantity": 5}
    response = client.post(reverse("api-quote-create", args=[setup.subscription.pk]), body, format="json")
    assert response.status_code == 201 and response.json()["to_price"]["price"] == setup.pro_year.pk
    body["interval"] = "quarter"
    response = client.post(reverse("api-quote-create", args=[setup.subscription.pk]), body, format="json")
    assert response.status_code == 422 and response.json()["code"] == "currency_unavailable"


def test_members_read_but_cannot_change(setup):
    owner, member = client_for(setup.owner), client_for(setup.member)
    assert member.get(reverse("api-subscription", args=[setup.subscription.pk])).status_code == 200
    response = create_quote(member, setup)
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    quote = create_quote(owner, setup).json()
    assert accept(member, quote["id"]).status_code == 403
    assert not PlanChange.objects.exists()
    # A billing admin can.
    assert accept(client_for(setup.billing_admin), quote["id"]).status_code == 200


def test_another_customers_objects_answer_404(setup):
    owner = client_for(setup.owner)
    quote = create_quote(owner, setup).json()
    change = accept(owner, quote["id"]).json()
    stranger = client_for(MembershipFactory(role="owner").user)
    urls = [
        reverse("api-customer", args=[setup.customer.pk]),
        reverse("api-customer-subscriptions", args=[setup.customer.pk]),
        reverse("api-customer-entitlements", args=[setup.customer.pk]),
        reverse("api-subscription", args=[setup.subscription.pk]),
        reverse("api-subscription-changes", args=[setup.subscription.pk]),
        reverse("api-quote", args=[quote["id"]]),
        reverse("api-plan-change", args=[change["id"]]),
    ]
    for url in urls:
        response = stranger.get(url)
        assert response.status_code == 404, url
        assert response.json()["code"] == "not_found"
    for url in [reverse("api-quote-create", args=[setup.subscription.pk]),
                reverse("api-quote-accept", args=[quote["id"]]),
                reverse("api-plan-change-cancel", args=[change["id"]]),
                reverse("api-plan-change-complete", args=[change["id"]])]:
        assert stranger.post(url, {"price": setup.pro_month.pk, "quantity": 5}, format="json",
                             HTTP_IDEMPOTENCY_KEY="x").status_code == 404, url


def test_cancel_a_scheduled_change_over_the_api(setup):
    Subscription.objects.filter(pk=setup.subscription.pk).update(price=setup.pro_month)
    client = client_for(setup.owner)
    quote = create_quote(client, setup, price=setup.basic_month.pk).json()
    assert quote["timing"] == "period_end"
    change = accept(client, quote["id"]).json()
    assert change["status"] == "scheduled"
    assert client.get(reverse("api-subscription", args=[setup.subscription.pk])).json()["scheduled_changes"] == [
        change["id"]]
    response = client.post(reverse("api-plan-change-cancel", args=[change["id"]]))
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = client.post(reverse("api-plan-change-cancel", args=[change["id"]]))
    assert again.status_code == 409 and again.json()["code"] == "not_cancellable"


def test_entitlements_follow_the_change_immediately(setup):
    client = client_for(setup.owner)
    url = reverse("api-customer-entitlements", args=[setup.customer.pk])
    before = {e["feature"]: e for e in client.get(url).json()}
    assert before["sso"]["enabled"] is False and before["storage"]["limit"] == 10
    accept(client, create_quote(client, setup).json()["id"])
    after = {e["feature"]: e for e in client.get(url).json()}
    assert after["sso"]["enabled"] is True and after["storage"]["limit"] == 100
    assert after["sso"]["sources"] == ["plan:analytics/pro"]


def test_schema_and_docs_are_served(setup):
    client = client_for(setup.owner)
    schema = client.get(reverse("api-schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    text = schema.content.decode()
    assert "/api/quotes/{quote_id}/accept/" in text and "Idempotency-Key" in text
    docs = client.get(reverse("api-docs"))
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_local_gateway_page_is_off_when_another_gateway_is_configured(setup, settings):
    settings.PAYMENT_GATEWAY = "stripe"
    assert APIClient().get("/gateway/local/authenticate/pi_local_x/").status_code == 404


def test_requests_over_the_rate_limit_answer_429(setup, settings):
    settings.API_RATE_LIMIT = "3/minute"
    client = client_for(setup.owner)
    codes = [client.get(reverse("api-customers")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = client.get(reverse("api-customers"))
    assert response.json()["code"] == "throttled" and "Retry-After" in response.headers
    # Another user has their own allowance.
    assert client_for(setup.member).get(reverse("api-customers")).status_code == 200


def test_quote_a_cancellation_over_the_api(setup):
    client = client_for(setup.owner)
    response = client.post(reverse("api-quote-create", args=[setup.subscription.pk]), {"cancel": True}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["direction"] == "cancel" and response.json()["timing"] == "period_end"
    change = accept(client, response.json()["id"]).json()
    assert change["status"] == "scheduled" and change["direction"] == "cancel"
