"""The way out in the portal through the Django test client, without JavaScript: survey → offers (each with its
exact effect) → accept, or "No thanks" → review → confirm (two clicks to leave); reactivation and resume; roles and
other customers' ids."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from babel.numbers import format_currency
from django.urls import reverse

from billing.models import AuditEvent, Membership, PlanChange, Quote, Subscription
from billing.selectors import subscription_next_renewal
from billing.tests.factories import CustomerFactory, MembershipFactory
from retention.models import ExitSurvey, OfferPresentation
from retention.tests.factories import exit_setup

pytestmark = pytest.mark.django_db


@pytest.fixture
def x():
    return exit_setup()


def url(name: str, *args) -> str:
    return reverse(f"portal:{name}", args=args)


def eur(amount) -> str:
    return format_currency(Decimal(amount), "EUR", locale="en")


def html(response) -> str:
    return response.content.decode()


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def signed_in(client, user):
    client.force_login(user)
    return client


def answer(client, x, **data):
    return client.post(url("exit-survey", x.s.customer.pk, x.subscription.pk),
                       {"flow": "cancel", "reason": "too_expensive", "details": ""} | data)


def test_survey_page_lists_the_reasons_and_the_lower_plans(client, x):
    page = html(signed_in(client, x.s.owner).get(url("cancel", x.s.customer.pk, x.subscription.pk)))
    for code in x.reasons:
        assert f'value="{code}"' in page
    assert f'<option value="{x.s.basic_month.pk}"' in page and f'value="{x.s.business_month.pk}"' not in page
    assert 'action="' + url("exit-survey", x.s.customer.pk, x.subscription.pk) + '"' in page
    assert "keep my subscription" in page.lower()


def test_bad_answers_come_back_with_the_reason_and_what_was_typed(client, x):
    signed_in(client, x.s.owner)
    response = answer(client, x, reason="other", details="")
    assert response.status_code == 400 and "Tell us a little more" in html(response)
    response = answer(client, x, reason="", details="kept text")
    assert response.status_code == 400 and "Choose one of the reasons" in html(response)
    assert "kept text" in html(response)
    response = answer(client, x, flow="downgrade", price=str(x.s.business_month.pk))
    assert response.status_code == 400 and "Choose one of the lower plans" in html(response)
    assert not ExitSurvey.objects.exists()


def test_offers_page_shows_each_offer_with_its_exact_effect(client, x):
    signed_in(client, x.s.owner)
    response = answer(client, x)
    survey = ExitSurvey.objects.get()
    assert response.status_code == 302 and response.url == url("exit-offers", x.s.customer.pk, survey.pk)
    page = html(client.get(response.url))
    discount, crossgrade = OfferPresentation.objects.order_by("offer__priority")
    assert eur(discount.effect["pay"]) in page and eur(discount.effect["instead_of"]) in page
    assert eur(crossgrade.quote.next_period_amount) in page
    assert page.count("Accept this offer") == 2
    assert "No thanks, continue to cancel" in page


def test_accepting_the_discount_shows_it_on_the_overview(client, x):
    signed_in(client, x.s.owner)
    answer(client, x)
    discount = OfferPresentation.objects.get(offer=x.discount)
    response = client.post(url("exit-offer-accept", x.s.customer.pk, discount.pk))
    assert response.status_code == 302 and response.url == url("overview", x.s.customer.pk)
    page = html(client.get(response.url))
    assert "30 % off your next 3 renewals" in page
    renewal = subscription_next_renewal(subscription=Subscription.objects.get(pk=x.subscription.pk))
    assert renewal.total == Decimal("208.25") and eur(renewal.total) in page
    again = client.post(url("exit-offer-accept", x.s.customer.pk, discount.pk))  # a double submit
    assert again.status_code == 302
    assert AuditEvent.objects.filter(action="retention.offer_accepted").count() == 1


def test_an_amount_off_offer_and_its_credit_on_the_overview(client, x):
    from retention.models import RetentionOffer

    RetentionOffer.objects.filter(pk=x.discount.pk).update(percent_off=None, amount_off=Decimal("10.00"),
                                                           currency="EUR")
    signed_in(client, x.s.owner)
    response = answer(client, x)
    page = html(client.get(response.url))
    # 297.50 a month, 10.00 off each of the next 3 invoices: 287.50.
    assert f"{eur('10.00')} off each of your next 3 invoices" in page and eur("287.50") in page
    discount = OfferPresentation.objects.get(offer=x.discount)
    client.post(url("exit-offer-accept", x.s.customer.pk, discount.pk))
    page = html(client.get(url("overview", x.s.customer.pk)))
    assert f"{eur('10.00')} off each of your next 3 invoices, starting on" in page
    assert re.search(rf'data-testid="next-renewal-{x.subscription.pk}">{re.escape(eur("287.50"))}<', page)
    assert f"{eur('297.50')} less your {eur('10.00')} credit" in page


def test_accepting_the_pause_shows_the_resume_date_and_resume_now(client, x):
    signed_in(client, x.s.owner)
    answer(client, x, reason="temporary_pause")
    pause = OfferPresentation.objects.get()
    client.post(url("exit-offer-accept", x.s.customer.pk, pause.pk))
    page = html(client.get(url("overview", x.s.customer.pk)))
    assert "Paused from" in page and "Resume now" in page
    response = client.post(url("subscription-resume", x.s.customer.pk, x.subscription.pk))
    assert response.status_code == 302
    assert Subscription.objects.get(pk=x.subscription.pk).paused_until is None


def test_no_thanks_then_confirm_cancels_in_two_clicks_and_keep_restores(client, x):
    signed_in(client, x.s.owner)
    offers = answer(client, x).url
    survey = ExitSurvey.objects.get()
    response = client.post(url("exit-continue", x.s.customer.pk, survey.pk))  # click 1
    quote = Quote.objects.get(direction="cancel")
    assert response.url == url("review", x.s.customer.pk, quote.pk)
    review = html(client.get(response.url))
    token = re.search(r'name="token" value="([^"]+)"', review).group(1)
    response = client.post(url("confirm", x.s.customer.pk, quote.pk), {"token": token})  # click 2
    change = PlanChange.objects.get()
    assert change.status == "scheduled" and change.direction == "cancel" and change.reason_code == "too_expensive"
    assert ExitSurvey.objects.get().plan_change == change
    assert set(OfferPresentation.objects.values_list("status", flat=True)) == {"declined"}
    overview = html(client.get(url("overview", x.s.customer.pk)))
    assert "This subscription ends on" in overview and "Keep my subscription" in overview
    client.post(url("change-cancel", x.s.customer.pk, change.pk))  # one click keeps it
    assert PlanChange.objects.get().status == "cancelled"
    assert AuditEvent.objects.filter(action="plan_change.cancelled").get().reason_code == "reactivated"
    assert "Keep my subscription" not in html(client.get(url("overview", x.s.customer.pk)))
    assert "Accept this offer" not in html(client.get(offers))


def test_without_fitting_offers_the_survey_goes_straight_to_the_review(client, x):
    signed_in(client, x.s.owner)
    response = answer(client, x, reason="competitor")
    quote = Quote.objects.get()
    assert response.url == url("review", x.s.customer.pk, quote.pk) and quote.direction == "cancel"
    assert ExitSurvey.objects.get().quote == quote


def test_downgrade_path_to_the_review(client, x):
    signed_in(client, x.s.owner)
    response = answer(client, x, flow="downgrade", reason="competitor", price=str(x.s.basic_month.pk))
    quote = Quote.objects.get()
    assert response.url == url("review", x.s.customer.pk, quote.pk)
    assert (quote.direction, quote.to_price_id) == ("downgrade", x.s.basic_month.pk)


def test_a_refused_cancellation_is_explained(client, x):
    from billing.models import ChangeRule

    ChangeRule.objects.filter(direction="cancel").update(allowed=False, refusal_reason="Please call us to cancel.")
    signed_in(client, x.s.owner)
    response = answer(client, x, reason="competitor")
    assert response.url == url("overview", x.s.customer.pk)
    assert "Please call us to cancel." in messages_of(client.get(response.url))


def test_members_see_who_to_ask_and_may_not_act(client, x):
    signed_in(client, x.s.member)
    page = html(client.get(url("cancel", x.s.customer.pk, x.subscription.pk)))
    assert 'name="reason"' not in page and x.s.owner.username in page
    assert answer(client, x).status_code == 403
    signed_in(client, x.s.owner)
    answer(client, x)
    survey, presentation = ExitSurvey.objects.get(), OfferPresentation.objects.first()
    signed_in(client, x.s.member)
    assert client.get(url("exit-offers", x.s.customer.pk, survey.pk)).status_code == 403
    assert client.post(url("exit-offer-accept", x.s.customer.pk, presentation.pk)).status_code == 403
    assert client.post(url("exit-continue", x.s.customer.pk, survey.pk)).status_code == 403
    assert client.post(url("subscription-resume", x.s.customer.pk, x.subscription.pk)).status_code == 403
    assert OfferPresentation.objects.filter(status="shown").count() == 2


def test_other_customers_ids_are_not_found(client, x):
    signed_in(client, x.s.owner)
    answer(client, x)
    survey, presentation = ExitSurvey.objects.get(), OfferPresentation.objects.first()
    outsider = MembershipFactory(customer=CustomerFactory(), role=Membership.Role.OWNER)
    signed_in(client, outsider.user)
    own = outsider.customer.pk
    assert client.get(url("cancel", x.s.customer.pk, x.subscription.pk)).status_code == 404
    assert client.get(url("cancel", own, x.subscription.pk)).status_code == 404
    assert client.get(url("exit-offers", own, survey.pk)).status_code == 404
    assert client.post(url("exit-offer-accept", own, presentation.pk)).status_code == 404
    assert client.post(url("exit-continue", own, survey.pk)).status_code == 404
    assert client.post(url("exit-survey", own, x.subscription.pk), {"reason": "other"}).status_code == 404
    assert OfferPresentation.objects.filter(status="shown").count() == 2


def test_signed_out_posts_go_to_sign_in(client, x):
    response = answer(client, x)
    assert response.status_code == 302 and "/accounts/login/" in response.url


def test_offers_page_after_an_offer_was_taken_elsewhere(client, x):
    signed_in(client, x.s.owner)
    answer(client, x)
    discount, crossgrade = OfferPresentation.objects.order_by("offer__priority")
    client.post(url("exit-offer-accept", x.s.customer.pk, discount.pk))
    response = client.post(url("exit-offer-accept", x.s.customer.pk, crossgrade.pk))
    assert response.url == url("exit-offers", x.s.customer.pk, discount.survey_id)
    assert "You already accepted another offer." in messages_of(client.get(response.url))
    assert not PlanChange.objects.exists()


@pytest.mark.parametrize(("left", "note"), [
    (0, "30 % off this period; it ends with this period."),
    (1, "30 % off this period and your next renewal."),
    (2, "30 % off this period and the next 2 renewals."),
])
def test_the_overview_says_how_long_a_running_discount_lasts(client, x, left, note):
    Subscription.objects.filter(pk=x.subscription.pk).update(discount_percent=Decimal(30), discount_periods_left=left)
    page = html(signed_in(client, x.s.owner).get(url("overview", x.s.customer.pk)))
    found = re.search(rf'data-testid="discount-{x.subscription.pk}">([^<]*)<', page)
    assert found and found.group(1) == note
