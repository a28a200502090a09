"""The trial pages through the Django test client, without JavaScript: the plans page link, the confirmation page
with the exact conversion price, start, the overview's trial box, the opt-in toggle, end now; roles and other
accounts; over-limit usage on the overview and in the entitlements API."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from babel.numbers import format_currency
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import ChangeRule, FeatureUsage, LocalPayment, Membership, PlanChange, Subscription
from billing.services.quotes import quote_price
from billing.tests.factories import CustomerFactory, MembershipFactory, live_subscription_setup
from retention.models import Trial
from retention.services.trials import trial_end, trial_start

pytestmark = pytest.mark.django_db


@pytest.fixture
def s():
    return live_subscription_setup()


def url(name: str, *args) -> str:
    return reverse(f"portal:{name}", args=args)


def eur(amount) -> str:
    return format_currency(Decimal(amount), "EUR", locale="en")


def confirm_url(s, plan=None):
    return url("trial-confirm", s.customer.pk, s.subscription.pk, (plan or s.pro).pk)


def text(response) -> str:
    return response.content.decode()


def test_plans_page_offers_a_trial_of_higher_tiers_only(client, s):
    client.force_login(s.owner)
    page = text(client.get(url("plans", s.customer.pk, s.subscription.pk)))
    assert "Try Pro free for 14 days" in page and "Try Business free for 14 days" in page
    assert confirm_url(s) in page
    assert "Try Basic free" not in page


def test_members_see_no_trial_link_and_cannot_start_one(client, s):
    client.force_login(s.member)
    assert "free for 14 days" not in text(client.get(url("plans", s.customer.pk, s.subscription.pk)))
    assert client.get(confirm_url(s)).status_code == 403
    assert client.post(confirm_url(s), {"convert_opt_in": "1"}).status_code == 403
    assert not Trial.objects.exists()


def test_another_customers_subscription_is_not_found(client, s):
    outsider = MembershipFactory(customer=CustomerFactory(), role=Membership.Role.OWNER).user
    client.force_login(outsider)
    assert client.get(confirm_url(s)).status_code == 404
    assert client.post(confirm_url(s)).status_code == 404


def test_confirmation_states_the_end_and_the_exact_conversion_price(client, s):
    client.force_login(s.owner)
    response = client.get(confirm_url(s))
    assert response.status_code == 200
    terms = response.context["terms"]
    expected = quote_price(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=s.pro_month,
                           quantity=5, now=terms.ends_at)
    assert terms.conversion.amount_due == expected.amount_due > 0
    page = text(response)
    assert eur(expected.amount_due) in page and eur(expected.next_period_amount) in page
    assert "Convert to paid Pro with my saved card (Visa ending 4242) at the end" in page
    assert "nothing is charged and nothing is deleted" in page
    assert (terms.ends_at - timezone.now()).days in (13, 14)


def test_start_without_js_then_the_overview_shows_it_with_toggle_and_end(client, s):
    client.force_login(s.owner)
    response = client.post(confirm_url(s), {"convert_opt_in": "1"})
    assert response.status_code == 302 and response.url == url("overview", s.customer.pk)
    trial = Trial.objects.get()
    assert (trial.convert_opt_in, trial.source, trial.plan_id, trial.status) == (True, "plans_page", s.pro.pk, "active")
    assert not LocalPayment.objects.exists() and not PlanChange.objects.exists()
    page = text(client.get(url("overview", s.customer.pk)))
    assert "Free trial of Pro until" in page
    assert "At the end you move to Pro" in page
    assert "End trial now" in page
    assert url("trial-opt-in", s.customer.pk, trial.pk) in page
    # Toggle off, no JavaScript: a plain POST and back to the overview.
    response = client.post(url("trial-opt-in", s.customer.pk, trial.pk), {"convert_opt_in": "0"})
    assert response.status_code == 302
    assert Trial.objects.get().convert_opt_in is False
    assert "At the end you go back to Basic" in text(client.get(url("overview", s.customer.pk)))
    # A double submit of the start form lands on the overview, not on an error.
    again = client.post(confirm_url(s), {"convert_opt_in": "1"})
    assert again.status_code == 302 and again.url == url("overview", s.customer.pk)
    assert Trial.objects.count() == 1
    client.post(url("trial-end", s.customer.pk, trial.pk))
    assert Trial.objects.get().status == "cancelled"
    assert "Free trial of" not in text(client.get(url("overview", s.customer.pk)))


def test_htmx_toggle_swaps_the_trial_box(client, s):
    client.force_login(s.owner)
    client.post(confirm_url(s))
    trial = Trial.objects.get()
    response = client.post(url("trial-opt-in", s.customer.pk, trial.pk), {"convert_opt_in": "1"},
                           HTTP_HX_REQUEST="true", follow=True)
    assert response.status_code == 200 and f'id="trial-{trial.pk}"' in text(response)
    assert Trial.objects.get().convert_opt_in is True


def test_a_refused_start_says_why_and_records_nothing(client, s):
    ChangeRule.objects.filter(name="Upgrades").update(allowed=False, refusal_reason="Upgrades go through sales.")
    client.force_login(s.owner)
    response = client.post(confirm_url(s), follow=True)
    assert "Upgrades go through sales." in text(response)
    assert not Trial.objects.exists()
    response = client.get(confirm_url(s), follow=True)
    assert "Upgrades go through sales." in text(response)


def test_members_cannot_toggle_or_end_and_others_get_404(client, s):
    trial = trial_start(subscription=Subscription.objects.get(pk=s.subscription.pk), plan=s.pro, days=14,
                        source="plans_page", actor=s.owner, now=timezone.now())
    client.force_login(s.member)
    assert client.post(url("trial-opt-in", s.customer.pk, trial.pk), {"convert_opt_in": "1"}).status_code == 403
    assert client.post(url("trial-end", s.customer.pk, trial.pk)).status_code == 403
    outsider = MembershipFactory(customer=CustomerFactory(), role=Membership.Role.OWNER)
    client.force_login(outsider.user)
    assert client.post(url("trial-end", outsider.customer.pk, trial.pk)).status_code == 404
    assert Trial.objects.get().status == "active" and not Trial.objects.get().convert_opt_in


def test_over_limit_usage_is_read_only_in_the_api_and_on_the_overview_after_fallback(client, s):
    FeatureUsage.objects.create(customer=s.customer, feature=s.feature_storage, used=60, reported_at=timezone.now())
    start = timezone.now() - timedelta(days=5)
    trial = trial_start(subscription=Subscription.objects.get(pk=s.subscription.pk), plan=s.pro, days=3,
                        source="plans_page", actor=s.owner, now=start)
    api = APIClient()
    api.force_authenticate(s.owner)
    trial_end(trial_id=trial.pk, now=timezone.now())
    storage = next(e for e in api.get(f"/api/customers/{s.customer.pk}/entitlements/").json()
                   if e["feature"] == "storage")
    assert storage == {"feature": "storage", "name": "Storage", "kind": "limit", "enabled": True, "limit": 10,
                       "unit": "GB", "sources": ["plan:analytics/basic"], "used": 60, "over_limit": True,
                       "read_only": True, "frozen": False, "frozen_until": None}
    client.force_login(s.member)  # everyone sees what is over the limit
    page = text(client.get(url("overview", s.customer.pk)))
    assert "Storage: over your plan's limit" in page
    assert "You use 60 GB of 10 GB allowed. Nothing is deleted: the 50 GB above the limit stay readable" in page
    assert url("plans", s.customer.pk, s.subscription.pk) in page


def test_features_stay_until_a_period_end_downgrade_applies(s):
    """Nothing is removed before the effective date: a downgrade at period end keeps the entitlements until then."""
    from billing.models import Customer
    from billing.services.plan_changes import quote_accept
    from billing.services.quotes import quote_create
    from billing.services.renewals import plan_changes_apply_due
    from entitlements.selectors import entitlements_for_customer

    def sso(now):
        customer = Customer.objects.get(pk=s.customer.pk)
        return next(e for e in entitlements_for_customer(customer=customer, now=now) if e.feature == "sso").enabled

    Subscription.objects.filter(pk=s.subscription.pk).update(price=s.pro_month)
    now = timezone.now()
    quote = quote_create(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=s.basic_month,
                         quantity=5, now=now, actor=s.owner)
    change = quote_accept(quote=quote, actor=s.owner, now=now)
    assert change.status == "scheduled"
    assert sso(now) is True
    end = Subscription.objects.get(pk=s.subscription.pk).current_period_end
    plan_changes_apply_due(now=end - timedelta(seconds=1))
    assert sso(end - timedelta(seconds=1)) is True
    plan_changes_apply_due(now=end)
    assert PlanChange.objects.get(pk=change.pk).status == "applied"
    assert sso(end) is False


def test_the_trial_link_stays_when_htmx_swaps_the_interval(client, s):
    client.force_login(s.owner)
    grid = client.get(url("plans", s.customer.pk, s.subscription.pk) + "?interval=year", HTTP_HX_REQUEST="true",
                      HTTP_HX_TARGET="plans-grid")
    assert 'id="plans-grid"' in text(grid) and "Try Pro free for 14 days" in text(grid)
