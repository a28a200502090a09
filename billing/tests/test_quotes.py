"""Quote service: eligibility refusals with reasons, rule matching, and exact amounts."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from billing.errors import ChangeRefused
from billing.models import BalanceEntry, ChangeRule, PlanChange, Price, Subscription
from billing.services.quotes import change_direction, change_rule_find, quote_create
from billing.tests.factories import (
    MID_JANUARY,
    PERIOD_END,
    PlanFactory,
    PriceFactory,
    ProductFactory,
    subscription_setup,
)

pytestmark = pytest.mark.django_db


def quote(setup, price, quantity, now=MID_JANUARY):
    return quote_create(subscription=setup.subscription, to_price=price, quantity=quantity, now=now,
                        actor=setup.owner)


def refused(setup, price, quantity, now=MID_JANUARY) -> ChangeRefused:
    with pytest.raises(ChangeRefused) as info:
        quote(setup, price, quantity, now)
    return info.value


def test_upgrade_quote_matches_worked_example_a():
    s = subscription_setup()
    q = quote(s, s.pro_month, 5)
    assert q.direction == "upgrade" and q.timing == "now"
    assert [line["amount"] for line in q.lines] == ["-77.42", "129.03"]
    assert q.lines[0]["description"] == "Unused time on Analytics Basic × 5, 16 Jan – 1 Feb 2026 (16 of 31 days)"
    assert (q.subtotal, q.tax, q.total, q.amount_due) == (
        Decimal("51.61"), Decimal("9.81"), Decimal("61.42"), Decimal("61.42"))
    assert q.effective_at == MID_JANUARY
    assert q.expires_at == MID_JANUARY + timedelta(minutes=15)
    assert q.subscription_version == s.subscription.version
    # From the next renewal: 5 × 50.00 + 19 % VAT.
    assert (q.next_period_amount, q.next_period_tax) == (Decimal("297.50"), Decimal("47.50"))
    assert q.new_period_end == PERIOD_END


def test_interval_change_resets_the_anchor_worked_example_b():
    s = subscription_setup()
    s.subscription.price = s.pro_month
    s.subscription.save()
    q = quote(s, s.pro_year, 5)
    assert [line["amount"] for line in q.lines] == ["-129.03", "2500.00"]
    assert q.new_period_start == MID_JANUARY
    assert q.new_period_end == MID_JANUARY.replace(year=2027)


def test_downgrade_is_scheduled_at_period_end_with_nothing_due():
    s = subscription_setup()
    s.subscription.price = s.pro_month
    s.subscription.save()
    q = quote(s, s.basic_month, 5)
    assert q.direction == "downgrade" and q.timing == "period_end"
    assert q.lines == [] and q.amount_due == 0 and q.total == 0
    assert q.effective_at == PERIOD_END
    assert q.next_period_amount == Decimal("178.50")  # 5 × 30 + 19 %


def test_balance_is_applied_before_charging():
    s = subscription_setup()
    BalanceEntry.objects.create(customer=s.customer, currency="EUR", amount=Decimal("20.00"), kind="adjustment",
                                description="goodwill", created_at=MID_JANUARY)
    BalanceEntry.objects.create(customer=s.customer, currency="USD", amount=Decimal("500.00"), kind="adjustment",
                                description="another currency is never used", created_at=MID_JANUARY)
    q = quote(s, s.pro_month, 5)
    assert (q.balance_before, q.balance_applied, q.amount_due, q.balance_after) == (
        Decimal("20.00"), Decimal("20.00"), Decimal("41.42"), Decimal("0.00"))


def test_tax_inclusive_prices_and_no_tax_country():
    s = subscription_setup()
    Price.objects.filter(plan__product=s.product).update(tax_behavior="inclusive")
    s.pro_month.refresh_from_db()
    s.business_month.refresh_from_db()
    s.subscription.price.refresh_from_db()
    q = quote(s, s.pro_month, 5)
    assert q.tax_inclusive and q.total == q.subtotal == Decimal("51.61")
    assert q.tax == Decimal("8.24")  # R(51.61 × 0.19 / 1.19)
    s.customer.country = "US"
    s.customer.save()
    q = quote(s, s.business_month, 5)
    assert q.tax == 0 and q.tax_rate is None


def test_refuses_a_change_between_tax_exclusive_and_tax_inclusive_prices():
    s = subscription_setup()
    Price.objects.filter(pk=s.pro_month.pk).update(tax_behavior="inclusive")
    s.pro_month.refresh_from_db()
    assert refused(s, s.pro_month, 5).code == "tax_basis_mismatch"


def test_flat_price_is_for_exactly_one_unit():
    s = subscription_setup()
    flat = PriceFactory(plan=s.pro, interval="quarter", pricing="flat", min_quantity=1, max_quantity=None,
                        unit_amount=Decimal("100.00"))
    error = refused(s, flat, 7)
    assert error.code == "quantity_out_of_range" and "flat price for one unit" in error.detail


def test_trial_changes_are_neither_credited_nor_charged_and_keep_the_trial_end():
    s = subscription_setup()
    Subscription.objects.filter(pk=s.subscription.pk).update(status="trialing")
    s.subscription.refresh_from_db()
    q = quote(s, s.pro_month, 5)
    assert q.lines == [] and q.amount_due == 0 and q.timing == "now"
    q = quote(s, s.pro_year, 5)
    assert q.lines == [] and q.amount_due == 0
    assert (q.new_period_start, q.new_period_end) == (s.subscription.current_period_start, PERIOD_END)


def test_crossgrade_refused_while_another_subscription_is_scheduled_to_move_there():
    from billing.services.plan_changes import quote_accept

    s = subscription_setup()
    other_product = ProductFactory()
    target = PriceFactory(plan=PlanFactory(product=other_product, rank=1), unit_amount=Decimal("10.00"))
    second_product = ProductFactory()
    second_price = PriceFactory(plan=PlanFactory(product=second_product, rank=1), unit_amount=Decimal("40.00"))
    second = Subscription.objects.create(customer=s.customer, product=second_product, price=second_price,
                                         quantity=5, current_period_start=s.subscription.current_period_start,
                                         current_period_end=PERIOD_END)
    ChangeRule.objects.filter(name="Cross-grades").update(timing="period_end", charge="none", credit="none")
    scheduled = quote_create(subscription=second, to_price=target, quantity=5, now=MID_JANUARY, actor=s.owner)
    assert quote_accept(quote=scheduled, actor=s.owner, now=MID_JANUARY).status == "scheduled"
    assert refused(s, target, 5).code == "already_subscribed"


def test_inactive_rules_never_decide():
    s = subscription_setup()
    ChangeRule.objects.create(position=1, name="Inactive refusal", direction="upgrade", allowed=False,
                              refusal_reason="never shown", is_active=False)
    assert quote(s, s.pro_month, 5).change_rule.name == "Upgrades"


def test_second_granularity_customer():
    s = subscription_setup(granularity="second")
    q = quote(s, s.pro_month, 5)
    # 16 Jan 12:00 → 1 Feb 00:00 Berlin is 15.5 days of 31.
    assert q.lines[0]["unit"] == "second"
    assert q.lines[0]["amount"] == "-75.00" and q.lines[1]["amount"] == "125.00"


@pytest.mark.parametrize(
    ("status", "code"),
    [(Subscription.Status.CANCELLED, "subscription_not_active"), (Subscription.Status.PAST_DUE, "invoice_unpaid")],
)
def test_refuses_inactive_subscription(status, code):
    s = subscription_setup()
    s.subscription.status = status
    s.subscription.save()
    assert refused(s, s.pro_month, 5).code == code


def test_refuses_when_the_period_has_ended():
    s = subscription_setup()
    assert refused(s, s.pro_month, 5, now=PERIOD_END + timedelta(hours=1)).code == "period_not_current"


def test_refuses_inactive_price_and_plan():
    s = subscription_setup()
    Price.objects.filter(pk=s.pro_month.pk).update(is_active=False)
    s.pro_month.refresh_from_db()
    assert refused(s, s.pro_month, 5).code == "price_unavailable"


def test_refuses_other_currency():
    s = subscription_setup()
    usd = PriceFactory(plan=s.pro, currency="USD", unit_amount=Decimal("55"))
    error = refused(s, usd, 5)
    assert error.code == "currency_unavailable" and "EUR" in error.detail


@pytest.mark.parametrize("quantity", [0, 51])
def test_refuses_seats_out_of_range(quantity):
    s = subscription_setup()
    error = refused(s, s.pro_month, quantity)
    assert error.code == "quantity_out_of_range"
    assert "1 to 50 seats" in error.detail and str(quantity) in error.detail


def test_refuses_below_the_price_minimum():
    s = subscription_setup()
    error = refused(s, s.business_month, 2)
    assert error.code == "quantity_out_of_range" and "3 to 50" in error.detail


def test_refuses_fewer_seats_than_in_use():
    s = subscription_setup()
    s.subscription.seats_in_use = 4
    s.subscription.save()
    error = refused(s, s.pro_month, 3)
    assert error.code == "seats_in_use" and "4 seats are in use" in error.detail


def test_refuses_the_same_price_and_quantity():
    s = subscription_setup()
    assert refused(s, s.basic_month, 5).code == "no_change"


def test_refuses_crossgrade_to_a_product_already_subscribed():
    s = subscription_setup()
    other = ProductFactory()
    other_price = PriceFactory(plan=PlanFactory(product=other, rank=1))
    Subscription.objects.create(customer=s.customer, product=other, price=other_price, quantity=1,
                                current_period_start=s.subscription.current_period_start,
                                current_period_end=s.subscription.current_period_end)
    assert refused(s, other_price, 1).code == "already_subscribed"


def test_refuses_while_another_change_waits_for_payment():
    s = subscription_setup()
    q = quote(s, s.pro_month, 5)
    PlanChange.objects.create(
        customer=s.customer, subscription=s.subscription, quote=q, status="requires_action", direction="upgrade",
        timing="now", from_price=s.basic_month, from_quantity=5, to_price=s.pro_month, to_quantity=5,
        effective_at=MID_JANUARY, new_period_start=q.new_period_start, new_period_end=q.new_period_end,
        currency="EUR", subtotal=0, tax=0, total=0, balance_applied=0, amount_due=0, balance_after=0,
        created_at=MID_JANUARY)
    assert refused(s, s.business_month, 5).code == "change_in_progress"


def test_rule_refusal_shows_its_reason_and_first_match_wins():
    s = subscription_setup()
    ChangeRule.objects.create(position=5, name="No Business online", to_plan=s.business, allowed=False,
                              refusal_reason="Business is sold by our sales team.")
    error = refused(s, s.business_month, 5)
    assert error.code == "change_not_allowed" and error.detail == "Business is sold by our sales team."
    # A later, inactive or non-matching rule does not decide.
    assert quote(s, s.pro_month, 5).change_rule.name == "Upgrades"


def test_no_matching_rule_refuses():
    s = subscription_setup(rules=False)
    assert refused(s, s.pro_month, 5).code == "change_not_allowed"


def test_rule_modes_and_approval_are_recorded():
    s = subscription_setup(rules=False)
    ChangeRule.objects.create(position=1, name="Upgrades charged in full, no credit", direction="upgrade",
                              charge="full", credit="none", requires_approval=True)
    q = quote(s, s.pro_month, 5)
    assert [line["amount"] for line in q.lines] == ["250.00"]
    assert q.requires_approval


def test_direction_by_rank_then_value_then_interval():
    s = subscription_setup()
    assert change_direction(from_price=s.basic_month, from_quantity=5, to_price=s.pro_month, to_quantity=5) == "upgrade"
    assert change_direction(from_price=s.pro_month, from_quantity=5, to_price=s.basic_month, to_quantity=9) == "downgrade"
    assert change_direction(from_price=s.basic_month, from_quantity=5, to_price=s.basic_month, to_quantity=6) == "upgrade"
    assert change_direction(from_price=s.basic_month, from_quantity=5, to_price=s.basic_month, to_quantity=4) == "downgrade"
    other = PriceFactory(plan=PlanFactory(rank=2))
    assert change_direction(from_price=s.basic_month, from_quantity=5, to_price=other, to_quantity=5) == "crossgrade"
    # Yearly Pro at 500 is cheaper per day than monthly Pro at 50: a downgrade by value.
    assert change_direction(from_price=s.pro_month, from_quantity=5, to_price=s.pro_year, to_quantity=5) == "downgrade"
    # Yet the interval rule, placed first, still makes month → year immediate.
    rule = change_rule_find(from_price=s.pro_month, to_price=s.pro_year, direction="downgrade")
    assert rule.name == "Monthly to annual" and rule.timing == "now"


def test_quote_instant_is_a_whole_second():
    s = subscription_setup(granularity="second")
    q = quote(s, s.pro_month, 5, now=MID_JANUARY + timedelta(microseconds=654_321))
    assert q.created_at == MID_JANUARY and q.effective_at == MID_JANUARY
    assert q.lines[0]["remaining"] == "1339200" and "(1339200 of 2678400 seconds)" in q.lines[0]["description"]


def test_pricing_without_storing_gives_the_stored_quotes_amounts():
    from billing.models import Quote
    from billing.services.quotes import pricing_context, quote_price

    s = subscription_setup()
    context = pricing_context(subscription=s.subscription, now=MID_JANUARY)
    draft = quote_price(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=MID_JANUARY,
                        context=context)
    assert draft.pk is None and not Quote.objects.exists()
    stored = quote(s, s.pro_month, 5)
    fields = ["lines", "subtotal", "tax", "total", "amount_due", "balance_after", "next_period_amount",
              "effective_at", "new_period_end", "direction", "timing"]
    assert [getattr(draft, f) for f in fields] == [getattr(stored, f) for f in fields]


def test_a_bulk_preview_prices_with_the_same_context_as_one_quote():
    """pricing_contexts (a bulk job's preview: read for all rows at once, rules, seller and tax from a ReadContext)
    gives every subscription exactly what pricing_context reads for it alone."""
    from billing.selectors_context import ReadContext
    from billing.services.quotes import pricing_context, pricing_contexts
    from billing.tests.factories import MID_JANUARY, contract_for

    s = subscription_setup()
    BalanceEntry.objects.create(customer=s.customer, currency="EUR", amount=Decimal("20.00"), kind="adjustment",
                                description="goodwill", created_at=MID_JANUARY)
    BalanceEntry.objects.create(customer=s.customer, currency="USD", amount=Decimal("500.00"), kind="adjustment",
                                description="another currency is never used", created_at=MID_JANUARY)
    contract_for(s)
    Subscription.objects.filter(pk=s.subscription.pk).update(price=s.pro_month)
    s.subscription.refresh_from_db()
    scheduled = quote_create(subscription=s.subscription, to_price=s.basic_month, quantity=5, now=MID_JANUARY,
                             actor=s.owner)
    from billing.services.plan_changes import quote_accept

    assert quote_accept(quote=scheduled, actor=s.owner, now=MID_JANUARY).status == "scheduled"
    subscriptions = list(Subscription.objects.select_related("customer", "price__plan__product"))
    batch = pricing_contexts(subscriptions=subscriptions, now=MID_JANUARY, ctx=ReadContext())
    for subscription in subscriptions:
        alone = pricing_context(subscription=subscription, now=MID_JANUARY)
        assert batch[subscription.pk] == alone
        assert alone.contract is not None and alone.balance == Decimal("20.00") and len(alone.open_changes) == 1
