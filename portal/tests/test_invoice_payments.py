"""Paying an open renewal invoice from the portal: who sees it, who may pay it, and every way a payment ends."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest
from babel.numbers import format_currency
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from billing.models import Invoice, LocalPayment, Membership, PaymentAttempt, PaymentMethod, Quote, Subscription
from billing.services.collection import invoice_collect, invoices_collect_due
from billing.services.renewals import plan_changes_apply_due
from billing.tests.factories import CustomerFactory, MembershipFactory, live_subscription_setup

pytestmark = pytest.mark.django_db

UNPAID = "A renewal invoice of this subscription is unpaid; pay it on the billing page before changing plans."


@pytest.fixture(autouse=True)
def _private_cache(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                   "LOCATION": "portal-invoice-payment-tests"}}
    yield
    from django.core.cache import cache

    cache.clear()


def url(name: str, *args) -> str:
    return reverse(f"portal:{name}", args=args)


def html(response) -> str:
    return response.content.decode()


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def eur(amount) -> str:
    return format_currency(Decimal(amount), "EUR", locale="en")


def logged_in(client, user):
    client.force_login(user)
    return client


def use_card(s, reference: str) -> None:
    PaymentMethod.objects.filter(customer=s.customer).update(reference=reference)


@pytest.fixture
def past_due():
    """A customer whose period ended a minute ago and whose card declined the renewal: past due, one open
    invoice with the next automatic attempt planned. Returns (setup, invoice)."""
    s = live_subscription_setup(payment_method="pm_card_chargeDeclined")
    now = timezone.now()
    Subscription.objects.filter(pk=s.subscription.pk).update(
        current_period_start=now - timedelta(days=31), current_period_end=now - timedelta(minutes=1))
    assert plan_changes_apply_due(now=now) == 1
    for invoice_id in invoices_collect_due(now=now):  # what the worker does after the renewal commits
        invoice_collect(invoice_id=invoice_id, now=now)
    invoice = Invoice.objects.get(subscription=s.subscription, billing_reason="renewal")
    assert invoice.status == "issued" and invoice.next_payment_attempt_at is not None
    assert Subscription.objects.get(pk=s.subscription.pk).status == "past_due"
    s.subscription.refresh_from_db()
    return s, invoice


def pay_url(s, invoice) -> str:
    return url("invoice-pay", s.customer.pk, invoice.pk)


def pay_button(invoice) -> str:
    return f"Pay {eur(invoice.amount_due)} now"


def invoice_state(invoice) -> tuple:
    invoice = Invoice.objects.get(pk=invoice.pk)
    return (invoice.status, invoice.amount_paid, invoice.subscription.status,
            LocalPayment.objects.filter(status="succeeded").count())


# --- who sees the open invoice ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["overview", "billing"])
def test_the_owner_sees_the_open_invoice_with_the_pay_button(client, past_due, page):
    s, invoice = past_due
    response = logged_in(client, s.owner).get(url(page, s.customer.pk))
    body = html(response)
    assert response.status_code == 200
    assert f"Invoice {invoice.number}: {eur(invoice.amount_due)} unpaid" in body
    assert "The last payment attempt failed:" in body and "Your card was declined." in body
    assert "We try again on" in body and "plan changes are paused" in body
    assert f'action="{pay_url(s, invoice)}"' in body and pay_button(invoice) in body


def test_the_billing_page_lists_the_invoice_as_unpaid(client, past_due):
    s, invoice = past_due
    body = html(logged_in(client, s.owner).get(url("billing", s.customer.pk)))
    row = body[body.index(f'{url("invoice-pdf", s.customer.pk, invoice.pk)}"'):]
    row = row[:row.index("</tr>")]
    assert invoice.number in row and "Unpaid" in row and eur(invoice.total) in row


def test_a_billing_admin_sees_the_pay_button_too(client, past_due):
    s, invoice = past_due
    body = html(logged_in(client, s.billing_admin).get(url("overview", s.customer.pk)))
    assert pay_button(invoice) in body


@pytest.mark.parametrize("page", ["overview", "billing"])
def test_a_member_sees_the_open_invoice_without_the_pay_button(client, past_due, page):
    s, invoice = past_due
    body = html(logged_in(client, s.member).get(url(page, s.customer.pk)))
    assert f"Invoice {invoice.number}: {eur(invoice.amount_due)} unpaid" in body
    assert pay_button(invoice) not in body and pay_url(s, invoice) not in body
    assert "The account's owners and billing admins can pay it:" in body
    assert escape(s.owner.username) in body


def test_a_member_cannot_pay(client, past_due):
    s, invoice = past_due
    use_card(s, "pm_card_visa")
    before = invoice_state(invoice)
    response = logged_in(client, s.member).post(pay_url(s, invoice))
    assert response.status_code == 403
    assert invoice_state(invoice) == before
    assert Invoice.objects.get(pk=invoice.pk).payment_attempts.count() == 1


def test_a_paid_account_shows_no_open_invoice(client, past_due):
    s, invoice = past_due
    Invoice.objects.filter(pk=invoice.pk).update(status="paid", amount_paid=invoice.amount_due)
    Subscription.objects.filter(pk=s.subscription.pk).update(status="active")  # as paying it does
    body = html(logged_in(client, s.owner).get(url("overview", s.customer.pk)))
    assert "unpaid" not in body and pay_url(s, invoice) not in body


# --- other accounts --------------------------------------------------------------------------------------------


def test_another_customers_user_gets_404_for_the_invoice(client, past_due):
    s, invoice = past_due
    use_card(s, "pm_card_visa")
    outsider = MembershipFactory(customer=CustomerFactory(), role=Membership.Role.OWNER)
    logged_in(client, outsider.user)
    before = invoice_state(invoice)
    # Through the victim's account, and through their own account with the victim's invoice id.
    assert client.post(pay_url(s, invoice)).status_code == 404
    assert client.post(url("invoice-pay", outsider.customer.pk, invoice.pk)).status_code == 404
    assert client.get(url("invoice-pay-return", outsider.customer.pk, invoice.pk)).status_code == 404
    assert client.get(url("invoice-pdf", outsider.customer.pk, invoice.pk)).status_code == 404
    assert invoice_state(invoice) == before


def test_an_unknown_invoice_is_404(client, past_due):
    s, invoice = past_due
    response = logged_in(client, s.owner).post(url("invoice-pay", s.customer.pk, invoice.pk + 1000))
    assert response.status_code == 404


def test_the_pay_address_takes_only_a_post(client, past_due):
    s, invoice = past_due
    assert logged_in(client, s.owner).get(pay_url(s, invoice)).status_code == 405


def test_a_signed_out_post_signs_in_and_returns_to_the_overview(client, past_due):
    s, invoice = past_due
    response = client.post(pay_url(s, invoice))
    assert response.status_code == 302
    target = urlparse(response.url)
    assert target.path == reverse("portal:login") and parse_qs(target.query) == {"next": [url("overview", s.customer.pk)]}
    assert Invoice.objects.get(pk=invoice.pk).payment_attempts.count() == 1


# --- paying ----------------------------------------------------------------------------------------------------


def test_paying_with_a_working_card_pays_the_invoice_and_recovers_the_subscription(client, past_due):
    s, invoice = past_due
    use_card(s, "pm_card_visa")
    response = logged_in(client, s.owner).post(pay_url(s, invoice))
    assert response.status_code == 302 and response.url == url("billing", s.customer.pk)
    page = client.get(response.url)
    assert "Thank you: the invoice is paid." in messages_of(page)
    assert f"Invoice {invoice.number}: " not in html(page)  # the alert is gone
    invoice.refresh_from_db()
    assert invoice.status == "paid" and invoice.amount_paid == invoice.amount_due and invoice.paid_at is not None
    assert Subscription.objects.get(pk=s.subscription.pk).status == "active"
    attempt = invoice.payment_attempts.order_by("number").last()
    assert (attempt.number, attempt.status, attempt.off_session) == (2, "succeeded", False)
    payment = LocalPayment.objects.get(status="succeeded")
    assert payment.amount_minor == int(invoice.amount_due * 100) and payment.reference == invoice.payment_reference


def test_a_second_post_of_the_pay_form_charges_once_and_says_nothing_is_left(client, past_due):
    s, invoice = past_due
    use_card(s, "pm_card_visa")
    logged_in(client, s.owner)
    client.post(pay_url(s, invoice))
    again = client.post(pay_url(s, invoice), follow=True)
    assert again.redirect_chain == [(url("billing", s.customer.pk), 302)]
    assert "This invoice has nothing left to pay." in messages_of(again)
    assert LocalPayment.objects.filter(status="succeeded").count() == 1
    assert Invoice.objects.get(pk=invoice.pk).payment_attempts.count() == 2


def test_a_declined_card_says_why_and_leaves_the_invoice_open(client, past_due):
    s, invoice = past_due
    planned = invoice.next_payment_attempt_at
    response = logged_in(client, s.owner).post(pay_url(s, invoice), follow=True)
    assert response.redirect_chain == [(url("billing", s.customer.pk), 302)]
    assert any("Your card was declined." in message for message in messages_of(response))
    invoice.refresh_from_db()
    assert invoice.status == "issued" and invoice.next_payment_attempt_at == planned  # the schedule is unchanged
    assert Subscription.objects.get(pk=s.subscription.pk).status == "past_due"


def test_paying_without_a_payment_method_says_to_add_one(client, past_due):
    s, invoice = past_due
    PaymentMethod.objects.filter(customer=s.customer).delete()
    response = logged_in(client, s.owner).post(pay_url(s, invoice), follow=True)
    assert "Add a payment method to pay this invoice." in messages_of(response)
    assert Invoice.objects.get(pk=invoice.pk).payment_attempts.count() == 1


def authenticate_and_return(client, s, invoice):
    """Pay, approve on the local gateway's page, follow its redirect back. Returns (attempt, return response)."""
    use_card(s, "pm_card_authenticationRequired")
    response = logged_in(client, s.owner).post(pay_url(s, invoice))
    attempt = PaymentAttempt.objects.get(invoice=invoice, number=2)
    assert attempt.status == "requires_action" and not attempt.off_session
    gateway_path = reverse("local-gateway-authenticate", args=[attempt.payment_reference])
    assert response.status_code == 302 and response.url == attempt.next_action_url
    assert urlparse(response.url).path == gateway_path
    assert Invoice.objects.get(pk=invoice.pk).status == "issued"  # nothing is paid before the customer confirms
    gateway = client.post(gateway_path, {"answer": "approve"})
    return_url = settings.SITE_URL.rstrip("/") + url("invoice-pay-return", s.customer.pk, invoice.pk)
    assert gateway.status_code == 302 and gateway.url == return_url
    back = client.get(urlparse(gateway.url).path, follow=True)
    assert back.redirect_chain == [(url("billing", s.customer.pk), 302)]
    return attempt, back


