"""Amount-off retention discounts: "X off each of your next N invoices", credited to the balance just before each
renewal invoice (which applies it first, after tax), at most the invoice's total. The subscription: Pro × 5 monthly,
250.00 + 19 % VAT 47.50 = 297.50 a month (retention.tests.factories)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.errors import ChangeConflict
from billing.models import AuditEvent, BalanceEntry, Invoice, Price, Subscription
from billing.selectors import customer_balance, subscription_next_renewal
from billing.services.renewals import subscription_renew
from retention.models import RecurringCredit, RetentionOffer
from retention.services.exit_flow import exit_survey_start
from retention.services.offers import offer_accept, offer_present, offers_eligible
from retention.tests.factories import exit_setup

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture
def x():
    setup = exit_setup()
    RetentionOffer.objects.filter(pk=setup.discount.pk).update(percent_off=None, amount_off=D("10.00"),
                                                               currency="EUR", headline="10 € off 3 invoices")
    return setup


def sub(x) -> Subscription:
    return Subscription.objects.select_related("customer", "price__plan__product").get(pk=x.subscription.pk)


def shown(x, now=None):
    now = now or timezone.now()
    survey = exit_survey_start(subscription=sub(x), flow="cancel", reason_code="too_expensive", details="",
                               actor=x.s.owner, now=now)
    return offer_present(survey=survey, now=now)[0]


def renew_once(x) -> Invoice | None:
    s = sub(x)
    assert subscription_renew(subscription_id=s.pk, now=s.current_period_end + timedelta(seconds=1))
    return Invoice.objects.filter(subscription=s, billing_reason="renewal").order_by("-pk").first()


def test_the_effect_is_the_renewal_total_less_the_amount_off():
    x = exit_setup()
    RetentionOffer.objects.filter(pk=x.discount.pk).update(percent_off=None, amount_off=D("10.00"), currency="EUR")
    effect = shown(x).effect
    # 297.50 − 10.00 = 287.50 for each of the next 3 renewals; 3 × 10.00 = 30.00 in all.
    assert (effect["kind"], effect["amount_off"], effect["credit_per_period"], effect["capped"]) == \
        ("discount", "10.00", "10.00", False)
    assert (effect["pay"], effect["instead_of"], effect["saving_per_period"], effect["saving_total"]) == \
        ("287.50", "297.50", "10.00", "30.00")
    assert effect["starts_at"] == sub(x).current_period_end.isoformat() and effect["periods"] == 3


def test_accepting_credits_each_of_the_next_three_renewals_and_not_the_fourth(x):
    now = timezone.now()
    presentation = shown(x, now)
    offer_accept(presentation=presentation, actor=x.s.owner, now=now)
    credit = RecurringCredit.objects.get()
    assert (credit.subscription_id, credit.currency, credit.amount, credit.periods, credit.periods_left,
            credit.presentation_id) == (x.subscription.pk, "EUR", D("10.00"), 3, 3, presentation.pk)
    event = AuditEvent.objects.get(action="retention.offer_accepted")
    assert event.after["effect"]["pay"] == "287.50" and "10.00 EUR off each of the next 3" in event.message
    # The overview's next renewal: 297.50 billed, 10.00 credited first, 287.50 to pay.
    renewal = subscription_next_renewal(subscription=sub(x))
    assert (renewal.total, renewal.credit, renewal.to_pay) == (D("297.50"), D("10.00"), D("287.50"))
    rows = []
    for _period in range(4):
        invoice = renew_once(x)
        rows.append((invoice.total, invoice.balance_applied, invoice.amount_due))
    assert rows == [(D("297.50"), D("10.00"), D("287.50"))] * 3 + [(D("297.50"), D("0.00"), D("297.50"))]
    granted = BalanceEntry.objects.filter(kind="retention_credit").order_by("pk")
    assert [e.amount for e in granted] == [D("10.00")] * 3
    assert granted[0].description.startswith("Retention offer “30 % off”: 10.00 EUR off the renewal of")  # its name
    assert granted[2].description.endswith("(3 of 3)")
    assert customer_balance(customer=x.s.customer, currency="EUR") == 0  # nothing left over
    assert AuditEvent.objects.filter(action="retention.credit_granted").count() == 3
    assert RecurringCredit.objects.get().periods_left == 0
    assert subscription_next_renewal(subscription=sub(x)).credit == 0


def test_a_credit_above_the_invoice_total_is_capped_at_it(x):
    RetentionOffer.objects.filter(pk=x.discount.pk).update(amount_off=D("400.00"), periods=2)
    now = timezone.now()
    presentation = shown(x, now)
    # 400.00 off a 297.50 invoice: 297.50 credited, nothing to pay, no credit left behind.
    assert (presentation.effect["credit_per_period"], presentation.effect["pay"], presentation.effect["capped"],
            presentation.effect["saving_total"]) == ("297.50", "0.00", True, "595.00")
    offer_accept(presentation=presentation, actor=x.s.owner, now=now)
    invoice = renew_once(x)
    assert (invoice.total, invoice.balance_applied, invoice.amount_due, invoice.status) == \
        (D("297.50"), D("297.50"), D("0.00"), "paid")
    assert BalanceEntry.objects.get(kind="retention_credit").amount == D("297.50")
    assert customer_balance(customer=x.s.customer, currency="EUR") == 0


def test_paused_periods_do_not_use_one_up(x):
    now = timezone.now()
    offer_accept(presentation=shown(x, now), actor=x.s.owner, now=now)
    s = sub(x)
    Subscription.objects.filter(pk=s.pk).update(pause_starts_at=s.current_period_end,
                                                paused_until=s.current_period_end + timedelta(days=31))
    assert subscription_next_renewal(subscription=sub(x)).credit == D("10.00")  # at the resume date
    assert renew_once(x) is None  # the paused period: no invoice, no credit
    assert RecurringCredit.objects.get().periods_left == 3
    assert not BalanceEntry.objects.filter(kind="retention_credit").exists()
    invoice = renew_once(x)
    assert (invoice.balance_applied, invoice.amount_due) == (D("10.00"), D("287.50"))
    assert RecurringCredit.objects.get().periods_left == 2


def test_no_second_amount_off_while_one_is_running_and_a_changed_price_is_refused(x):
    RetentionOffer.objects.update(cooldown_days=0)
    now = timezone.now()
    offer_accept(presentation=shown(x, now), actor=x.s.owner, now=now)
    survey = exit_survey_start(subscription=sub(x), flow="cancel", reason_code="too_expensive", details="",
                               actor=x.s.owner, now=now)
    assert "discount" not in [item.offer.kind for item in offers_eligible(survey=survey, now=now)]
    RecurringCredit.objects.all().delete()
    presentation = offer_present(survey=survey, now=now)[0]
    assert presentation.offer.kind == "discount"
    Price.objects.filter(pk=x.s.pro_month.pk).update(unit_amount=D("60.00"))
    with pytest.raises(ChangeConflict) as moved:
        offer_accept(presentation=presentation, actor=x.s.owner, now=now)
    assert moved.value.code == "offer_changed" and not RecurringCredit.objects.exists()
