"""Renewal-window annual offers: eligibility, the exact saving, the discounted first year, dismissal, the email.

The setup (billing.tests.factories.subscription_setup): Acme on Basic × 5 monthly at 30.00 a seat, period
1 Jan – 1 Feb 2026 (Europe/Berlin, day granularity), VAT 19 % exclusive; Basic annual is 300.00 a seat.
With a 14-day window the offer shows from 18 Jan 2026 00:00 Berlin until the renewal on 1 Feb.

By hand (PRORATION.md):
  monthly net 5 × 30.00 = 150.00; as paid 150.00 + R(150 × 0.19) = 150.00 + 28.50 = 178.50
  12 months net 1800.00, as paid 12 × 178.50 = 2142.00
  annual net 5 × 300.00 = 1500.00; as paid 1500.00 + 285.00 = 1785.00
  saving net 1800.00 − 1500.00 = 300.00 = 16.7 % (16.666…); as paid 2142.00 − 1785.00 = 357.00 = 16.7 %
  switching on 20 Jan 12:00: 12 of 31 days remain; credit −R(150 × 12/31) = −58.06 (58.0645…), charge 1500.00,
  subtotal 1441.94, tax R(1441.94 × 0.19) = 273.97 (273.9686), total 1715.91; new period 20 Jan 2026 12:00 –
  20 Jan 2027 12:00 (anchor reset)
  with 10 % off the first year: charge R(1500 × 0.90) = 1350.00, subtotal 1291.94, tax R(245.4686) = 245.47,
  total 1537.41; first year net 1350.00, saving 450.00 = 25.0 %; as paid 1606.50, saving 535.50 = 25.0 %;
  the renewal after it at list price: 1500.00 + 285.00 = 1785.00
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail

from billing.errors import ChangeRefused
from billing.models import AuditEvent, Invoice, Notification, PlanChange, Price, Subscription
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create, quote_price
from billing.services.renewals import subscription_renew
from billing.tests.factories import BERLIN, PERIOD_END, subscription_setup
from retention.models import RenewalOffer, RenewalOfferDismissal, RenewalOfferQuote
from retention.selectors.renewal_offers import renewal_offer_get, renewal_offers_for_customer
from retention.services.renewal_offers import (
    renewal_offer_dismiss,
    renewal_offer_emails_queue,
    renewal_offer_quote_create,
)

pytestmark = pytest.mark.django_db

WINDOW_OPENS = datetime(2026, 1, 18, tzinfo=BERLIN)
SWITCH_AT = datetime(2026, 1, 20, 12, 0, tzinfo=BERLIN)
D = Decimal


def offer(**fields) -> RenewalOffer:
    return RenewalOffer.objects.create(**{"name": "Annual, 2 months free", "window_days": 14, **fields})


def sub(s) -> Subscription:
    return Subscription.objects.select_related("customer", "price__plan__product").get(pk=s.subscription.pk)


@pytest.fixture
def s():
    return subscription_setup()


# --- who sees it, and when ---------------------------------------------------------------


@pytest.mark.parametrize(("moment", "shown"), [
    (WINDOW_OPENS - timedelta(seconds=1), False),  # a second before the window
    (WINDOW_OPENS, True),  # the window's first instant
    (SWITCH_AT, True),
    (PERIOD_END - timedelta(seconds=1), True),  # the last second before the renewal
    (PERIOD_END, False),  # the period is over (the renewal step runs)
])
def test_the_window_edges(s, moment, shown):
    offer()
    view, reason = renewal_offer_get(subscription=sub(s), now=moment)
    assert (view is not None) is shown
    assert reason == ("" if shown else "outside_window")


def test_no_offer_configured_inactive_or_for_another_product(s):
    assert renewal_offer_get(subscription=sub(s), now=SWITCH_AT) == (None, "no_offer")
    o = offer(is_active=False)
    assert renewal_offer_get(subscription=sub(s), now=SWITCH_AT) == (None, "no_offer")
    o.is_active = True
    o.save()
    o.plans.add(s.pro)  # only for Pro subscribers
    assert renewal_offer_get(subscription=sub(s), now=SWITCH_AT) == (None, "no_offer")
    o.plans.add(s.basic)
    assert renewal_offer_get(subscription=sub(s), now=SWITCH_AT)[0] is not None


def test_only_the_first_fitting_offer_by_priority(s):
    offer(name="later", priority=200)
    first = offer(name="first", priority=10, headline="Two months free")
    view, _ = renewal_offer_get(subscription=sub(s), now=SWITCH_AT)
    assert view.offer == first


def test_not_for_annual_subscriptions(s):
    offer()
    Subscription.objects.filter(pk=s.subscription.pk).update(price=s.pro_year, quantity=5)
    assert renewal_offer_get(subscription=sub(s), now=SWITCH_AT) == (None, "not_monthly")


def test_not_when_the_plan_has_no_annual_price_in_the_currency(s):
    offer()
    Price.objects.filter(plan=s.basic, interval="year").update(is_active=False)
    assert renewal_offer_get(subscription=sub(s), now=SWITCH_AT) == (None, "no_target_price")


def test_not_when_past_due_or_cancelled_or_trialing(s):
    offer()
    for status, reason in (("past_due", "past_due"), ("cancelled", "not_active"), ("trialing", "not_active")):
        Subscription.objects.filter(pk=s.subscription.pk).update(status=status)
        assert renewal_offer_get(subscription=sub(s), now=SWITCH_AT) == (None, reason)


def test_not_when_a_change_is_scheduled(s):
    offer()
    cancel = quote_create(subscription=sub(s), to_price=None, quantity=0, now=SWITCH_AT, actor=s.owner, cancel=True)
    assert quote_accept(quote=cancel, actor=s.owner, now=SWITCH_AT).status == PlanChange.Status.SCHEDULED
    assert renewal_offer_get(subscription=sub(s), now=SWITCH_AT) == (None, "change_scheduled")


def test_not_when_the_rule_switches_at_period_end(s):
    from billing.models import ChangeRule

    offer()
    ChangeRule.objects.filter(name="Monthly to annual").update(timing="period_end", charge="none", credit="none")
    assert renewal_offer_get(subscription=sub(s), now=SWITCH_AT) == (None, "not_immediate")


def test_not_when_annual_saves_nothing(s):
    offer()
    Price.objects.filter(plan=s.basic, interval="year").update(unit_amount=D("360.00"))
    assert renewal_offer_get(subscription=sub(s), now=SWITCH_AT) == (None, "no_saving")


# --- the figures -----------------------------------------------------------------------------


def test_the_saving_and_todays_charge_are_exact(s):
    offer()
    view, _ = renewal_offer_get(subscription=sub(s), now=SWITCH_AT)
    assert (view.monthly_net, view.monthly_gross, view.months) == (D("150.00"), D("178.50"), 12)
    assert (view.net.months_total, view.net.period_amount, view.net.saving, view.net.saving_percent) == (
        D("1800.00"), D("1500.00"), D("300.00"), D("16.7"))
    assert (view.gross.months_total, view.gross.period_amount, view.gross.saving, view.gross.saving_percent) == (
        D("2142.00"), D("1785.00"), D("357.00"), D("16.7"))
    assert view.first_net is None and view.discount_percent is None
    q = view.quote
    assert [line["amount"] for line in q.lines] == ["-58.06", "1500.00"]
    assert (q.subtotal, q.tax, q.total, q.amount_due) == (D("1441.94"), D("273.97"), D("1715.91"), D("1715.91"))
    assert q.next_period_amount == view.gross.period_amount
    assert (q.new_period_start, q.new_period_end) == (SWITCH_AT, datetime(2027, 1, 20, 12, 0, tzinfo=BERLIN))


def test_the_discounted_first_year_is_shown_and_priced_by_the_quote(s):
    offer(discount_percent=D("10"))
    view, _ = renewal_offer_get(subscription=sub(s), now=SWITCH_AT)
    assert view.discount_percent == D("10")
    assert (view.first_net.period_amount, view.first_net.saving, view.first_net.saving_percent) == (
        D("1350.00"), D("450.00"), D("25.0"))
    assert (view.first_gross.period_amount, view.first_gross.saving, view.first_gross.saving_percent) == (
        D("1606.50"), D("535.50"), D("25.0"))
    assert view.gross.saving == D("357.00")  # every later year, at list price
    q = view.quote
    assert [line["amount"] for line in q.lines] == ["-58.06", "1350.00"]
    assert "less 10% discount" in q.lines[1]["description"]
    assert (q.subtotal, q.tax, q.total, q.next_period_amount) == (D("1291.94"), D("245.47"), D("1537.41"),
                                                                  D("1785.00"))


def test_a_subscription_with_its_own_discount_keeps_it_instead_of_the_staff_discount(s):
    offer(discount_percent=D("10"))
    Subscription.objects.filter(pk=s.subscription.pk).update(discount_percent=D("20"))
    view, _ = renewal_offer_get(subscription=sub(s), now=SWITCH_AT)
    assert view.discount_percent is None and view.first_net is None
    assert (view.monthly_net, view.net.period_amount, view.net.saving) == (D("120.00"), D("1200.00"), D("240.00"))


def test_switching_charges_exactly_the_shown_amount_resets_the_anchor_and_the_next_year_is_list_price(s):
    """Accepting the offer's quote charges 1537.41, starts a year on 20 Jan 12:00 at 10 % off, audits the
    discount; the renewal on 20 Jan 2027 bills 1500.00 + 19 % (list price) and the discount is gone."""
    offer(discount_percent=D("10"))
    shown, _ = renewal_offer_get(subscription=sub(s), now=SWITCH_AT)
    quote = renewal_offer_quote_create(subscription=sub(s), actor=s.owner, now=SWITCH_AT)
    assert quote.target_discount_percent == D("10") and quote.amount_due == shown.quote.amount_due == D("1537.41")
    assert RenewalOfferQuote.objects.get(quote=quote).period_end == PERIOD_END
    change = quote_accept(quote=quote, actor=s.owner, now=SWITCH_AT)
    assert change.status == PlanChange.Status.APPLIED and change.amount_due == D("1537.41")
    invoice = Invoice.objects.get(plan_change=change)
    assert invoice.total == D("1537.41")
    after = sub(s)
    assert after.price == Price.objects.get(plan=s.basic, interval="year")
    assert (after.current_period_start, after.current_period_end) == (
        SWITCH_AT, datetime(2027, 1, 20, 12, 0, tzinfo=BERLIN))
    assert (after.discount_percent, after.discount_periods_left) == (D("10"), 0)
    event = AuditEvent.objects.get(action="subscription.discount_set")
    assert event.after["discount_percent"] == "10.00" and event.before["discount_percent"] == "0.00"
    assert subscription_renew(subscription_id=after.pk, now=after.current_period_end) is True
    renewed = sub(s)
    assert (renewed.discount_percent, renewed.discount_periods_left) == (D("0"), None)
    renewal = Invoice.objects.get(subscription=renewed, billing_reason="renewal")
    assert (renewal.subtotal, renewal.total) == (D("1500.00"), D("1785.00"))


def test_the_quote_service_refuses_a_bad_discount_and_is_unchanged_without_one(s):
    year = Price.objects.get(plan=s.basic, interval="year")
    for bad in (D("-1"), D("100"), D("12.345"), D("NaN")):
        with pytest.raises(ChangeRefused) as refused:
            quote_price(subscription=sub(s), to_price=year, quantity=5, now=SWITCH_AT, target_discount_percent=bad)
        assert refused.value.code == "invalid_discount"
    with pytest.raises(ChangeRefused):
        quote_price(subscription=sub(s), to_price=None, quantity=0, now=SWITCH_AT, cancel=True,
                    target_discount_percent=D("5"))
    plain = quote_price(subscription=sub(s), to_price=year, quantity=5, now=SWITCH_AT)
    assert plain.target_discount_percent is None and plain.total == D("1715.91")


def test_switching_is_refused_with_the_reason_once_the_offer_is_gone(s):
    offer()
    renewal_offer_dismiss(subscription=sub(s), actor=s.owner, now=SWITCH_AT)
    with pytest.raises(ChangeRefused) as refused:
        renewal_offer_quote_create(subscription=sub(s), actor=s.owner, now=SWITCH_AT)
    assert refused.value.code == "dismissed"


# --- not now ---------------------------------------------------------------------------------


def test_not_now_hides_it_for_this_renewal_only_and_is_audited_once(s):
    offer()
    renewal_offer_dismiss(subscription=sub(s), actor=s.owner, now=SWITCH_AT)
    renewal_offer_dismiss(subscription=sub(s), actor=s.owner, now=SWITCH_AT)  # a double click
    assert RenewalOfferDismissal.objects.count() == 1
    assert AuditEvent.objects.filter(action="renewal_offer.dismissed").count() == 1
    assert renewal_offer_get(subscription=sub(s), now=SWITCH_AT) == (None, "dismissed")
    assert renewal_offers_for_customer(customer_id=s.customer.pk, now=SWITCH_AT) == {}
    subscription_renew(subscription_id=s.subscription.pk, now=PERIOD_END)  # into February
    view, _ = renewal_offer_get(subscription=sub(s), now=datetime(2026, 2, 20, tzinfo=BERLIN))
    assert view is not None and view.renews_at == datetime(2026, 3, 1, tzinfo=BERLIN)


# --- the email -----------------------------------------------------------------------------


def test_the_email_goes_a_few_days_into_the_window_once_per_subscription_and_period(
        s, django_capture_on_commit_callbacks):
    offer(email_after_days=3, headline="Two months free")
    assert renewal_offer_emails_queue(now=datetime(2026, 1, 20, 23, 59, tzinfo=BERLIN)) == 0  # 2 days in
    with django_capture_on_commit_callbacks(execute=True):
        assert renewal_offer_emails_queue(now=datetime(2026, 1, 21, 0, 0, tzinfo=BERLIN)) == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert renewal_offer_emails_queue(now=datetime(2026, 1, 25, tzinfo=BERLIN)) == 0
    notification = Notification.objects.get(kind="renewal_offer")
    assert notification.status == Notification.Status.SENT
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == "Switch Analytics to annual billing and save €357.00 a year"
    assert "€1,785.00 a year instead of €2,142.00" in message.body and "(16.7 %)" in message.body
    assert "Two months free" in message.body and f"/c/{s.customer.pk}/#renewal-offer-" in message.body
    html = message.alternatives[0][0]
    assert "€357.00" in html and "See the offer" in html
    assert AuditEvent.objects.filter(action="renewal_offer.emailed").count() == 1


def test_the_email_in_german_with_the_discount(s, django_capture_on_commit_callbacks):
    offer(discount_percent=D("10"))
    type(s.customer).objects.filter(pk=s.customer.pk).update(language="de")
    with django_capture_on_commit_callbacks(execute=True):
        assert renewal_offer_emails_queue(now=datetime(2026, 1, 25, tzinfo=BERLIN)) == 1
    body = mail.outbox[0].body
    assert "1.606,50" in body and "535,50" in body and "25 %" in body  # German number formats


def test_no_email_when_dismissed_or_switched_off_or_past_due(s):
    o = offer(send_email=False)
    assert renewal_offer_emails_queue(now=datetime(2026, 1, 25, tzinfo=BERLIN)) == 0
    o.send_email = True
    o.save()
    renewal_offer_dismiss(subscription=sub(s), actor=s.owner, now=SWITCH_AT)
    assert renewal_offer_emails_queue(now=datetime(2026, 1, 25, tzinfo=BERLIN)) == 0
    RenewalOfferDismissal.objects.all().delete()
    Subscription.objects.filter(pk=s.subscription.pk).update(status="past_due")
    assert renewal_offer_emails_queue(now=datetime(2026, 1, 25, tzinfo=BERLIN)) == 0
    assert not Notification.objects.exists()