def test_a_card_needing_authentication_goes_to_the_gateway_and_returns_paid(client, past_due):
    s, invoice = past_due
    attempt, back = authenticate_and_return(client, s, invoice)
    invoice.refresh_from_db()
    attempt.refresh_from_db()
    assert invoice.status == "paid" and attempt.status == "succeeded"
    assert Subscription.objects.get(pk=s.subscription.pk).status == "active"
    assert LocalPayment.objects.filter(status="succeeded").count() == 1
    assert f"Invoice {invoice.number}: " not in html(back)


def test_returning_from_the_gateway_confirms_the_payment(client, past_due):
    s, invoice = past_due
    _attempt, back = authenticate_and_return(client, s, invoice)
    assert "Thank you: the invoice is paid." in messages_of(back)


def test_failing_authentication_at_the_gateway_leaves_the_invoice_open(client, past_due):
    s, invoice = past_due
    use_card(s, "pm_card_authenticationRequired")
    response = logged_in(client, s.owner).post(pay_url(s, invoice))
    client.post(urlparse(response.url).path, {"answer": "fail"})
    invoice.refresh_from_db()
    assert invoice.status == "issued" and Subscription.objects.get(pk=s.subscription.pk).status == "past_due"
    attempt = PaymentAttempt.objects.get(invoice=invoice, number=2)
    assert (attempt.status, attempt.failure_code) == ("declined", "authentication_failed")
    assert not LocalPayment.objects.filter(status="succeeded").exists()


