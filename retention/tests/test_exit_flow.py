"""The exit flow's services: the survey, which offers fit, their exact effects, accepting each kind (and that what
was shown is what the renewal then bills), declining to the review, reactivation and pauses."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from billing import proration
from billing.errors import ChangeConflict, ChangeRefused
from billing.models import AuditEvent, ChangeRule, Invoice, PlanChange, Price, Subscription
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create, quote_price
from billing.services.renewals import subscription_renew
from retention.models import ExitSurvey, OfferPresentation, RetentionOffer
from retention.services.exit_flow import (
    exit_survey_continue,
    exit_survey_start,
    subscription_reactivate,
    subscription_resume,
)
from retention.services.offers import offer_accept, offer_present, offers_eligible, revenue_at_risk
from retention.tests.factories import exit_setup

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture
def x():
    return exit_setup()


def sub(x) -> Subscription:
    return Subscription.objects.select_related("customer", "price__plan__product").get(pk=x.subscription.pk)


def survey(x, reason="too_expensive", flow="cancel", details="", **kwargs) -> ExitSurvey:
    return exit_survey_start(subscription=sub(x), flow=flow, reason_code=reason, details=details, actor=x.s.owner,
                             now=timezone.now(), **kwargs)


def kinds(found) -> list[str]:
    return [item.offer.kind for item in found]


# --- the survey -------------------------------------------------------------------------------------


def test_survey_is_stored_and_audited_with_its_reason(x):
    sv = survey(x, reason="competitor", details="Cheaper elsewhere")
    assert (sv.flow, sv.reason.code, sv.details, sv.customer_id) == ("cancel", "competitor", "Cheaper elsewhere",
                                                                     x.s.customer.pk)
    event = AuditEvent.objects.get(action="retention.exit_survey")
    assert event.reason_code == "competitor" and event.after["details"] == "Cheaper elsewhere"


@pytest.mark.parametrize(("reason", "details", "code"), [
    ("", "", "invalid_reason"), ("no_such_reason", "", "invalid_reason"), ("other", "", "details_required"),
    ("other", "   ", "details_required"), ("too_expensive", "x" * 2001, "details_too_long"),
])
def test_survey_refuses_bad_answers_with_a_clear_reason(x, reason, details, code):
    with pytest.raises(ChangeRefused) as refused:
        survey(x, reason=reason, details=details)
    assert refused.value.code == code and refused.value.detail
    assert not ExitSurvey.objects.exists()


def test_other_with_details_and_inactive_reasons(x):
    assert survey(x, reason="other", details="Our team was dissolved").details == "Our team was dissolved"
    x.reasons["competitor"].is_active = False
    x.reasons["competitor"].save()
    with pytest.raises(ChangeRefused, match="Choose one of the reasons"):
        survey(x, reason="competitor")


def test_downgrade_needs_a_lower_plan_of_the_product(x):
    with pytest.raises(ChangeRefused) as refused:
        survey(x, flow="downgrade")
    assert refused.value.code == "target_required"
    with pytest.raises(ChangeRefused) as refused:
        survey(x, flow="downgrade", target_price=x.s.business_month)
    assert refused.value.code == "target_not_lower"
    sv = survey(x, flow="downgrade", target_price=x.s.basic_month)
    assert sv.target_price == x.s.basic_month and sv.target_quantity == 5
    with pytest.raises(ChangeRefused):
        survey(x, flow="sideways")


def test_survey_refused_while_a_change_is_scheduled(x):
    q = quote_create(subscription=sub(x), to_price=None, quantity=0, now=timezone.now(), actor=x.s.owner, cancel=True)
    change = quote_accept(quote=q, actor=x.s.owner, now=timezone.now())
    with pytest.raises(ChangeConflict) as conflict:
        survey(x)
    assert conflict.value.code == "change_scheduled" and conflict.value.extra["plan_change"] == change.pk


# --- eligibility ------------------------------------------------------------------------------------


def test_offers_fit_the_reason_best_first(x):
    now = timezone.now()
    assert kinds(offers_eligible(survey=survey(x, "too_expensive"), now=now)) == ["discount", "crossgrade"]
    assert kinds(offers_eligible(survey=survey(x, "temporary_pause"), now=now)) == ["pause"]
    assert kinds(offers_eligible(survey=survey(x, "not_using"), now=now)) == ["pause", "crossgrade"]
    assert kinds(offers_eligible(survey=survey(x, "competitor"), now=now)) == []


def test_an_offer_without_reasons_fits_every_reason(x):
    x.pause.reasons.clear()
    assert kinds(offers_eligible(survey=survey(x, "competitor"), now=timezone.now())) == ["pause"]


def test_offers_limited_to_plans(x):
    x.discount.plans.set([x.s.basic])
    assert "discount" not in kinds(offers_eligible(survey=survey(x), now=timezone.now()))
    x.discount.plans.set([x.s.pro])
    assert "discount" in kinds(offers_eligible(survey=survey(x), now=timezone.now()))


def test_offers_need_the_tenure(x):
    now = timezone.now()
    Subscription.objects.filter(pk=x.subscription.pk).update(created_at=now - timedelta(days=40))
    type(x.s.customer).objects.filter(pk=x.s.customer.pk).update(created_at=now - timedelta(days=40))
    RetentionOffer.objects.filter(pk=x.discount.pk).update(min_tenure_days=41)
    assert "discount" not in kinds(offers_eligible(survey=survey(x), now=now))
    RetentionOffer.objects.filter(pk=x.discount.pk).update(min_tenure_days=40)
    assert "discount" in kinds(offers_eligible(survey=survey(x), now=now))


def test_offers_follow_the_flow(x):
    RetentionOffer.objects.filter(pk=x.discount.pk).update(flow="downgrade")
    assert "discount" not in kinds(offers_eligible(survey=survey(x, flow="cancel"), now=timezone.now()))
    downgrade = survey(x, flow="downgrade", target_price=x.s.basic_month)
    assert "discount" in kinds(offers_eligible(survey=downgrade, now=timezone.now()))


def test_inactive_offers_are_not_shown(x):
    RetentionOffer.objects.filter(pk=x.discount.pk).update(is_active=False)
    assert kinds(offers_eligible(survey=survey(x), now=timezone.now())) == ["crossgrade"]


def test_no_offer_within_the_cooldown_of_any_accepted_offer(x):
    now = timezone.now()
    first = offer_present(survey=survey(x, "temporary_pause"), now=now)[0]
    offer_accept(presentation=first, actor=x.s.owner, now=now)
    OfferPresentation.objects.filter(pk=first.pk).update(decided_at=now - timedelta(days=100))
    Subscription.objects.filter(pk=x.subscription.pk).update(pause_starts_at=None, paused_until=None)
    RetentionOffer.objects.update(cooldown_days=101)
    assert offers_eligible(survey=survey(x), now=now) == []
    RetentionOffer.objects.filter(pk=x.discount.pk).update(cooldown_days=99)
    assert kinds(offers_eligible(survey=survey(x), now=now)) == ["discount"]


def test_crossgrade_left_out_when_the_cheaper_plan_is_not_sold_like_this(x):
    Price.objects.filter(plan=x.s.basic, interval="month").update(currency="USD")
    assert kinds(offers_eligible(survey=survey(x), now=timezone.now())) == ["discount"]


def test_crossgrade_left_out_when_not_cheaper_or_charging_now(x):
    RetentionOffer.objects.filter(pk=x.crossgrade.pk).update(target_plan=x.s.pro)  # the same plan
    assert kinds(offers_eligible(survey=survey(x), now=timezone.now())) == ["discount"]
    RetentionOffer.objects.filter(pk=x.crossgrade.pk).update(target_plan=x.s.business)  # dearer
    assert kinds(offers_eligible(survey=survey(x), now=timezone.now())) == ["discount"]


def test_amount_off_discounts_are_offered_in_the_subscriptions_currency_only(x):
    RetentionOffer.objects.filter(pk=x.discount.pk).update(percent_off=None, amount_off=D("10"), currency="EUR")
    assert kinds(offers_eligible(survey=survey(x), now=timezone.now())) == ["discount", "crossgrade"]
    RetentionOffer.objects.filter(pk=x.discount.pk).update(currency="USD")  # the subscription bills in EUR
    assert kinds(offers_eligible(survey=survey(x), now=timezone.now())) == ["crossgrade"]


def test_no_offers_for_a_paused_or_past_due_subscription(x):
    Subscription.objects.filter(pk=x.subscription.pk).update(status="past_due")
    assert offers_eligible(survey=survey(x), now=timezone.now()) == []


# --- effects and acceptance ---------------------------------------------------------------------------


def test_discount_effect_is_the_renewal_price_and_the_renewal_bills_it(x):
    now = timezone.now()
    sv = survey(x)
    presentation = offer_present(survey=sv, now=now)[0]
    effect = presentation.effect
    # Pro × 5 = 250.00; 30 % off → 175.00 + 19 % VAT 33.25 = 208.25 instead of 297.50, three times.
    assert (effect["pay"], effect["instead_of"], effect["saving_per_period"], effect["saving_total"]) == \
        ("208.25", "297.50", "89.25", "267.75")
    assert presentation.revenue_at_risk == D("250.00") and presentation.currency == "EUR"
    offer_accept(presentation=presentation, actor=x.s.owner, now=now)
    s = sub(x)
    assert (s.next_discount_percent, s.next_discount_periods, s.discount_percent) == (D("30"), 3, D("0"))
    event = AuditEvent.objects.get(action="retention.offer_accepted")
    assert event.reason_code == "too_expensive" and event.after["effect"]["pay"] == "208.25"
    totals = []
    for _period in range(4):
        s = sub(x)
        assert subscription_renew(subscription_id=s.pk, now=s.current_period_end + timedelta(seconds=1))
        totals.append(Invoice.objects.filter(subscription=s, billing_reason="renewal").order_by("-pk")[0].total)
    assert totals == [D("208.25"), D("208.25"), D("208.25"), D("297.50")]


def test_pause_effect_and_renewals_during_the_pause_bill_nothing(x):
    now = timezone.now()
    s = sub(x)
    presentation = offer_present(survey=survey(x, "temporary_pause"), now=now)[0]
    tz = ZoneInfo(s.customer.timezone)
    resumes = proration.add_interval(proration.add_interval(s.current_period_end, "month", tz), "month", tz)
    assert presentation.effect["starts_at"] == s.current_period_end.isoformat()
    assert presentation.effect["resumes_at"] == resumes.isoformat()
    assert (presentation.effect["saving_total"], presentation.effect["then_pay"]) == ("595.00", "297.50")
    offer_accept(presentation=presentation, actor=x.s.owner, now=now)
    s = sub(x)
    assert (s.pause_starts_at, s.paused_until) == (s.current_period_end, resumes)
    with pytest.raises(ChangeRefused) as refused:  # no plan change while paused
        quote_price(subscription=s, to_price=x.s.business_month, quantity=5, now=now)
    assert refused.value.code == "subscription_paused"
    quote_price(subscription=s, to_price=None, quantity=0, now=now, cancel=True)  # leaving stays possible
    for _period in range(2):
        s = sub(x)
        assert subscription_renew(subscription_id=s.pk, now=s.current_period_end + timedelta(seconds=1))
    assert not Invoice.objects.filter(billing_reason="renewal").exists()
    assert AuditEvent.objects.filter(action="subscription.paused_period").count() == 2
    s = sub(x)
    assert s.current_period_end == resumes
    assert subscription_renew(subscription_id=s.pk, now=resumes + timedelta(seconds=1))
    assert Invoice.objects.get(billing_reason="renewal").total == D("297.50")
    s = sub(x)
    assert s.paused_until is None and AuditEvent.objects.filter(action="subscription.resumed").exists()


def test_a_discount_waits_for_the_end_of_a_pause(x):
    """A pause after a discount (another survey, cooldown 0): paused periods don't use up discounted periods."""
    RetentionOffer.objects.update(cooldown_days=0)
    now = timezone.now()
    offer_accept(presentation=offer_present(survey=survey(x), now=now)[0], actor=x.s.owner, now=now)
    s = sub(x)
    Subscription.objects.filter(pk=s.pk).update(pause_starts_at=s.current_period_end,
                                                paused_until=s.current_period_end + timedelta(days=31))
    s = sub(x)
    assert subscription_renew(subscription_id=s.pk, now=s.current_period_end + timedelta(seconds=1))
    assert not Invoice.objects.filter(billing_reason="renewal").exists()
    s = sub(x)
    subscription_renew(subscription_id=s.pk, now=s.current_period_end + timedelta(seconds=1))
    assert Invoice.objects.get(billing_reason="renewal").total == D("208.25")


