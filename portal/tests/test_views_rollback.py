"""A change that staff rolled back, as the customer sees it: reversed, not "cancelled, nothing charged"."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.services.rollbacks import plan_change_rollback
from billing.tests.factories import live_subscription_setup, staff_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def rolled_back():
    s = live_subscription_setup()
    now = timezone.now()
    quote = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=now, actor=s.owner)
    change = quote_accept(quote=quote, actor=s.owner, now=now)
    plan_change_rollback(plan_change=change, actor=staff_user("rollback_plan_change"), reason="Wrong plan", now=now)
    return s, change


@pytest.mark.parametrize(("language", "heading", "status"), [
    ("en", "This change was reversed", "Rolled back"),
    ("de", "Diese Änderung wurde rückgängig gemacht", "Rückgängig gemacht"),
])
def test_the_customer_sees_a_rolled_back_change_as_reversed(client, rolled_back, language, heading, status):
    s, change = rolled_back
    client.force_login(s.owner)
    page = client.get(reverse("portal:change", args=[s.customer.pk, change.pk]), HTTP_ACCEPT_LANGUAGE=language)
    html = page.content.decode()
    assert heading in html and "Basic" in html
    assert "nothing was charged" not in html and "nichts berechnet" not in html
    history = client.get(reverse("portal:billing", args=[s.customer.pk]), HTTP_ACCEPT_LANGUAGE=language).content
    assert status in history.decode()