def test_returning_after_a_failed_authentication_says_so_and_starts_no_new_payment(client, past_due):
    s, invoice = past_due
    use_card(s, "pm_card_authenticationRequired")
    response = logged_in(client, s.owner).post(pay_url(s, invoice))
    gateway = client.post(urlparse(response.url).path, {"answer": "fail"})
    back = client.get(urlparse(gateway.url).path, follow=True)
    assert back.redirect_chain == [(url("billing", s.customer.pk), 302)]
    assert "The payment was not authenticated." in " ".join(messages_of(back))
    assert Invoice.objects.get(pk=invoice.pk).payment_attempts.count() == 2


def test_a_get_on_the_return_address_charges_nothing(client, past_due):
    s, invoice = past_due
    use_card(s, "pm_card_visa")
    before = invoice_state(invoice)
    response = logged_in(client, s.owner).get(url("invoice-pay-return", s.customer.pk, invoice.pk))
    assert response.status_code == 302 and response.url == url("billing", s.customer.pk)
    assert invoice_state(invoice) == before
    assert Invoice.objects.get(pk=invoice.pk).payment_attempts.count() == 1


def test_after_abandoning_authentication_a_new_card_pays(client, past_due):
    s, invoice = past_due
    use_card(s, "pm_card_authenticationRequired")
    logged_in(client, s.owner).post(pay_url(s, invoice))  # then closes the gateway's page without answering
    use_card(s, "pm_card_visa")
    response = client.post(pay_url(s, invoice))
    assert response.status_code == 302 and response.url == url("billing", s.customer.pk)
    assert Invoice.objects.get(pk=invoice.pk).status == "paid"