def test_crossgrade_accepts_the_quote_shown_and_links_the_survey(x):
    now = timezone.now()
    sv = survey(x)
    presentation = offer_present(survey=sv, now=now)[1]
    assert presentation.offer.kind == "crossgrade" and presentation.quote is not None
    q = presentation.quote
    assert presentation.effect["pay"] == str(q.next_period_amount) == "178.50"
    assert (presentation.effect["instead_of"], presentation.effect["amount_due"]) == ("297.50", "0.00")
    offer_accept(presentation=presentation, actor=x.s.owner, now=now)
    change = PlanChange.objects.get()
    assert change.quote_id == q.pk and change.status == "scheduled" and change.to_price == x.s.basic_month
    assert change.reason_code == "too_expensive"
    assert ExitSurvey.objects.get(pk=sv.pk).plan_change == change
    assert AuditEvent.objects.get(action="plan_change.scheduled").reason_code == "too_expensive"


def test_crossgrade_with_an_expired_quote_takes_a_fresh_one_with_the_same_amounts(x):
    now = timezone.now()
    presentation = offer_present(survey=survey(x), now=now)[1]
    later = now + timedelta(minutes=30)
    offer_accept(presentation=presentation, actor=x.s.owner, now=later)
    change = PlanChange.objects.get()
    assert change.quote_id != presentation.quote_id and change.to_price == x.s.basic_month
    assert OfferPresentation.objects.get(pk=presentation.pk).quote_id == change.quote_id


