"""The staff report: retention offers shown, accepted and declined per offer and per reason, revenue saved, and
win-back emails and conversions per campaign and step, for a period. Reads only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.utils import timezone

from billing.money import format_amount
from retention.models import OfferPresentation, WinBackEnrolment, WinBackSend

ANNUAL = 12


@dataclass
class OfferRow:
    label: str
    shown: int = 0
    accepted: int = 0
    declined: int = 0
    saved: dict[str, Decimal] = field(default_factory=dict)  # monthly, per currency

    @property
    def rate(self) -> Decimal | None:
        return Decimal(self.accepted) / self.shown if self.shown else None

    @property
    def saved_annual(self) -> dict[str, Decimal]:
        return {currency: amount * ANNUAL for currency, amount in self.saved.items()}


@dataclass
class WinBackRow:
    label: str
    campaign_id: int
    step_id: int | None = None
    enrolled: int = 0
    emails: int = 0
    emails_sent: int = 0
    emailed: int = 0  # enrolments that got at least one email in the period
    conversions: int = 0
    offers_accepted: int = 0
    won: dict[str, Decimal] = field(default_factory=dict)

    @property
    def rate(self) -> Decimal | None:
        return Decimal(self.conversions) / self.emailed if self.emailed else None

    @property
    def won_annual(self) -> dict[str, Decimal]:
        return {currency: amount * ANNUAL for currency, amount in self.won.items()}


@dataclass
class RetentionReport:
    start: date
    end: date
    by_offer: list[OfferRow]
    by_reason: list[OfferRow]
    campaigns: list[WinBackRow]
    steps: list[WinBackRow]


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, the day after end 00:00) in the site's time zone: `end` is included."""
    tz = timezone.get_default_timezone()
    return (datetime.combine(start, time.min, tzinfo=tz), datetime.combine(end + timedelta(days=1), time.min, tzinfo=tz))


def _offer_rows(presentations, key: str, label: str) -> list[OfferRow]:
    rows: dict[object, OfferRow] = {}
    for row in (presentations.values(key, label).annotate(
            shown=Count("pk"), accepted=Count("pk", filter=Q(status=OfferPresentation.Status.ACCEPTED)),
            declined=Count("pk", filter=Q(status=OfferPresentation.Status.DECLINED))).order_by(label, key)):
        rows[row[key]] = OfferRow(label=row[label], shown=row["shown"], accepted=row["accepted"],
                                  declined=row["declined"])
    for row in (presentations.filter(status=OfferPresentation.Status.ACCEPTED).values(key, "currency")
                .annotate(saved=Sum("revenue_at_risk")).order_by("currency")):
        rows[row[key]].saved[row["currency"]] = row["saved"]
    return list(rows.values())


