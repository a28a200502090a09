"""Pages stating a tiered price's bands, in a real browser: axe-core finds nothing serious and nothing sticks out
sideways on a phone (the bands are long sentences)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.utils import timezone

from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.factories import PlanFactory, tiered_price
from portal.tests.browser.conftest import DESKTOP, PHONE
from portal.tests.browser.support import portal_setup, sign_in
from portal.tests.browser.test_every_page import OVERFLOW_JS

pytestmark = pytest.mark.django_db(transaction=True)

BANDS = "Seats 1–10: 10 × €10.00; 11–25: 15 × €8.00 (€220.00 for a full period)"


def tiered_pages(live_server) -> tuple[object, dict[str, str]]:
    """The owner's plans page with a graduated Team plan, a review of Team × 25 and the page of an applied one."""
    s = portal_setup()
    team = tiered_price(plan=PlanFactory(product=s.product, code="team", name="Team", rank=4))
    now = timezone.now()
    applied = quote_accept(quote=quote_create(subscription=s.subscription, to_price=team, quantity=25, now=now,
                                              actor=s.owner), actor=s.owner, now=now)
    assert applied.status == "applied"
    review = quote_create(subscription=type(s.subscription).objects.get(pk=s.subscription.pk), to_price=team,
                          quantity=30, now=now, actor=s.owner)
    c, sub, base = s.customer.pk, s.subscription.pk, live_server.url
    return s, {"overview": f"{base}/c/{c}/", "plans": f"{base}/c/{c}/subscriptions/{sub}/plans/",
               "review": f"{base}/c/{c}/quotes/{review.pk}/", "change": f"{base}/c/{c}/changes/{applied.pk}/"}


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_band_pages_are_accessible_and_fit_the_screen(live_server, new_page, axe: Callable, viewport):
    s, urls = tiered_pages(live_server)
    page = new_page(viewport=viewport)
    sign_in(page, live_server, s.owner)
    serious, overflowing = {}, {}
    for name, url in urls.items():
        page.goto(url)
        serious[name] = [v["id"] for v in axe(page) if v["impact"] in ("serious", "critical")]
        report = page.evaluate(OVERFLOW_JS)
        if report["scrollWidth"] > report["width"] or report["sticking"] or report["tables"]:
            overflowing[name] = report
    assert not any(serious.values()), serious
    assert not overflowing, overflowing
    page.goto(urls["change"])
    assert page.locator(".bands").all_inner_texts() == [BANDS]
    page.goto(urls["review"])
    assert page.locator(".bands").all_inner_texts() == [
        "Seats 1–10: 10 × €10.00; 11–25: 15 × €8.00 (€220.00 for a full period)",  # credit for Team × 25
        "Seats 1–10: 10 × €10.00; 11–30: 20 × €8.00 (€260.00 for a full period)",  # charge for Team × 30
    ]