def test_an_offer_whose_price_moved_is_refused_not_applied(x):
    now = timezone.now()
    presentation = offer_present(survey=survey(x), now=now)[0]
    Price.objects.filter(pk=x.s.pro_month.pk).update(unit_amount=D("55.00"))
    with pytest.raises(ChangeConflict) as conflict:
        offer_accept(presentation=presentation, actor=x.s.owner, now=now)
    assert conflict.value.code == "offer_changed"
    assert sub(x).next_discount_percent is None
    assert OfferPresentation.objects.get(pk=presentation.pk).status == "shown"


def test_accepting_twice_applies_once_and_other_offers_are_closed(x):
    now = timezone.now()
    discount, crossgrade = offer_present(survey=survey(x), now=now)
    offer_accept(presentation=discount, actor=x.s.owner, now=now)
    again = offer_accept(presentation=discount, actor=x.s.owner, now=now + timedelta(seconds=1))
    assert again.status == "accepted" and again.decided_at == now
    assert AuditEvent.objects.filter(action="retention.offer_accepted").count() == 1
    assert sub(x).version == x.subscription.version + 1
    with pytest.raises(ChangeConflict) as conflict:
        offer_accept(presentation=crossgrade, actor=x.s.owner, now=now)
    assert conflict.value.code == "offer_already_taken"


