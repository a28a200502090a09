"""The staff report: exact counts, rates and revenue per offer, reason, campaign and step; the period; CSV;
permission refusal."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import Notification
from billing.tests.factories import CustomerFactory, UserFactory, subscription_setup
from retention.models import (
    ExitReason,
    ExitSurvey,
    OfferPresentation,
    RetentionOffer,
    WinBackEnrolment,
    WinBackSend,
)
from retention.selectors.report import retention_report_get
from retention.tests.winback_support import campaigns

pytestmark = pytest.mark.django_db
IN = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.get_default_timezone())
OUT = datetime(2026, 2, 27, 23, 0, tzinfo=timezone.get_default_timezone())  # before the period


def rows():
    s = subscription_setup()
    c = campaigns()
    expensive = ExitReason.objects.create(code="too_expensive", label="Too expensive")
    unused = ExitReason.objects.create(code="not_using", label="Not using it")
    pause = RetentionOffer.objects.create(name="Pause 2", headline="Pause", kind="pause", periods=2)
    discount = c.offer

    def shown(reason, offer, status, amount, currency="EUR", at=IN):
        customer = CustomerFactory()
        survey = ExitSurvey.objects.create(customer=customer, subscription=s.subscription, flow="cancel",
                                           reason=reason, created_at=at)
        OfferPresentation.objects.create(survey=survey, offer=offer, customer=customer, status=status,
                                         currency=currency, revenue_at_risk=Decimal(amount), shown_at=at)

    shown(expensive, discount, "accepted", "150.0000")
    shown(expensive, discount, "accepted", "33.3333")
    shown(expensive, discount, "declined", "90.0000")
    shown(expensive, discount, "accepted", "20.0000", currency="USD")
    shown(unused, pause, "declined", "50.0000")
    shown(unused, pause, "shown", "50.0000")
    shown(unused, discount, "accepted", "999.0000", at=OUT)  # outside the period: not counted

    def enrolled(status, *, sends=(), converted_at=None, won=None, step=None, at=IN):
        customer = CustomerFactory()
        enrolment = WinBackEnrolment.objects.create(
            customer=customer, campaign=c.cancel, triggered_at=at, status=status, created_at=at,
            converted_at=converted_at, revenue_won_back=won, currency="EUR" if won is not None else "",
            converted_step=step, offer_accepted_at=converted_at if step else None)
        for index, (each, sent) in enumerate(sends):
            notification = Notification.objects.create(
                customer=customer, kind="winback", key=f"k-{enrolment.pk}-{index}", to_email="x@example.com",
                status="sent" if sent else "pending", created_at=at)
            WinBackSend.objects.create(enrolment=enrolment, step=each, notification=notification, created_at=at)
        return enrolment

    enrolled("active", sends=[(c.first, True)])
    enrolled("finished", sends=[(c.first, True), (c.second, False)])
    enrolled("converted", sends=[(c.first, True), (c.second, True)], converted_at=IN + timedelta(days=1),
             won=Decimal("120.0000"), step=c.second)
    enrolled("converted", sends=[(c.first, True)], converted_at=IN + timedelta(days=2), won=Decimal("100.0000"))
    enrolled("converted", sends=[(c.first, True)], converted_at=OUT, won=Decimal("1.0000"), at=OUT)
    return c


def test_report_counts_rates_and_revenue_exactly():
    c = rows()
    report = retention_report_get(start=date(2026, 3, 1), end=date(2026, 3, 31))
    by_offer = {row.label: row for row in report.by_offer}
    assert list(by_offer) == ["Come back 20 %", "Pause 2"]
    discount = by_offer["Come back 20 %"]
    assert (discount.shown, discount.accepted, discount.declined) == (4, 3, 1)
    assert discount.rate == Decimal("0.75")
    assert discount.saved == {"EUR": Decimal("183.3333"), "USD": Decimal("20.0000")}
    assert discount.saved_annual == {"EUR": Decimal("2199.9996"), "USD": Decimal("240.0000")}
    pause = by_offer["Pause 2"]
    assert (pause.shown, pause.accepted, pause.declined, pause.rate, pause.saved) == (2, 0, 1, 0, {})
    by_reason = {row.label: row for row in report.by_reason}
    assert (by_reason["Too expensive"].shown, by_reason["Too expensive"].accepted) == (4, 3)
    assert (by_reason["Not using it"].shown, by_reason["Not using it"].declined) == (2, 1)

    [campaign] = report.campaigns
    assert (campaign.label, campaign.enrolled, campaign.emails, campaign.emails_sent, campaign.emailed) == (
        "After cancellation", 4, 6, 5, 4)
    assert (campaign.conversions, campaign.offers_accepted, campaign.rate) == (2, 1, Decimal("0.5"))
    assert campaign.won == {"EUR": Decimal("220.0000")} and campaign.won_annual == {"EUR": Decimal("2640.0000")}
    steps = {row.step_id: row for row in report.steps}
    assert (steps[c.first.pk].emails, steps[c.first.pk].conversions) == (4, 0)
    assert (steps[c.second.pk].emails, steps[c.second.pk].emails_sent, steps[c.second.pk].conversions,
            steps[c.second.pk].won) == (2, 1, 1, {"EUR": Decimal("120.0000")})


def staff(*perms):
    user = UserFactory(username="analyst", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=perms))
    client = Client()
    client.force_login(user)
    return client


def test_report_page_and_csv_for_a_chosen_period():
    rows()
    client = staff("view_retention_report")
    url = reverse("admin:retention_report")
    page = client.get(url, {"start": "2026-03-01", "end": "2026-03-31"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "Come back 20 %" in text and "€183.33" in text and "75%" in text
    download = client.get(url, {"start": "2026-03-01", "end": "2026-03-31", "format": "csv"})
    assert download["Content-Type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(download.content.decode())))
    assert ["offer", "Come back 20 %", "4", "3", "1", "0.7500", "EUR", "183.33", "2200.00"] in table
    assert ["offer", "Come back 20 %", "4", "3", "1", "0.7500", "USD", "20.00", "240.00"] in table
    assert ["campaign", "After cancellation", "6", "2", "4", "0.5000", "EUR", "220.00", "2640.00"] in table


def test_report_defaults_to_the_last_30_days_and_refuses_a_bad_period():
    client = staff("view_retention_report")
    url = reverse("admin:retention_report")
    page = client.get(url)
    assert page.status_code == 200
    today = timezone.localdate()
    assert page.context["start"] == today - timedelta(days=29) and page.context["end"] == today
    bad = client.get(url, {"start": "2026-04-01", "end": "2026-03-01"})
    assert bad.status_code == 200 and "must be on or before" in bad.content.decode() and bad.context["report"] is None
    garbage = client.get(url, {"start": "yesterday", "end": ""})
    assert garbage.status_code == 200 and garbage.context["report"] is None


def test_report_needs_its_permission():
    client = staff("view_winbackcampaign")
    assert client.get(reverse("admin:retention_report")).status_code == 403
    assert client.get(reverse("admin:retention_report"), {"format": "csv"}).status_code == 403
    anonymous = Client().get(reverse("admin:retention_report"))
    assert anonymous.status_code == 302
