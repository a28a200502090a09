"""Win-back: enrolment when a cancellation or downgrade takes effect, the sweep's exactly-once emails, stop
conditions, the signed links (offer and unsubscribe) and accepting an offer."""

from __future__ import annotations

import email.message
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail, signing
from django.test import Client, TestCase
from django.urls import reverse
from django.utils import timezone

from billing.models import AuditEvent, Invoice, Notification, Subscription
from billing.services.notifications import notification_render, notification_send
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.factories import PERIOD_END, MembershipFactory, subscription_setup
from retention.models import EmailOptOut, WinBackEnrolment, WinBackSend
from retention.services.winback import (
    OFFER_SALT,
    winback_offer_accept,
    winback_offer_effect,
    winback_offer_url,
    winback_sweep,
    winback_unsubscribe_url,
)
from retention.tests.winback_support import DAY, campaigns, cancel_at_period_end, downgrade_at_period_end

pytestmark = pytest.mark.django_db


def sweep(*, now, **kwargs):
    """The sweep, with its after-commit enqueue run (eager tasks send the emails)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return winback_sweep(now=now, **kwargs)


def path_of(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[1].join(["/", ""])


# --- enrolment ------------------------------------------------------------------------------------------------


def test_a_cancellation_enrols_when_it_takes_effect_not_when_it_is_scheduled():
    s = subscription_setup()
    c = campaigns()
    change = cancel_at_period_end(s)
    enrolment = WinBackEnrolment.objects.get()
    assert (enrolment.campaign, enrolment.plan_change, enrolment.customer, enrolment.status) == (
        c.cancel, change, s.customer, "active")
    assert (enrolment.triggered_at, enrolment.next_position, enrolment.next_send_at) == (
        PERIOD_END, 1, PERIOD_END + 7 * DAY)


def test_a_scheduled_cancellation_withdrawn_enrols_nobody():
    from billing.services.plan_changes import plan_change_cancel
    from billing.tests.factories import MID_JANUARY

    s = subscription_setup()
    campaigns()
    quote = quote_create(subscription=s.subscription, to_price=None, quantity=0, now=MID_JANUARY, actor=s.owner,
                         cancel=True)
    change = quote_accept(quote=quote, actor=s.owner, now=MID_JANUARY)
    assert WinBackEnrolment.objects.count() == 0  # scheduled, not in effect
    plan_change_cancel(plan_change=change, actor=s.owner, now=MID_JANUARY)
    assert WinBackEnrolment.objects.count() == 0


def test_a_downgrade_enrols_in_the_downgrade_campaign_only_and_an_upgrade_converts_it():
    s = subscription_setup()
    c = campaigns()
    downgrade_at_period_end(s)
    enrolment = WinBackEnrolment.objects.get()
    assert enrolment.campaign == c.downgrade and enrolment.next_send_at == PERIOD_END + 14 * DAY
    back = PERIOD_END + 3 * DAY
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    quote = quote_create(subscription=subscription, to_price=s.pro_month, quantity=5, now=back, actor=s.owner)
    change = quote_accept(quote=quote, actor=s.owner, now=back)
    assert change.status == "applied" and change.direction == "upgrade"
    enrolment.refresh_from_db()
    # Pro 5 × 50 − Basic 5 × 30 = 100.00 more per month, tax excluded
    assert (enrolment.status, enrolment.converted_at, enrolment.converted_by_change, enrolment.revenue_won_back,
            enrolment.currency, enrolment.next_send_at) == ("converted", back, change, Decimal("100.0000"), "EUR", None)
    assert sweep(now=PERIOD_END + 60 * DAY)["queued"] == 0
    assert Notification.objects.filter(kind="winback").count() == 0


def test_switching_to_annual_at_a_saving_is_no_downgrade_to_win_back():
    from billing.tests.factories import MID_JANUARY

    s = subscription_setup()
    campaigns()
    basic_year = s.basic.prices.get(interval="year")
    quote = quote_create(subscription=s.subscription, to_price=basic_year, quantity=5, now=MID_JANUARY,
                         actor=s.owner)
    change = quote_accept(quote=quote, actor=s.owner, now=MID_JANUARY)
    change.refresh_from_db()
    assert change.status in ("applied", "scheduled")
    if change.status == "scheduled":
        from billing.services.renewals import plan_changes_apply_due

        plan_changes_apply_due(now=PERIOD_END)
        change.refresh_from_db()
    assert change.status == "applied" and change.direction == "downgrade"  # less per day, same plan
    assert WinBackEnrolment.objects.count() == 0


def test_an_inactive_campaign_enrols_nobody():
    s = subscription_setup()
    c = campaigns()
    c.cancel.is_active = False
    c.cancel.save()
    cancel_at_period_end(s)
    assert WinBackEnrolment.objects.count() == 0


# --- the sweep ---------------------------------------------------------------------------------------------


def test_sweep_sends_each_step_once_when_due_and_finishes():
    s = subscription_setup()
    c = campaigns()
    cancel_at_period_end(s)
    assert sweep(now=PERIOD_END + 7 * DAY - timedelta(seconds=1))["queued"] == 0
    first_due = PERIOD_END + 7 * DAY
    assert sweep(now=first_due)["queued"] == 1
    assert sweep(now=first_due)["queued"] == 0  # run again (a retry, beat twice): nothing new
    enrolment = WinBackEnrolment.objects.get()
    assert (enrolment.next_position, enrolment.next_send_at) == (2, PERIOD_END + 30 * DAY)
    assert sweep(now=PERIOD_END + 29 * DAY)["queued"] == 0
    assert sweep(now=PERIOD_END + 30 * DAY)["queued"] == 1
    enrolment.refresh_from_db()
    assert (enrolment.status, enrolment.next_send_at) == ("finished", None)
    keys = sorted(Notification.objects.filter(kind="winback").values_list("key", flat=True))
    assert keys == [f"winback-{enrolment.pk}-step-{c.first.pk}", f"winback-{enrolment.pk}-step-{c.second.pk}"]
    assert WinBackSend.objects.count() == 2
    # eager tasks: both were sent through the outbox (real EmailMultiAlternatives)
    assert len(mail.outbox) == 2 and Notification.objects.filter(kind="winback", status="sent").count() == 2


def test_a_late_sweep_sends_one_step_per_day_never_two_emails_at_once():
    s = subscription_setup()
    campaigns()
    cancel_at_period_end(s)
    late = PERIOD_END + 40 * DAY  # both steps overdue
    assert sweep(now=late)["queued"] == 1
    assert WinBackEnrolment.objects.get().next_send_at == late + DAY
    assert sweep(now=late)["queued"] == 0
    assert sweep(now=late + DAY)["queued"] == 1
    assert WinBackEnrolment.objects.get().status == "finished"


def test_a_sweep_in_small_chunks_never_picks_an_enrolment_twice():
    s = subscription_setup()
    c = campaigns()
    cancel_at_period_end(s)
    WinBackEnrolment.objects.bulk_create([WinBackEnrolment(
        customer=s.customer, campaign=c.cancel, triggered_at=PERIOD_END, next_position=1,
        next_send_at=PERIOD_END + 7 * DAY, created_at=PERIOD_END) for _ in range(9)])
    counts = sweep(now=PERIOD_END + 40 * DAY, chunk_size=3)
    assert counts == {"queued": 10, "stopped": 0, "chunks": 4}
    assert set(WinBackEnrolment.objects.values_list("next_position", flat=True)) == {2}


def test_the_email_is_html_and_text_with_one_click_links_and_list_unsubscribe_headers():
    s = subscription_setup()
    campaigns()
    cancel_at_period_end(s)
    sweep(now=PERIOD_END + 7 * DAY)
    sweep(now=PERIOD_END + 30 * DAY)
    with_offer = Notification.objects.filter(kind="winback").order_by("pk").last()
    message = notification_render(notification=with_offer)
    assert message.subject == "Come back to Crossgrade: 20 % off for 3 months"
    assert message.to == [s.customer.email]
    offer_url, unsubscribe_url = with_offer.context["offer_url"], with_offer.context["unsubscribe_url"]
    assert offer_url in message.body and unsubscribe_url in message.body
    html = message.alternatives[0][0]
    assert offer_url in html and unsubscribe_url in html
    assert message.extra_headers["List-Unsubscribe"] == f"<{unsubscribe_url}>"
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    parsed = email.message_from_bytes(message.message().as_bytes())
    assert "".join(parsed["List-Unsubscribe"].split()) == f"<{unsubscribe_url}>"  # folded when long


def test_the_email_is_in_the_customers_language_and_the_subject_override_wins():
    s = subscription_setup()
    c = campaigns()
    s.customer.language = "de"
    s.customer.save()
    c.first.subject = "Wir vermissen Sie"
    c.first.save()
    cancel_at_period_end(s)
    sweep(now=PERIOD_END + 7 * DAY)
    notification = Notification.objects.get(kind="winback")
    assert notification.language == "de"
    message = notification_render(notification=notification)
    assert message.subject == "Wir vermissen Sie"


def test_opted_out_enrolments_stop_and_send_nothing():
    s = subscription_setup()
    campaigns()
    cancel_at_period_end(s)
    EmailOptOut.objects.create(customer=s.customer, source="staff", created_at=PERIOD_END)
    assert sweep(now=PERIOD_END + 7 * DAY) == {"queued": 0, "stopped": 1, "chunks": 1}
    assert WinBackEnrolment.objects.get().stop_reason == "opted_out"
    assert Notification.objects.filter(kind="winback").count() == 0


def test_enrolments_older_than_the_campaigns_age_limit_stop():
    s = subscription_setup()
    c = campaigns()
    c.cancel.max_age_days = 5
    c.cancel.save()
    cancel_at_period_end(s)
    assert sweep(now=PERIOD_END + 7 * DAY)["stopped"] == 1
    assert WinBackEnrolment.objects.get().stop_reason == "max_age"
    assert Notification.objects.filter(kind="winback").count() == 0


# --- unsubscribe ----------------------------------------------------------------------------------------------


def enrolled_and_emailed():
    s = subscription_setup()
    c = campaigns()
    cancel_at_period_end(s)
    sweep(now=PERIOD_END + 7 * DAY)
    return s, c


def test_unsubscribe_link_works_without_login_with_one_button():
    s, _c = enrolled_and_emailed()
    url = path_of(winback_unsubscribe_url(customer_id=s.customer.pk))
    client = Client(enforce_csrf_checks=True)
    page = client.get(url)
    assert page.status_code == 200 and b"Unsubscribe</button>" in page.content
    assert EmailOptOut.objects.count() == 0  # GET changes nothing (link scanners)
    done = client.post(url)
    assert done.status_code == 200 and b"gets no more emails" in done.content
    assert EmailOptOut.objects.get().source == "link"
    enrolment = WinBackEnrolment.objects.get()
    assert (enrolment.status, enrolment.stop_reason) == ("stopped", "opted_out")
    assert client.post(url).status_code == 200  # again: still fine, nothing twice
    assert AuditEvent.objects.filter(action="winback.opted_out").count() == 1
    assert sweep(now=PERIOD_END + 60 * DAY)["queued"] == 0


def test_rfc8058_one_click_post_from_a_mail_client():
    s, _c = enrolled_and_emailed()
    url = path_of(winback_unsubscribe_url(customer_id=s.customer.pk))
    response = Client(enforce_csrf_checks=True).post(url, data="List-Unsubscribe=One-Click",
                                                      content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert EmailOptOut.objects.get().source == "one_click"


@pytest.mark.parametrize("mangle", ["tampered", "cut", "garbage", "expired"])
def test_bad_links_answer_400_with_a_clear_message(mangle, monkeypatch):
    s, c = enrolled_and_emailed()
    enrolment = WinBackEnrolment.objects.get()
    if mangle == "expired":
        import time as real_time

        past = real_time.time() - 400 * 86400
        monkeypatch.setattr(signing.time, "time", lambda: past)
    urls = [path_of(winback_unsubscribe_url(customer_id=s.customer.pk)),
            path_of(winback_offer_url(enrolment_id=enrolment.pk, step_id=c.second.pk))]
    monkeypatch.undo()
    client = Client()
    client.force_login(s.owner)
    for url in urls:
        token = url.rstrip("/").rsplit("/", 1)[1]
        bad = {"tampered": token[:-1] + ("A" if token[-1] != "A" else "B"), "cut": token[:10],
               "garbage": "%00%ff..", "expired": token}[mangle]
        response = client.get(url.replace(token, bad))
        assert response.status_code in (400, 404) if mangle == "garbage" else response.status_code == 400
        if response.status_code == 400:
            text = response.content.decode()
            assert ("has expired" in text) if mangle == "expired" else ("not valid" in text)
    assert EmailOptOut.objects.count() == 0


# --- the offer ---------------------------------------------------------------------------------------------------


def offer_url_for(c) -> str:
    enrolment = WinBackEnrolment.objects.get()
    return path_of(winback_offer_url(enrolment_id=enrolment.pk, step_id=c.second.pk))


def test_offer_link_signs_in_first_and_lands_on_the_offer():
    s, c = enrolled_and_emailed()
    url = offer_url_for(c)
    response = Client().get(url)
    assert response.status_code == 302
    assert response.url.startswith(reverse("portal:login")) and "next=" in response.url


def test_another_accounts_user_gets_404_and_a_member_cannot_accept():
    s, c = enrolled_and_emailed()
    url = offer_url_for(c)
    stranger = MembershipFactory().user
    client = Client()
    client.force_login(stranger)
    assert client.get(url).status_code == 404
    assert client.post(url).status_code == 404
    client.force_login(s.member)
    page = client.get(url)
    assert page.status_code == 200 and b"Accept the offer" not in page.content
    assert client.post(url).status_code == 403
    assert Subscription.objects.filter(customer=s.customer).count() == 1


def test_restart_effect_and_accepting_twice_restarts_once():
    s, c = enrolled_and_emailed()
    url = offer_url_for(c)
    client = Client()
    client.force_login(s.owner)
    page = client.get(url)
    text = page.content.decode()
    # Basic × 5 at 30.00, VAT 19 %: 178.50 a period; 20 % off: 120.00 + 22.80 = 142.80 charged today
    assert page.status_code == 200 and "€178.50" in text and "€142.80" in text and "Accept the offer" in text
    first = client.post(url)
    assert first.status_code == 302
    second = client.post(url)  # double click / reload
    assert second.status_code == 302
    restarted = Subscription.objects.get(customer=s.customer, status="active")
    assert (restarted.price, restarted.quantity, restarted.discount_percent, restarted.discount_periods_left) == (
        s.basic_month, 5, Decimal("20.00"), 2)
    invoice = Invoice.objects.get(subscription=restarted)
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (Decimal("120.00"), Decimal("22.80"),
                                                                    Decimal("142.80"))
    enrolment = WinBackEnrolment.objects.get()
    assert (enrolment.status, enrolment.converted_subscription, enrolment.converted_step, enrolment.revenue_won_back,
            enrolment.currency) == ("converted", restarted, c.second, Decimal("120.0000"), "EUR")
    assert AuditEvent.objects.filter(action="winback.offer_accepted").count() == 1
    assert AuditEvent.objects.filter(action="subscription.restarted").count() == 1
    after = client.get(url)
    assert b"Welcome back" in after.content


def test_restart_needs_a_payment_method_and_says_so():
    s, c = enrolled_and_emailed()
    s.customer.payment_methods.all().delete()
    enrolment = WinBackEnrolment.objects.get()
    from billing.errors import BillingError

    with pytest.raises(BillingError) as info:
        winback_offer_accept(enrolment_id=enrolment.pk, step_id=c.second.pk, actor=s.owner, now=timezone.now())
    assert info.value.code == "no_payment_method"
    assert Subscription.objects.filter(customer=s.customer).count() == 1
    enrolment.refresh_from_db()
    assert enrolment.offer_accepted_at is None and enrolment.status == "active"


def test_downgraded_customer_gets_the_discount_from_the_next_renewal():
    s = subscription_setup()
    c = campaigns()
    downgrade_at_period_end(s)
    sweep(now=PERIOD_END + 14 * DAY)
    enrolment = WinBackEnrolment.objects.get()
    step = c.downgrade.steps.get()
    effect = winback_offer_effect(enrolment=enrolment, step=step, now=PERIOD_END + 14 * DAY)
    # Basic × 5 renews at 150.00 + 19 % = 178.50; at 20 % off 142.80
    assert (effect.restart, effect.regular_total, effect.discounted_total, effect.saving, effect.due_now) == (
        False, Decimal("178.50"), Decimal("142.80"), Decimal("35.70"), 0)
    winback_offer_accept(enrolment_id=enrolment.pk, step_id=step.pk, actor=s.owner, now=PERIOD_END + 14 * DAY)
    winback_offer_accept(enrolment_id=enrolment.pk, step_id=step.pk, actor=s.owner, now=PERIOD_END + 14 * DAY)
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    assert (subscription.next_discount_percent, subscription.next_discount_periods, subscription.discount_percent) == (
        Decimal("20.00"), 3, 0)
    assert AuditEvent.objects.filter(action="subscription.discount_scheduled").count() == 1


def test_a_link_to_a_step_without_an_offer_is_refused_clearly():
    s, c = enrolled_and_emailed()
    enrolment = WinBackEnrolment.objects.get()
    client = Client()
    client.force_login(s.owner)
    response = client.get(path_of(winback_offer_url(enrolment_id=enrolment.pk, step_id=c.first.pk)))
    assert response.status_code == 400 and b"no longer exists" in response.content


def test_notification_send_claims_so_a_batch_delivered_twice_sends_once():
    from retention.tasks import send_winback_emails

    s = subscription_setup()
    campaigns()
    cancel_at_period_end(s)
    sweep(now=PERIOD_END + 7 * DAY)
    notification = Notification.objects.get(kind="winback")
    before = len(mail.outbox)
    assert send_winback_emails([notification.pk, notification.pk]) == 0  # already sent by the eager task
    assert notification_send(notification_id=notification.pk, now=timezone.now()) is False
    assert len(mail.outbox) == before
    assert OFFER_SALT  # the salts differ per link kind


def test_seed_demo_adds_one_campaign_and_one_enrolled_customer_idempotently():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("seed_demo", stdout=out)
    call_command("seed_demo", stdout=out)
    enrolment = WinBackEnrolment.objects.get()
    assert (enrolment.customer.name, enrolment.campaign.name, enrolment.status) == (
        "Vandelay Industries", "After a cancellation", "active")
    assert list(enrolment.campaign.steps.values_list("delay_days", "offer__percent_off")) == [
        (7, None), (30, Decimal("20.00"))]
    assert "/winback/offer/" in out.getvalue()
    counts = sweep(now=timezone.now())
    assert counts["queued"] == 1 and Notification.objects.get(kind="winback").customer == enrolment.customer