def test_showing_the_offers_again_keeps_what_was_shown(x):
    now = timezone.now()
    sv = survey(x)
    first = offer_present(survey=sv, now=now)
    second = offer_present(survey=sv, now=now + timedelta(minutes=1))
    assert [p.pk for p in first] == [p.pk for p in second] and OfferPresentation.objects.count() == 2


# --- declining, leaving, staying --------------------------------------------------------------------------


def test_decline_continues_to_the_cancellation_and_the_reason_goes_with_it(x):
    now = timezone.now()
    sv = survey(x)
    offer_present(survey=sv, now=now)
    quote = exit_survey_continue(survey=sv, actor=x.s.owner, now=now)
    assert quote.direction == "cancel" and quote.timing == "period_end"
    assert set(OfferPresentation.objects.values_list("status", flat=True)) == {"declined"}
    assert AuditEvent.objects.filter(action="retention.offer_declined", reason_code="too_expensive").count() == 2
    assert exit_survey_continue(survey=ExitSurvey.objects.get(pk=sv.pk), actor=x.s.owner, now=now).pk == quote.pk
    change = quote_accept(quote=quote, actor=x.s.owner, now=now)
    assert change.status == "scheduled" and change.reason_code == "too_expensive"
    assert ExitSurvey.objects.get(pk=sv.pk).plan_change == change
    assert AuditEvent.objects.get(action="plan_change.scheduled").reason_code == "too_expensive"
    with pytest.raises(ChangeConflict):
        offer_accept(presentation=OfferPresentation.objects.first(), actor=x.s.owner, now=now)


