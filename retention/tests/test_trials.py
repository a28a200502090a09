"""Trials of a higher tier: eligibility and the abuse window, start (features at once, no charge), reminders once,
conversion charged exactly the quote, fallback, a declined conversion, and the entitlements at the exact end."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from billing.errors import BillingError, ChangeRefused
from billing.models import (
    AuditEvent,
    Customer,
    FeatureUsage,
    Invoice,
    LocalPayment,
    Notification,
    PaymentMethod,
    PlanChange,
    Subscription,
)
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create, quote_price
from billing.tests.factories import PERIOD_START, subscription_setup
from entitlements.selectors import entitlements_for_customer
from retention.models import Trial
from retention.services.trials import (
    trial_eligible,
    trial_end,
    trial_end_early,
    trial_reminders_queue,
    trial_set_opt_in,
    trial_start,
    trial_terms,
    trials_run,
)

pytestmark = pytest.mark.django_db


class _Outbox:
    """The emails queued so far, rendered as the worker would send them (in the customer's language)."""

    def __iter__(self):
        from billing.services.notifications import notification_render

        return iter([notification_render(notification=n) for n in Notification.objects.order_by("pk")])

    def __getitem__(self, index):
        return list(self)[index]

    def __len__(self):
        return Notification.objects.count()


class mail:  # noqa: N801 - reads like django.core.mail.outbox
    outbox = _Outbox()

START = PERIOD_START + timedelta(days=2, hours=9)  # 3 Jan 2026, 09:00 Berlin; the period runs to 1 Feb


def table(customer, now):
    customer = Customer.objects.get(pk=customer.pk)
    return {e.feature: e for e in entitlements_for_customer(customer=customer, now=now)}


def start(s, *, days=14, opt_in=False, now=START, plan=None):
    return trial_start(subscription=Subscription.objects.get(pk=s.subscription.pk), plan=plan or s.pro, days=days,
                       source="plans_page", actor=s.owner, now=now, convert_opt_in=opt_in)


@pytest.fixture
def s():
    return subscription_setup()


# --- eligibility ---------------------------------------------------------------------------------------------


def test_only_higher_tiers_of_the_same_product(s):
    assert trial_eligible(subscription=s.subscription, plan=s.pro, now=START) == (True, "")
    ok, reason = trial_eligible(subscription=s.subscription, plan=s.basic, now=START)
    assert not ok and "Only higher plans than Basic" in reason


def test_one_trial_per_product_within_the_window(s, settings):
    trial = start(s)
    trial_end_early(trial=trial, actor=s.owner, now=START + timedelta(days=1))
    with pytest.raises(ChangeRefused) as refused:
        start(s, plan=s.business, now=START + timedelta(days=2))
    assert refused.value.code == "trial_used"
    assert "next one is possible from 2027-01-03" in refused.value.detail
    settings.TRIAL_REPEAT_WINDOW_DAYS = 1
    assert start(s, plan=s.business, now=START + timedelta(days=2)).status == "active"


def test_not_while_past_due_or_a_change_is_scheduled(s):
    Subscription.objects.filter(pk=s.subscription.pk).update(status="past_due")
    ok, reason = trial_eligible(subscription=Subscription.objects.get(pk=s.subscription.pk), plan=s.pro, now=START)
    assert not ok and "unpaid" in reason
    Subscription.objects.filter(pk=s.subscription.pk).update(status="active")
    quote = quote_create(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=None, quantity=0,
                         now=START, actor=s.owner, cancel=True)
    quote_accept(quote=quote, actor=s.owner, now=START)
    with pytest.raises(ChangeRefused) as refused:
        start(s)
    assert refused.value.code == "change_scheduled"
    assert not Trial.objects.exists()


def test_not_while_paused(s):
    """A pause (retention offer) freezes the subscription: a trial waits for the pause to end or an early resume."""
    Subscription.objects.filter(pk=s.subscription.pk).update(pause_starts_at=START - timedelta(days=1),
                                                             paused_until=START + timedelta(days=5))
    paused = Subscription.objects.get(pk=s.subscription.pk)
    ok, reason = trial_eligible(subscription=paused, plan=s.pro, now=START)
    assert not ok and reason.startswith("This subscription is paused until ")
    with pytest.raises(ChangeRefused) as refused:
        start(s)
    assert refused.value.code == "subscription_paused" and not Trial.objects.exists()
    assert trial_eligible(subscription=paused, plan=s.pro, now=START + timedelta(days=5)) == (True, "")


def test_bad_days_and_a_refused_conversion_are_clear_errors(s):
    with pytest.raises(ChangeRefused, match="1 to 90 days; 0 was asked"):
        start(s, days=0)
    from billing.models import ChangeRule

    ChangeRule.objects.filter(name="Upgrades").update(allowed=False, refusal_reason="Upgrades go through sales.")
    ok, reason = trial_eligible(subscription=s.subscription, plan=s.pro, now=START)
    assert (ok, reason) == (False, "Upgrades go through sales.")


# --- start -------------------------------------------------------------------------------------------------


def test_start_grants_the_tried_plan_at_once_and_charges_nothing(s):
    before = table(s.customer, START)
    assert not before["sso"].enabled and before["storage"].limit == 10
    trial = start(s, opt_in=True)
    assert (trial.status, trial.quantity, trial.ends_at) == ("active", 5, START + timedelta(days=14))
    now = table(s.customer, START + timedelta(seconds=1))
    assert now["sso"].enabled and now["sso"].sources == ("trial:analytics/pro",)
    assert now["storage"].limit == 100
    assert now["storage"].sources == ("plan:analytics/basic", "trial:analytics/pro")
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    assert (subscription.price_id, subscription.version, subscription.status) == (s.basic_month.pk, 1, "active")
    assert not LocalPayment.objects.exists() and not Invoice.objects.exists() and not PlanChange.objects.exists()
    assert AuditEvent.objects.filter(action="trial.started", customer=s.customer).count() == 1


def test_tried_features_vanish_exactly_at_the_end_even_before_the_sweep(s):
    trial = start(s)
    assert table(s.customer, trial.ends_at - timedelta(seconds=1))["sso"].enabled  # cached with its end …
    assert not table(s.customer, trial.ends_at)["sso"].enabled  # … and not served past it
    assert Trial.objects.get(pk=trial.pk).status == "active"


def test_terms_price_the_conversion_at_the_trial_end(s):
    terms = trial_terms(subscription=s.subscription, plan=s.pro, days=14, now=START)
    # 17 Jan → 1 Feb: 15 of 31 days. Credit −R(150 × 15/31) = −72.58, charge R(250 × 15/31) = 120.97,
    # subtotal 48.39, VAT R(48.39 × 0.19) = 9.19, total 57.58 (PRORATION.md).
    assert terms.ends_at == START + timedelta(days=14)
    assert [line["amount"] for line in terms.conversion.lines] == ["-72.58", "120.97"]
    assert terms.conversion.amount_due == Decimal("57.58")
    long = trial_terms(subscription=s.subscription, plan=s.pro, days=30, now=START)  # ends after this period
    assert long.conversion is None and long.conversion_note == "period_not_current"


# --- opt-in, end early -----------------------------------------------------------------------------------------


def test_opt_in_changes_until_the_end_and_end_early_removes_features(s):
    trial = start(s)
    trial = trial_set_opt_in(trial=trial, convert_opt_in=True, actor=s.owner, now=START + timedelta(days=1))
    assert Trial.objects.get(pk=trial.pk).convert_opt_in is True
    trial_end_early(trial=trial, actor=s.owner, now=START + timedelta(days=2))
    trial = Trial.objects.get(pk=trial.pk)
    assert (trial.status, trial.outcome_code) == ("cancelled", "ended_early")
    assert not table(s.customer, START + timedelta(days=2))["sso"].enabled
    with pytest.raises(BillingError) as conflict:
        trial_set_opt_in(trial=trial, convert_opt_in=False, actor=s.owner, now=START + timedelta(days=3))
    assert conflict.value.code == "trial_ended"
    assert AuditEvent.objects.filter(action="trial.ended_early").count() == 1
    assert not LocalPayment.objects.exists()


# --- reminders ------------------------------------------------------------------------------------------------


def test_reminders_are_queued_once_per_trial_and_reminder(s, settings):
    settings.TRIAL_REMINDER_DAYS = [3, 1]
    trial = start(s)
    assert trial_reminders_queue(now=trial.ends_at - timedelta(days=4)) == 0
    assert trial_reminders_queue(now=trial.ends_at - timedelta(days=3)) == 1
    assert trial_reminders_queue(now=trial.ends_at - timedelta(days=2)) == 0  # the 3-day one exists already
    assert trial_reminders_queue(now=trial.ends_at - timedelta(hours=20)) == 1
    assert trial_reminders_queue(now=trial.ends_at - timedelta(hours=2)) == 0
    keys = sorted(Notification.objects.filter(kind="trial_reminder").values_list("key", flat=True))
    assert keys == [f"trial-{trial.pk}-reminder-1d", f"trial-{trial.pk}-reminder-3d"]
    subjects = sorted(m.subject for m in mail.outbox)
    assert subjects == ["Your Pro trial ends in 3 days", "Your Pro trial ends tomorrow"]
    assert "ends on January 17, 2026." in mail.outbox[0].body


def test_reminder_in_german(s):
    Customer.objects.filter(pk=s.customer.pk).update(language="de")
    trial = start(s)
    trial_reminders_queue(now=trial.ends_at - timedelta(days=1))
    assert Notification.objects.get(kind="trial_reminder").language == "de"
    assert len(mail.outbox) == 1 and mail.outbox[0].alternatives


# --- the end --------------------------------------------------------------------------------------------------


def test_opted_in_converts_charged_exactly_the_quote_and_invoiced(s):
    trial = start(s, opt_in=True)
    shown = quote_price(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=s.pro_month,
                        quantity=5, now=trial.ends_at)
    end = trial.ends_at + timedelta(seconds=30)
    trial = trial_end(trial_id=trial.pk, now=end)
    assert (trial.status, trial.outcome_code) == ("converted", "converted")
    change = PlanChange.objects.get(pk=trial.plan_change_id)
    assert (change.status, change.reason_code, change.off_session) == ("applied", "trial_conversion", True)
    assert change.amount_due == shown.amount_due == Decimal("57.58")
    payment = LocalPayment.objects.get()
    assert (payment.amount_minor, payment.currency) == (5758, "EUR")
    invoice = Invoice.objects.get(plan_change=change)
    assert invoice.total == Decimal("57.58")
    subscription = Subscription.objects.get(pk=s.subscription.pk)
    assert subscription.price_id == s.pro_month.pk
    assert table(s.customer, end)["sso"].sources == ("plan:analytics/pro",)
    assert AuditEvent.objects.filter(action="trial.converted").count() == 1
    assert Notification.objects.filter(kind="trial_converted", key=f"trial-{trial.pk}-converted").count() == 1
    assert "57.58" in mail.outbox[-1].body
    # Idempotent: running the end again changes nothing and charges nothing.
    assert trial_end(trial_id=trial.pk, now=end + timedelta(minutes=1)).status == "converted"
    assert trials_run(trial_ids=[trial.pk], now=end + timedelta(minutes=2)) == 1
    assert LocalPayment.objects.count() == 1 and PlanChange.objects.count() == 1


def test_not_opted_in_falls_back_with_nothing_charged_or_deleted(s):
    FeatureUsage.objects.create(customer=s.customer, feature=s.feature_storage, used=60, reported_at=START)
    trial = start(s)
    during = table(s.customer, START + timedelta(days=1))["storage"]
    assert (during.limit, during.used, during.over_limit) == (100, 60, False)
    end = trial.ends_at + timedelta(seconds=5)
    trial = trial_end(trial_id=trial.pk, now=end)
    assert (trial.status, trial.outcome_code) == ("fell_back", "not_opted_in")
    after = table(s.customer, end)["storage"]
    assert (after.limit, after.used, after.over_limit, after.read_only, after.over_by) == (10, 60, True, True, 50)
    assert FeatureUsage.objects.get(customer=s.customer).used == 60  # nothing deleted
    assert not LocalPayment.objects.exists() and not PlanChange.objects.exists()
    assert Subscription.objects.get(pk=s.subscription.pk).price_id == s.basic_month.pk
    assert AuditEvent.objects.filter(action="trial.fell_back", reason_code="not_opted_in").count() == 1
    assert [m.subject for m in mail.outbox] == ["Your Pro trial has ended"]


def test_a_declined_conversion_falls_back_and_says_so(s):
    PaymentMethod.objects.filter(customer=s.customer).update(reference="pm_card_chargeDeclined")
    trial = start(s, opt_in=True)
    trial = trial_end(trial_id=trial.pk, now=trial.ends_at + timedelta(seconds=5))
    assert (trial.status, trial.outcome_code) == ("fell_back", "card_declined")
    assert PlanChange.objects.get(pk=trial.plan_change_id).status == "failed"
    assert Subscription.objects.get(pk=s.subscription.pk).price_id == s.basic_month.pk
    assert not Invoice.objects.exists()
    assert mail.outbox[-1].subject == "We could not move you to Pro"
    assert "Your card was declined." in mail.outbox[-1].body
    assert AuditEvent.objects.filter(action="trial.fell_back", reason_code="card_declined").count() == 1


def test_a_card_that_needs_authentication_falls_back_off_session(s):
    PaymentMethod.objects.filter(customer=s.customer).update(reference="pm_card_authenticationRequired")
    trial = start(s, opt_in=True)
    trial = trial_end(trial_id=trial.pk, now=trial.ends_at + timedelta(seconds=5))
    assert trial.status == "fell_back"
    assert Subscription.objects.get(pk=s.subscription.pk).price_id == s.basic_month.pk


def test_a_trial_not_yet_ended_is_left_alone(s):
    trial = start(s, opt_in=True)
    assert trial_end(trial_id=trial.pk, now=trial.ends_at - timedelta(seconds=1)).status == "active"
    assert not PlanChange.objects.exists()


def test_upgraded_during_the_trial_ends_converted_without_a_second_charge(s):
    trial = start(s, opt_in=True)
    quote = quote_create(subscription=Subscription.objects.get(pk=s.subscription.pk), to_price=s.pro_month,
                         quantity=5, now=START + timedelta(days=1), actor=s.owner)
    quote_accept(quote=quote, actor=s.owner, now=START + timedelta(days=1))
    trial = trial_end(trial_id=trial.pk, now=trial.ends_at)
    assert (trial.status, trial.outcome_code) == ("converted", "already_upgraded")
    assert LocalPayment.objects.count() == 1


def test_the_beat_task_reminds_and_ends_due_trials_in_chunks(s, settings):
    from retention.services.trials import trials_dispatch
    from retention.tasks import sweep_trials

    settings.TRIAL_REMINDER_DAYS = [3]
    trial = start(s)
    assert trials_dispatch(now=trial.ends_at - timedelta(days=2)) == 0  # nothing due; the reminder is queued
    assert Notification.objects.filter(key=f"trial-{trial.pk}-reminder-3d").exists()
    assert trials_dispatch(now=trial.ends_at + timedelta(seconds=1), chunk_size=1) == 1  # eager in tests
    assert Trial.objects.get(pk=trial.pk).status == "fell_back"
    assert sweep_trials.name == "retention.tasks.sweep_trials"
    assert settings.CELERY_BEAT_SCHEDULE["sweep-trials"]["task"] == sweep_trials.name