def test_paying_an_already_paid_invoice_says_there_is_nothing_left_to_pay(client, past_due):
    s, invoice = past_due
    use_card(s, "pm_card_visa")
    invoice_collect(invoice_id=invoice.pk, now=timezone.now(), on_session=True)  # paid meanwhile (another tab)
    response = logged_in(client, s.owner).post(pay_url(s, invoice), follow=True)
    assert response.redirect_chain == [(url("billing", s.customer.pk), 302)]
    assert "This invoice has nothing left to pay." in messages_of(response)
    assert LocalPayment.objects.filter(status="succeeded").count() == 1


# --- plan changes while past due -------------------------------------------------------------------------------


def test_the_plans_page_refuses_quotes_while_past_due(client, past_due):
    s, _invoice = past_due
    body = html(logged_in(client, s.owner).get(url("plans", s.customer.pk, s.subscription.pk)))
    assert escape(UNPAID) in body
    assert "Choose " not in body


def test_requesting_a_quote_while_past_due_is_refused_with_the_reason(client, past_due):
    s, _invoice = past_due
    plans = url("plans", s.customer.pk, s.subscription.pk)
    response = logged_in(client, s.owner).post(url("review-create", s.customer.pk, s.subscription.pk),
                                                {"plan": s.pro.pk, "interval": "month", "seats": 5})
    assert response.status_code == 302 and response.url == plans
    assert UNPAID in messages_of(client.get(plans))
    assert not Quote.objects.exists()


def test_quotes_are_possible_again_once_the_invoice_is_paid(client, past_due):
    s, invoice = past_due
    use_card(s, "pm_card_visa")
    logged_in(client, s.owner).post(pay_url(s, invoice))
    response = client.post(url("review-create", s.customer.pk, s.subscription.pk),
                           {"plan": s.pro.pk, "interval": "month", "seats": 5})
    quote = Quote.objects.get()
    assert response.url == url("review", s.customer.pk, quote.pk)
