"""Renewals and dunning: the period-end step, renewal invoices, payment attempts, retries, emails."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.core.management import call_command

from billing.errors import BillingError
from billing.models import (
    AuditEvent,
    BalanceEntry,
    Invoice,
    LocalPayment,
    Notification,
    PaymentAttempt,
    PaymentMethod,
    PlanChange,
    Subscription,
)
from billing.payments import GatewayUnavailable
from billing.payments.local import LocalGateway
from billing.services.collection import invoice_collect, invoices_collect_due
from billing.services.notifications import notification_send
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.services.renewals import plan_changes_apply_due, subscription_renew
from billing.tests.factories import BERLIN, MID_JANUARY, PERIOD_END, subscription_setup
from entitlements.selectors import entitlements_for_customer

pytestmark = pytest.mark.django_db
MARCH = datetime(2026, 3, 1, tzinfo=BERLIN)


def renew(now=PERIOD_END):
    """What beat does: the sweep, then the payment attempts that are due, in this process."""
    applied = plan_changes_apply_due(now=now)
    for invoice_id in invoices_collect_due(now=now):
        invoice_collect(invoice_id=invoice_id, now=now)
    return applied


def send_all(now=PERIOD_END):
    for notification in Notification.objects.filter(status="pending"):
        notification_send(notification_id=notification.pk, now=now)


def renewal_invoice(s) -> Invoice:
    return Invoice.objects.get(subscription=s.subscription, billing_reason="renewal", supply_start=PERIOD_END)


def use_card(s, reference):
    PaymentMethod.objects.filter(customer=s.customer).update(reference=reference)


def test_period_end_renews_once_issues_the_invoice_and_collects_it():
    s = subscription_setup()
    assert renew(PERIOD_END - timedelta(seconds=1)) == 0
    assert renew() == 1
    assert renew(PERIOD_END + timedelta(hours=1)) == 0  # the sweep again, later: nothing twice
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert (sub.current_period_start, sub.current_period_end, sub.status, sub.version) == (
        PERIOD_END, MARCH, "active", 2)
    invoice = renewal_invoice(s)
    # Basic 5 × 30.00 = 150.00, VAT 19 % = 28.50: 178.50, collected from the saved card.
    assert (invoice.subtotal, invoice.tax_total, invoice.total, invoice.amount_due) == (
        Decimal("150.00"), Decimal("28.50"), Decimal("178.50"), Decimal("178.50"))
    assert invoice.status == "paid" and invoice.amount_paid == Decimal("178.50") and invoice.number.startswith("CG-2026-")
    assert (invoice.supply_start, invoice.supply_end) == (PERIOD_END, MARCH)
    line = invoice.lines.get()
    assert line.description == "New billing period for Analytics Basic × 5, 1 Feb – 1 Mar 2026 (monthly)"
    payment = LocalPayment.objects.get()
    assert (payment.amount_minor, payment.currency, payment.status) == (17850, "EUR", "succeeded")
    attempt = invoice.payment_attempts.get()
    assert attempt.status == "succeeded" and attempt.off_session and attempt.payment_reference == payment.reference
    assert AuditEvent.objects.filter(action="subscription.renewed").count() == 1
    assert AuditEvent.objects.filter(action="invoice.paid", object_id=str(invoice.pk)).count() == 1
    receipt = Notification.objects.get(kind="renewal_paid")
    assert receipt.key == f"invoice-{invoice.pk}-paid"


def test_a_subscription_the_sweep_missed_catches_up_one_invoice_per_period():
    s = subscription_setup()
    assert renew(datetime(2026, 4, 15, tzinfo=BERLIN)) == 3  # February, March and April
    starts = list(Invoice.objects.filter(subscription=s.subscription, billing_reason="renewal")
                  .order_by("supply_start").values_list("supply_start", flat=True))
    assert starts == [PERIOD_END, MARCH, datetime(2026, 4, 1, tzinfo=BERLIN)]
    assert Subscription.objects.get(pk=s.subscription.pk).current_period_end == datetime(2026, 5, 1, tzinfo=BERLIN)


def test_the_balance_pays_first_and_only_in_its_own_currency():
    s = subscription_setup()
    BalanceEntry.objects.create(customer=s.customer, currency="EUR", amount=Decimal("100.00"), kind="adjustment",
                                description="goodwill", created_at=MID_JANUARY)
    BalanceEntry.objects.create(customer=s.customer, currency="USD", amount=Decimal("500.00"), kind="adjustment",
                                description="other currency", created_at=MID_JANUARY)
    renew()
    invoice = renewal_invoice(s)
    assert (invoice.total, invoice.balance_applied, invoice.amount_due) == (
        Decimal("178.50"), Decimal("100.00"), Decimal("78.50"))
    assert LocalPayment.objects.get().amount_minor == 7850
    entry = BalanceEntry.objects.get(kind="applied_to_invoice")
    assert (entry.amount, entry.currency, entry.invoice_id) == (Decimal("-100.00"), "EUR", invoice.pk)


def test_a_balance_that_covers_the_period_needs_no_payment():
    s = subscription_setup()
    BalanceEntry.objects.create(customer=s.customer, currency="EUR", amount=Decimal("500.00"), kind="adjustment",
                                description="goodwill", created_at=MID_JANUARY)
    renew()
    invoice = renewal_invoice(s)
    assert invoice.status == "paid" and invoice.amount_due == 0 and invoice.balance_applied == Decimal("178.50")
    assert not LocalPayment.objects.exists() and not invoice.payment_attempts.exists()


def test_a_downgrade_at_period_end_and_the_new_period_are_one_step():
    s = subscription_setup()
    Subscription.objects.filter(pk=s.subscription.pk).update(price=s.pro_month)
    s.subscription.refresh_from_db()
    change = quote_accept(quote=quote_create(subscription=s.subscription, to_price=s.basic_month, quantity=3,
                                             now=MID_JANUARY, actor=s.owner), actor=s.owner, now=MID_JANUARY)
    assert change.status == "scheduled"
    assert renew() == 1 and renew() == 0
    change.refresh_from_db()
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert change.status == "applied" and (sub.price_id, sub.quantity, sub.current_period_end) == (
        s.basic_month.pk, 3, MARCH)
    invoice = renewal_invoice(s)  # the new period is billed at the new terms: 3 × 30.00 + 19 %
    assert invoice.total == Decimal("107.10") and invoice.status == "paid"
    assert Invoice.objects.filter(subscription=s.subscription).count() == 1


def test_a_cancellation_at_period_end_bills_nothing_more():
    s = subscription_setup()
    q = quote_create(subscription=s.subscription, to_price=None, quantity=0, now=MID_JANUARY, actor=s.owner,
                     cancel=True)
    quote_accept(quote=q, actor=s.owner, now=MID_JANUARY)
    assert renew() == 1
    assert Subscription.objects.get(pk=s.subscription.pk).status == "cancelled"
    assert not Invoice.objects.exists() and not LocalPayment.objects.exists()


def test_a_free_plan_renews_without_an_invoice():
    s = subscription_setup()
    s.basic_month.unit_amount = Decimal(0)
    s.basic_month.save()
    assert renew() == 1
    assert not Invoice.objects.exists()
    assert Subscription.objects.get(pk=s.subscription.pk).current_period_end == MARCH


def test_a_payment_under_way_holds_the_renewal_until_it_settles():
    s = subscription_setup(payment_method="pm_card_authenticationRequired")
    change = quote_accept(quote=quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5,
                                             now=MID_JANUARY, actor=s.owner), actor=s.owner, now=MID_JANUARY)
    assert change.status == "requires_action"
    assert subscription_renew(subscription_id=s.subscription.pk, now=PERIOD_END) is False
    assert Subscription.objects.get(pk=s.subscription.pk).current_period_end == PERIOD_END


# --- dunning -------------------------------------------------------------------------------------


def test_a_declined_renewal_makes_the_subscription_past_due_retries_on_schedule_then_ends_it(settings):
    settings.RENEWAL_RETRY_SCHEDULE = [1, 3, 5]
    s = subscription_setup(payment_method="pm_card_chargeDeclined")
    renew()
    invoice = renewal_invoice(s)
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert sub.status == "past_due" and invoice.status == "issued"
    assert invoice.next_payment_attempt_at == PERIOD_END + timedelta(days=1)
    failed = Notification.objects.get(kind="renewal_payment_failed")
    assert failed.key == f"invoice-{invoice.pk}-attempt-1-failed"
    # Nothing runs before the retry is due; then each failure plans the next one.
    renew(PERIOD_END + timedelta(hours=23))
    assert invoice.payment_attempts.count() == 1
    moment = PERIOD_END + timedelta(days=1)
    for days in (3, 5):
        renew(moment)
        invoice.refresh_from_db()
        assert invoice.next_payment_attempt_at == moment + timedelta(days=days)
        moment = invoice.next_payment_attempt_at
    assert Subscription.objects.get(pk=s.subscription.pk).status == "past_due"
    renew(moment)  # the fourth failure uses the schedule up
    invoice.refresh_from_db()
    sub.refresh_from_db()
    assert sub.status == "cancelled" and invoice.status == "issued" and invoice.next_payment_attempt_at is None
    assert list(invoice.payment_attempts.values_list("status", flat=True)) == ["declined"] * 4
    assert LocalPayment.objects.count() == 4  # one gateway payment per attempt, each with its own key
    assert Notification.objects.filter(kind="renewal_payment_failed").count() == 3
    assert Notification.objects.filter(kind="subscription_cancelled_unpaid").count() == 1
    s.customer.refresh_from_db()
    assert not any(e.enabled for e in entitlements_for_customer(customer=s.customer))  # nothing left to use
    renew(moment + timedelta(days=30))
    assert invoice.payment_attempts.count() == 4  # no attempts after the end
    assert AuditEvent.objects.filter(action="subscription.cancelled_unpaid").count() == 1


def test_no_upgrade_while_a_renewal_invoice_is_unpaid():
    s = subscription_setup(payment_method="pm_card_chargeDeclined")
    early = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=MID_JANUARY,
                         actor=s.owner)
    Subscription.objects.filter(pk=s.subscription.pk).update(status="past_due")
    with pytest.raises(BillingError) as accepted:
        quote_accept(quote=early, actor=s.owner, now=MID_JANUARY)
    assert accepted.value.code == "invoice_unpaid"
    Subscription.objects.filter(pk=s.subscription.pk).update(status="active")
    renew()
    sub = Subscription.objects.get(pk=s.subscription.pk)
    with pytest.raises(BillingError) as quoted:
        quote_create(subscription=sub, to_price=s.pro_month, quantity=5, now=PERIOD_END + timedelta(hours=2),
                     actor=s.owner)
    assert quoted.value.code == "invoice_unpaid"
    assert not PlanChange.objects.exists()


def test_paying_after_a_new_card_recovers_the_subscription():
    s = subscription_setup(payment_method="pm_card_chargeDeclined")
    renew()
    invoice = renewal_invoice(s)
    use_card(s, "pm_card_visa")
    attempt = invoice_collect(invoice_id=invoice.pk, now=PERIOD_END + timedelta(hours=3), on_session=True,
                              actor=s.owner)
    invoice.refresh_from_db()
    assert attempt.status == "succeeded" and not attempt.off_session and attempt.number == 2
    assert invoice.status == "paid" and invoice.next_payment_attempt_at is None
    assert Subscription.objects.get(pk=s.subscription.pk).status == "active"
    receipt = Notification.objects.get(kind="renewal_paid")
    assert receipt.context["recovered"] is True
    assert invoice_collect(invoice_id=invoice.pk, now=PERIOD_END + timedelta(hours=4), on_session=True) is None
    assert LocalPayment.objects.filter(status="succeeded").count() == 1


def test_the_customers_own_failed_try_does_not_use_up_the_schedule(settings):
    settings.RENEWAL_RETRY_SCHEDULE = [2]
    s = subscription_setup(payment_method="pm_card_chargeDeclined")
    renew()
    invoice = renewal_invoice(s)
    planned = invoice.next_payment_attempt_at
    attempt = invoice_collect(invoice_id=invoice.pk, now=PERIOD_END + timedelta(hours=1), on_session=True)
    invoice.refresh_from_db()
    assert attempt.status == "declined" and invoice.next_payment_attempt_at == planned
    assert Subscription.objects.get(pk=s.subscription.pk).status == "past_due"
    assert Notification.objects.filter(kind="renewal_payment_failed").count() == 1


def test_no_payment_method_is_a_failed_attempt_with_its_reason():
    s = subscription_setup()
    PaymentMethod.objects.filter(customer=s.customer).delete()
    renew()
    invoice = renewal_invoice(s)
    attempt = invoice.payment_attempts.get()
    assert (attempt.status, attempt.failure_code) == ("declined", "no_payment_method")
    assert Subscription.objects.get(pk=s.subscription.pk).status == "past_due"
    assert not LocalPayment.objects.exists()
    with pytest.raises(BillingError) as info:
        invoice_collect(invoice_id=invoice.pk, now=PERIOD_END, on_session=True)
    assert info.value.code == "no_payment_method"


def test_a_card_needing_authentication_off_session_asks_the_customer_to_confirm():
    s = subscription_setup(payment_method="pm_card_authenticationRequired")
    renew()
    invoice = renewal_invoice(s)
    attempt = invoice.payment_attempts.get()
    assert (attempt.status, attempt.failure_code) == ("declined", "authentication_required")
    assert Notification.objects.get().kind == "renewal_authentication_required"
    # The customer pays from the portal, on-session: the gateway asks them to authenticate, then it succeeds.
    on_session = invoice_collect(invoice_id=invoice.pk, now=PERIOD_END + timedelta(hours=1), on_session=True,
                                 return_url="http://testserver/back/")
    assert on_session.status == "requires_action" and on_session.next_action_url
    from billing.payments.local import local_payment_authenticate

    local_payment_authenticate(reference=on_session.payment_reference, approve=True)
    done = invoice_collect(invoice_id=invoice.pk, now=PERIOD_END + timedelta(hours=1), on_session=True)
    assert done.pk == on_session.pk and done.status == "succeeded"
    assert Invoice.objects.get(pk=invoice.pk).status == "paid"


def test_an_attempt_whose_answer_was_lost_is_looked_up_not_charged_again(settings, monkeypatch):
    s = subscription_setup()
    real_charge = LocalGateway.charge

    def lost(self, **kwargs):
        real_charge(self, **kwargs)  # the gateway takes the payment, the answer never arrives
        raise GatewayUnavailable("timeout")

    monkeypatch.setattr(LocalGateway, "charge", lost)
    renew()
    invoice = renewal_invoice(s)
    attempt = invoice.payment_attempts.get()
    assert attempt.status == "pending" and invoice.status == "issued"
    monkeypatch.setattr(LocalGateway, "charge", real_charge)
    later = PERIOD_END + settings.PAYMENT_RECONCILE_AFTER + timedelta(seconds=1)
    assert invoice.pk in invoices_collect_due(now=later)
    renew(later)
    invoice.refresh_from_db()
    assert invoice.status == "paid" and invoice.payment_attempts.get().status == "succeeded"
    assert LocalPayment.objects.count() == 1


def test_an_attempt_the_gateway_never_took_is_closed_and_tried_again(settings, monkeypatch):
    s = subscription_setup()

    def down(self, **kwargs):
        raise GatewayUnavailable("connection refused")

    monkeypatch.setattr(LocalGateway, "charge", down)
    renew()
    invoice = renewal_invoice(s)
    monkeypatch.undo()
    renew(PERIOD_END + settings.PAYMENT_NOT_TAKEN_AFTER + timedelta(seconds=1))  # closes it as not taken
    renew(PERIOD_END + settings.PAYMENT_NOT_TAKEN_AFTER + timedelta(seconds=2))  # and the next one runs
    invoice.refresh_from_db()
    assert list(invoice.payment_attempts.values_list("status", flat=True)) == ["canceled", "succeeded"]
    assert invoice.status == "paid" and Subscription.objects.get(pk=s.subscription.pk).status == "active"


def test_the_command_runs_renewals_and_payment_attempts():
    subscription_setup()
    out = io.StringIO()
    call_command("apply_due_changes", "--now", PERIOD_END.isoformat(), stdout=out)
    assert "Applied 1 scheduled change(s) and renewal(s)." in out.getvalue()
    assert "Payment attempts: 1 succeeded" in out.getvalue()


# --- emails -------------------------------------------------------------------------------------


def test_emails_are_sent_once_in_the_customers_language_as_text_and_html():
    s = subscription_setup(payment_method="pm_card_chargeDeclined")
    s.customer.language = "de"
    s.customer.save()
    renew()
    notification = Notification.objects.get()
    assert notification_send(notification_id=notification.pk, now=PERIOD_END) is True
    assert notification_send(notification_id=notification.pk, now=PERIOD_END) is False
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    invoice = renewal_invoice(s)
    assert message.to == [s.customer.email] and invoice.number in message.subject
    assert "Zahlung fehlgeschlagen" in message.subject
    assert "178,50" in message.body and "2. Februar 2026" in message.body
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html" and "178,50" in html and f"/c/{s.customer.pk}/billing/" in html
    assert Notification.objects.get().status == "sent"


def test_an_email_that_fails_to_send_stays_queued_with_its_error(monkeypatch):
    s = subscription_setup(payment_method="pm_card_chargeDeclined")
    renew()
    notification = Notification.objects.get()

    def broken(self, *args, **kwargs):
        raise ConnectionRefusedError("smtp down")

    monkeypatch.setattr("django.core.mail.EmailMultiAlternatives.send", broken)
    with pytest.raises(ConnectionRefusedError):
        notification_send(notification_id=notification.pk, now=PERIOD_END)
    notification.refresh_from_db()
    assert notification.status == "pending" and "smtp down" in notification.last_error
    monkeypatch.undo()
    assert notification_send(notification_id=notification.pk, now=PERIOD_END) is True
    assert len(mail.outbox) == 1 and s.customer.email in mail.outbox[0].to


def test_every_email_renders_in_english_and_german():
    s = subscription_setup(payment_method="pm_card_chargeDeclined")
    renew()
    invoice = renewal_invoice(s)
    use_card(s, "pm_card_visa")
    invoice_collect(invoice_id=invoice.pk, now=PERIOD_END, on_session=True)
    from billing.services.notifications import notification_queue, notification_render

    base = Notification.objects.filter(kind="renewal_payment_failed").get()
    for kind in ("renewal_authentication_required", "subscription_cancelled_unpaid"):
        notification_queue(customer=s.customer, kind=kind, key=f"test-{kind}", context=base.context, now=PERIOD_END)
    for notification in Notification.objects.all():
        for language in ("en", "de"):
            notification.language = language
            message = notification_render(notification=notification)
            assert invoice.number in message.body + message.subject, (notification.kind, language)
            assert "{%" not in message.body and "{{" not in message.alternatives[0][0]


# --- the sweep: errors, backoff, needs attention ----------------------------------------------------


def test_a_step_that_keeps_failing_is_retried_with_backoff_then_parked_and_staff_can_retry_it(settings,
                                                                                               monkeypatch):
    settings.SWEEP_MAX_FAILURES = 3
    s = subscription_setup()
    other = subscription_setup_second_customer(s)
    import billing.services.renewals as renewals

    real = renewals.invoice_for_renewal

    def broken(*, customer, subscription, now, **context):
        if subscription.pk == s.subscription.pk:
            raise RuntimeError("the PDF disk is full")
        return real(customer=customer, subscription=subscription, now=now, **context)

    monkeypatch.setattr(renewals, "invoice_for_renewal", broken)
    assert renew() == 1  # the other customer renews; the broken one rolls back whole
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert sub.current_period_end == PERIOD_END and not Invoice.objects.filter(subscription=sub).exists()
    assert (sub.sweep_failures, sub.sweep_retry_at) == (1, PERIOD_END + timedelta(minutes=1))
    assert "RuntimeError: the PDF disk is full" in sub.sweep_error
    assert Invoice.objects.filter(subscription=other).count() == 1
    assert renew(PERIOD_END + timedelta(seconds=30)) == 0  # backing off: not tried yet
    assert Subscription.objects.get(pk=sub.pk).sweep_failures == 1
    renew(PERIOD_END + timedelta(minutes=1))
    sub.refresh_from_db()
    assert (sub.sweep_failures, sub.sweep_retry_at) == (2, PERIOD_END + timedelta(minutes=3))
    renew(PERIOD_END + timedelta(minutes=3))
    sub.refresh_from_db()
    assert sub.needs_attention and sub.sweep_failures == 3 and sub.sweep_retry_at is None
    assert AuditEvent.objects.filter(action="sweep.needs_attention", object_id=str(sub.pk)).count() == 1
    renew(PERIOD_END + timedelta(days=1))  # parked: the sweep leaves it alone
    assert Subscription.objects.get(pk=sub.pk).sweep_failures == 3
    # Staff fix the cause and retry: the step runs once, bills once, and the record is clean again.
    monkeypatch.setattr(renewals, "invoice_for_renewal", real)
    from billing.services.renewals import sweep_retry

    sweep_retry(row=sub, actor=s.owner, now=PERIOD_END + timedelta(days=1))
    assert renew(PERIOD_END + timedelta(days=1)) == 1
    sub.refresh_from_db()
    assert not sub.needs_attention and sub.sweep_failures == 0 and sub.sweep_error == ""
    assert sub.current_period_end == MARCH and Invoice.objects.filter(subscription=sub).count() == 1


def subscription_setup_second_customer(s) -> Subscription:
    from billing.tests.factories import CustomerFactory, PaymentMethodFactory

    customer = CustomerFactory()
    PaymentMethodFactory(customer=customer)
    return Subscription.objects.create(customer=customer, product=s.product, price=s.basic_month, quantity=2,
                                       current_period_start=s.subscription.current_period_start,
                                       current_period_end=s.subscription.current_period_end)


def test_admin_retry_action_takes_a_parked_change_back(admin_client):
    s = subscription_setup()
    Subscription.objects.filter(pk=s.subscription.pk).update(needs_attention=True, sweep_failures=5,
                                                             sweep_error="RuntimeError: boom")
    response = admin_client.post("/admin/billing/subscription/", {
        "action": "retry_period_end_step", "_selected_action": [s.subscription.pk]})
    assert response.status_code == 302
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert not sub.needs_attention and sub.sweep_failures == 0
    assert AuditEvent.objects.get(action="sweep.retry").message == "Retried after: RuntimeError: boom"


def test_a_tiered_price_renews_at_its_band_sum_with_the_bands_on_the_invoice():
    from billing.tests.factories import tiered_price

    s = subscription_setup()
    graduated = tiered_price(plan=s.pro, interval="quarter")  # 1–10 at 10.00, 11+ at 8.00
    Subscription.objects.filter(pk=s.subscription.pk).update(price=graduated, quantity=25)
    renew()
    invoice = renewal_invoice(s)
    # 10 × 10.00 + 15 × 8.00 = 220.00; VAT 19 % = 41.80
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (Decimal("220.00"), Decimal("41.80"),
                                                                    Decimal("261.80"))
    line = invoice.lines.get()
    assert "1–10: 10 × €10.00" in line.detail and "11–25: 15 × €8.00" in line.detail


def test_money_for_an_attempt_already_closed_pays_the_open_invoice_or_is_held_as_balance():
    from billing.payments.local import local_payment_authenticate
    from billing.services.collection import payment_attempt_refresh

    s = subscription_setup(payment_method="pm_card_authenticationRequired")
    renew()
    invoice = renewal_invoice(s)
    waiting = invoice_collect(invoice_id=invoice.pk, now=PERIOD_END, on_session=True, return_url="http://x/")
    local_payment_authenticate(reference=waiting.payment_reference, approve=True)  # paid at the gateway …
    PaymentAttempt.objects.filter(pk=waiting.pk).update(status="canceled")  # … just as we had closed it
    assert payment_attempt_refresh(attempt=PaymentAttempt.objects.get(pk=waiting.pk), now=PERIOD_END).status \
        == "succeeded"
    assert Invoice.objects.get(pk=invoice.pk).status == "paid"
    # The same again for an invoice that another attempt already paid: the money is held, once.
    Invoice.objects.filter(pk=invoice.pk).update(payment_reference="pi_other")
    PaymentAttempt.objects.filter(pk=waiting.pk).update(status="canceled")
    for _ in range(2):
        payment_attempt_refresh(attempt=PaymentAttempt.objects.get(pk=waiting.pk), now=PERIOD_END)
    credit = BalanceEntry.objects.get(kind="payment_credit")
    assert (credit.amount, credit.invoice_id) == (invoice.amount_due, invoice.pk)


def test_the_renewal_pdf_states_the_amount_due_not_a_payment_it_cannot_know_yet():
    import io as _io

    from pypdf import PdfReader

    from billing.services.invoice_pdfs import invoice_pdf_bytes

    s = subscription_setup(payment_method="pm_card_chargeDeclined")
    BalanceEntry.objects.create(customer=s.customer, currency="EUR", amount=Decimal("8.50"), kind="adjustment",
                                description="goodwill", created_at=MID_JANUARY)
    renew()
    invoice = renewal_invoice(s)
    text = " ".join(PdfReader(_io.BytesIO(invoice_pdf_bytes(invoice=invoice))).pages[0].extract_text().split())
    assert invoice.number in text and "Total €178.50" in text
    assert "Paid from credit balance €8.50" in text and "Amount due €170.00" in text
    assert "Due on Feb. 1, 2026" in text and "Paid by card" not in text and "Thank you" not in text


def test_a_later_number_is_never_dated_before_an_earlier_one():
    """Two chunks of the sweep read the clock at different moments: numbers and issue dates keep one order."""
    s = subscription_setup()
    other = subscription_setup_second_customer(s)
    midnight = datetime(2026, 2, 2, tzinfo=BERLIN)
    subscription_renew(subscription_id=s.subscription.pk, now=midnight + timedelta(seconds=5))  # clock read late
    subscription_renew(subscription_id=other.pk, now=midnight - timedelta(seconds=5))  # clock read before midnight
    first, second = Invoice.objects.filter(billing_reason="renewal").order_by("number")
    assert first.subscription_id == s.subscription.pk and second.issued_at == first.issued_at
    assert first.issue_date == second.issue_date == midnight.date()


def test_a_discount_waiting_for_the_renewal_starts_there_and_ends_after_its_periods():
    """30 % off for 2 periods, granted mid-period: the current period keeps its terms, the next two renewals are
    billed at 30 % off (105.00 + 19 % = 124.95), the third at the list price again (178.50)."""
    s = subscription_setup()
    Subscription.objects.filter(pk=s.subscription.pk).update(next_discount_percent=Decimal(30), next_discount_periods=2)
    totals = []
    moment = PERIOD_END
    for _ in range(3):
        assert subscription_renew(subscription_id=s.subscription.pk, now=moment) is True
        sub = Subscription.objects.get(pk=s.subscription.pk)
        totals.append((Invoice.objects.get(subscription=sub, billing_reason="renewal",
                                           supply_start=sub.current_period_start).total,
                       sub.discount_percent, sub.discount_periods_left))
        moment = sub.current_period_end
    assert totals == [(Decimal("124.95"), Decimal(30), 1), (Decimal("124.95"), Decimal(30), 0),
                      (Decimal("178.50"), Decimal(0), None)]
    assert sub.next_discount_percent is None and sub.next_discount_periods is None


def test_a_discount_without_an_end_stays():
    s = subscription_setup()
    Subscription.objects.filter(pk=s.subscription.pk).update(discount_percent=Decimal(10))
    assert subscription_renew(subscription_id=s.subscription.pk, now=PERIOD_END)
    sub = Subscription.objects.get(pk=s.subscription.pk)
    assert (sub.discount_percent, sub.discount_periods_left, renewal_invoice(s).subtotal) == (
        Decimal(10), None, Decimal("135.00"))
