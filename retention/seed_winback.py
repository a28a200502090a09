"""Demo data for win-back (called from billing's seed_demo; safe to run again): a campaign of two emails after a
cancellation (7 and 30 days, the second with a 20 % offer) and one demo customer who cancelled 8 days ago."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model

from billing.models import Customer, Membership, PaymentMethod, Price, Subscription
from retention.models import RetentionOffer, WinBackCampaign, WinBackEnrolment, WinBackStep

DEMO_CUSTOMER = "Vandelay Industries"


def seed_winback(*, now: datetime, password: str) -> str:
    """Returns the line seed_demo prints."""
    from retention.services.winback import winback_offer_url

    offer, _ = RetentionOffer.objects.update_or_create(name="Win-back: 20 % for 3 months", defaults={
        "headline": "20 % off for 3 months", "kind": "discount", "percent_off": Decimal("20.00"), "periods": 3,
        "flow": "cancel", "is_active": True})
    campaign, _ = WinBackCampaign.objects.get_or_create(name="After a cancellation", defaults={
        "trigger": "cancel", "max_age_days": 90})
    WinBackStep.objects.update_or_create(campaign=campaign, position=1, defaults={"delay_days": 7, "offer": None})
    second, _ = WinBackStep.objects.update_or_create(campaign=campaign, position=2,
                                                     defaults={"delay_days": 30, "offer": offer})
    customer, _ = Customer.objects.update_or_create(name=DEMO_CUSTOMER, defaults={
        "email": "billing@vandelay.example", "country": "DE", "currency": "EUR", "timezone": "Europe/Berlin",
        "address": f"{DEMO_CUSTOMER}\n1 Demo Street\nDE"})
    PaymentMethod.objects.update_or_create(customer=customer, is_default=True, defaults={
        "gateway": "local", "reference": "pm_card_visa", "label": "Visa ending 4242"})
    user, created = get_user_model().objects.get_or_create(username="vera", defaults={
        "email": "vera@vandelay.example", "first_name": "Vera"})
    if created:
        user.set_password(password)
        user.save()
    Membership.objects.update_or_create(customer=customer, user=user, defaults={"role": "owner"})
    cancelled_at = (now - timedelta(days=8)).replace(microsecond=0)
    price = Price.objects.get(plan__product__code="analytics", plan__code="pro", currency="EUR", interval="month",
                              is_active=True)
    subscription = Subscription.objects.filter(customer=customer, product=price.plan.product).first()
    if subscription is None:
        subscription = Subscription.objects.create(
            customer=customer, product=price.plan.product, price=price, quantity=3, seats_in_use=2,
            status=Subscription.Status.CANCELLED, current_period_start=cancelled_at - timedelta(days=30),
            current_period_end=cancelled_at)
    enrolment = WinBackEnrolment.objects.filter(customer=customer, campaign=campaign).first()
    if enrolment is None:
        enrolment = WinBackEnrolment.objects.create(
            customer=customer, campaign=campaign, subscription=subscription, triggered_at=cancelled_at,
            next_position=1, next_send_at=cancelled_at + timedelta(days=7), created_at=now)
    return (f"  Win-back:           vera (Vandelay Industries) cancelled 8 days ago: the first email goes to var/emails/ "
            f"with beat's next sweep;\n                      the 20 % offer (step 2): "
            f"{winback_offer_url(enrolment_id=enrolment.pk, step_id=second.pk)}")