def retention_report_get(*, start: date, end: date) -> RetentionReport:
    since, until = _bounds(start, end)
    presentations = OfferPresentation.objects.filter(shown_at__gte=since, shown_at__lt=until)
    by_offer = _offer_rows(presentations, "offer_id", "offer__name")
    by_reason = _offer_rows(presentations, "survey__reason_id", "survey__reason__label")

    campaigns: dict[int, WinBackRow] = {}
    steps: dict[int, WinBackRow] = {}

    def campaign_row(campaign_id: int, name: str) -> WinBackRow:
        return campaigns.setdefault(campaign_id, WinBackRow(label=name, campaign_id=campaign_id))

    sends = WinBackSend.objects.filter(created_at__gte=since, created_at__lt=until)
    for row in (sends.values("step_id", "step__position", "step__delay_days", "step__campaign_id",
                             "step__campaign__name")
                .annotate(emails=Count("pk"), sent=Count("pk", filter=Q(notification__status="sent")),
                          emailed=Count("enrolment_id", distinct=True))
                .order_by("step__campaign__name", "step__position")):
        campaign = campaign_row(row["step__campaign_id"], row["step__campaign__name"])
        campaign.emails += row["emails"]
        campaign.emails_sent += row["sent"]
        steps[row["step_id"]] = WinBackRow(
            label=f"{row['step__campaign__name']} · {row['step__position']} (+{row['step__delay_days']} d)",
            campaign_id=row["step__campaign_id"], step_id=row["step_id"], emails=row["emails"],
            emails_sent=row["sent"], emailed=row["emailed"])
    for row in sends.values("step__campaign_id").annotate(emailed=Count("enrolment_id", distinct=True)):
        campaigns[row["step__campaign_id"]].emailed = row["emailed"]
    for row in (WinBackEnrolment.objects.filter(created_at__gte=since, created_at__lt=until)
                .values("campaign_id", "campaign__name").annotate(n=Count("pk"))):
        campaign_row(row["campaign_id"], row["campaign__name"]).enrolled = row["n"]
    converted = WinBackEnrolment.objects.filter(converted_at__gte=since, converted_at__lt=until,
                                                status=WinBackEnrolment.Status.CONVERTED)
    for row in converted.values("campaign_id", "campaign__name").annotate(
            n=Count("pk"), accepted=Count("pk", filter=Q(offer_accepted_at__isnull=False))):
        campaign = campaign_row(row["campaign_id"], row["campaign__name"])
        campaign.conversions, campaign.offers_accepted = row["n"], row["accepted"]
    for row in (converted.exclude(revenue_won_back__isnull=True).values("campaign_id", "currency")
                .annotate(won=Sum("revenue_won_back")).order_by("currency")):
        campaigns[row["campaign_id"]].won[row["currency"]] = row["won"]
    for row in (converted.filter(converted_step__isnull=False)
                .values("converted_step_id", "converted_step__position", "converted_step__delay_days",
                        "campaign_id", "campaign__name").annotate(n=Count("pk"))):
        step = steps.setdefault(row["converted_step_id"], WinBackRow(  # accepted now, emailed before the period
            label=f"{row['campaign__name']} · {row['converted_step__position']} "
                  f"(+{row['converted_step__delay_days']} d)",
            campaign_id=row["campaign_id"], step_id=row["converted_step_id"]))
        step.offers_accepted = step.conversions = row["n"]
    for row in (converted.filter(converted_step__isnull=False).exclude(revenue_won_back__isnull=True)
                .values("converted_step_id", "currency").annotate(won=Sum("revenue_won_back")).order_by("currency")):
        steps[row["converted_step_id"]].won[row["currency"]] = row["won"]
    return RetentionReport(start=start, end=end, by_offer=by_offer, by_reason=by_reason,
                           campaigns=sorted(campaigns.values(), key=lambda r: r.label), steps=list(steps.values()))


def retention_report_csv_rows(report: RetentionReport) -> list[list[str]]:
    """One row per offer, reason, campaign and step (and per currency where money is involved)."""
    rows = [["section", "name", "shown_or_emails", "accepted_or_conversions", "declined_or_emailed", "rate",
             "currency", "monthly", "annualised"]]

    def money_rows(section: str, label: str, counts: list[str], rate, amounts: dict[str, Decimal]) -> None:
        rate_text = f"{rate:.4f}" if rate is not None else ""
        if not amounts:
            rows.append([section, label, *counts, rate_text, "", "", ""])
        for currency, amount in sorted(amounts.items()):
            rows.append([section, label, *counts, rate_text, currency, format_amount(amount, currency),
                         format_amount(amount * ANNUAL, currency)])

    for section, offer_rows in (("offer", report.by_offer), ("reason", report.by_reason)):
        for row in offer_rows:
            money_rows(section, row.label, [str(row.shown), str(row.accepted), str(row.declined)], row.rate, row.saved)
    for section, winback_rows in (("campaign", report.campaigns), ("step", report.steps)):
        for row in winback_rows:
            money_rows(section, row.label, [str(row.emails), str(row.conversions), str(row.emailed)], row.rate,
                       row.won)
    return rows
