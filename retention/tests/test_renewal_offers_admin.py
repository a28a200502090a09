"""Staff edit renewal offers in admin; the list counts quotes, switches and "Not now"; the records are read-only."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from billing.tests.factories import subscription_setup
from retention.models import RenewalOffer
from retention.services.renewal_offers import renewal_offer_dismiss

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_the_offer_list_counts_and_the_form_validates(admin_client):
    from datetime import datetime

    from billing.tests.factories import BERLIN

    s = subscription_setup()
    offer = RenewalOffer.objects.create(name="Annual", window_days=14)
    renewal_offer_dismiss(subscription=s.subscription, actor=s.owner, now=datetime(2026, 1, 20, tzinfo=BERLIN))
    page = admin_client.get(reverse("admin:retention_renewaloffer_changelist")).content.decode()
    assert "Annual" in page and "Not now" in page
    form = admin_client.get(reverse("admin:retention_renewaloffer_change", args=[offer.pk]))
    assert form.status_code == 200
    bad = admin_client.post(reverse("admin:retention_renewaloffer_add"), {
        "name": "Bad", "window_days": 30, "email_after_days": 3, "target_interval": "year",
        "discount_percent": "100", "priority": 100})
    assert bad.status_code == 200 and RenewalOffer.objects.count() == 1
    assert admin_client.get(reverse("admin:retention_renewalofferdismissal_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:retention_renewalofferdismissal_add")).status_code == 403
    assert admin_client.get(reverse("admin:retention_renewalofferquote_changelist")).status_code == 200