def test_decline_continues_to_the_downgrade(x):
    now = timezone.now()
    sv = survey(x, "not_using", flow="downgrade", target_price=x.s.basic_month)
    assert revenue_at_risk(survey=sv) == D("100.00")  # 250.00 − 150.00 a month, tax excluded
    quote = exit_survey_continue(survey=sv, actor=x.s.owner, now=now)
    assert (quote.direction, quote.to_price, quote.to_quantity) == ("downgrade", x.s.basic_month, 5)
    change = quote_accept(quote=quote, actor=x.s.owner, now=now)
    assert change.reason_code == "not_using" and ExitSurvey.objects.get(pk=sv.pk).plan_change == change


def test_decline_refused_by_the_rules_says_why(x):
    ChangeRule.objects.filter(direction="cancel").update(allowed=False, refusal_reason="Call us to cancel.")
    sv = survey(x)
    offer_present(survey=sv, now=timezone.now())
    with pytest.raises(ChangeRefused, match="Call us to cancel."):
        exit_survey_continue(survey=sv, actor=x.s.owner, now=timezone.now())
    assert set(OfferPresentation.objects.values_list("status", flat=True)) == {"shown"}  # nothing half-done


def test_an_ordinary_cancellation_keeps_its_default_reason(x):
    now = timezone.now()
    survey(x)  # a survey that led nowhere does not attach itself to other quotes
    q = quote_create(subscription=sub(x), to_price=None, quantity=0, now=now, actor=x.s.owner, cancel=True)
    assert quote_accept(quote=q, actor=x.s.owner, now=now).reason_code == "customer_cancel"


def test_reactivation_withdraws_the_cancellation_and_restores_everything(x):
    now = timezone.now()
    sv = survey(x)
    change = quote_accept(quote=exit_survey_continue(survey=sv, actor=x.s.owner, now=now), actor=x.s.owner, now=now)
    before = sub(x)
    kept = subscription_reactivate(subscription=before, actor=x.s.owner, now=now)
    assert kept.pk == change.pk and kept.status == "cancelled" and kept.failure_code == "reactivated"
    after = sub(x)
    assert (after.status, after.price_id, after.quantity, after.current_period_end) == \
        ("active", before.price_id, before.quantity, before.current_period_end)
    assert AuditEvent.objects.get(action="plan_change.cancelled").reason_code == "reactivated"
    subscription_renew(subscription_id=after.pk, now=after.current_period_end + timedelta(seconds=1))
    assert sub(x).status == "active"
    with pytest.raises(ChangeConflict):
        subscription_reactivate(subscription=sub(x), actor=x.s.owner, now=now)


def test_resume_before_the_pause_starts_withdraws_it(x):
    now = timezone.now()
    offer_accept(presentation=offer_present(survey=survey(x, "temporary_pause"), now=now)[0], actor=x.s.owner,
                 now=now)
    subscription_resume(subscription=sub(x), actor=x.s.owner, now=now)
    s = sub(x)
    assert s.paused_until is None and s.pause_starts_at is None
    with pytest.raises(ChangeConflict):
        subscription_resume(subscription=s, actor=x.s.owner, now=now)


def test_resume_during_the_pause_bills_a_new_period_from_now(x):
    now = timezone.now()
    offer_accept(presentation=offer_present(survey=survey(x, "temporary_pause"), now=now)[0], actor=x.s.owner,
                 now=now)
    s = sub(x)
    subscription_renew(subscription_id=s.pk, now=s.current_period_end + timedelta(seconds=1))  # paused period
    resume_at = sub(x).current_period_start + timedelta(days=5)
    subscription_resume(subscription=sub(x), actor=x.s.owner, now=resume_at)
    s = sub(x)
    assert s.current_period_start == resume_at and s.paused_until is None
    assert s.current_period_end == proration.add_interval(resume_at, "month", ZoneInfo(s.customer.timezone))
    invoice = Invoice.objects.get(billing_reason="renewal")
    assert invoice.total == D("297.50") and invoice.supply_start == resume_at


def test_trial_offer_starts_a_trial(x):
    now = timezone.now()
    presentation = offer_present(survey=survey(x, "missing_feature"), now=now)[0]
    assert presentation.offer.kind == "trial" and presentation.effect["then_pay"] == "297.50"
    offer_accept(presentation=presentation, actor=x.s.owner, now=now)
    assert OfferPresentation.objects.get(pk=presentation.pk).status == "accepted"
    assert AuditEvent.objects.get(action="retention.offer_accepted").reason_code == "missing_feature"
