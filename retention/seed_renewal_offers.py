"""Demo data for renewal-window offers (called by `seed_demo`; safe to run again): an annual offer on Analytics
with 10 % off the first year, and Nordwind GmbH (owner `nora`), whose monthly Analytics Pro renewal is a week away,
so the overview shows the offer card at once."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model

from billing.models import Customer, Membership, PaymentMethod, Price, Product, Subscription

NORDWIND = {"name": "Nordwind GmbH", "email": "buchhaltung@nordwind.example", "country": "DE", "currency": "EUR",
            "timezone": "Europe/Berlin", "granularity": "day", "language": "de"}


def _month_before(moment: datetime) -> datetime:
    year, month = (moment.year - 1, 12) if moment.month == 1 else (moment.year, moment.month - 1)
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def seed_renewal_offers(*, now: datetime, password: str) -> None:
    from retention.models import RenewalOffer

    analytics = Product.objects.get(code="analytics")
    offer, _ = RenewalOffer.objects.update_or_create(name="Analytics: annual billing, 10 % off the first year",
                                                     defaults={
        "headline": "Two months free with annual billing, and 10 % off your first year",
        "window_days": 14, "email_after_days": 3, "send_email": True, "target_interval": "year",
        "discount_percent": Decimal("10"), "priority": 10, "is_active": True})
    offer.products.set([analytics])
    customer, _ = Customer.objects.update_or_create(name=NORDWIND["name"], defaults={
        **{k: v for k, v in NORDWIND.items() if k != "name"}, "address": "Nordwind GmbH\nHafenstraße 7\n20457 Hamburg"})
    PaymentMethod.objects.update_or_create(customer=customer, is_default=True, defaults={
        "gateway": "local", "reference": "pm_card_visa", "label": "Visa ending 4242"})
    user, created = get_user_model().objects.get_or_create(username="nora", defaults={
        "email": "nora@nordwind.example", "first_name": "Nora"})
    if created:
        user.set_password(password)
        user.save()
    Membership.objects.update_or_create(customer=customer, user=user, defaults={"role": Membership.Role.OWNER})
    if Subscription.objects.filter(customer=customer, product=analytics).exclude(status="cancelled").exists():
        return
    tz = ZoneInfo(customer.timezone)
    end = (now + timedelta(days=7)).astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    price = Price.objects.get(plan__product=analytics, plan__code="pro", currency="EUR", interval="month",
                              is_active=True)
    Subscription.objects.create(customer=customer, product=analytics, price=price, quantity=4, seats_in_use=3,
                                current_period_start=_month_before(end), current_period_end=end)
