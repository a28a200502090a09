"""The set-based period-end step writes exactly what the single step writes, on the same data."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.models import (
    AuditEvent,
    BalanceEntry,
    Customer,
    DocumentSeries,
    Invoice,
    InvoiceLine,
    PlanChange,
    Subscription,
)
from billing.services import period_ends_bulk, renewals
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create
from billing.tests.factories import (
    MID_JANUARY,
    PERIOD_END,
    CustomerFactory,
    MembershipFactory,
    PaymentMethodFactory,
    subscription_setup,
)
from retention.models import WinBackEnrolment
from retention.tests.winback_support import campaigns

pytestmark = pytest.mark.django_db

# (from price, to price or "cancel" or None for a plain renewal, seats, EUR balance)
KINDS = [
    ("pro_month", "basic_month", 3, None),      # the plain case: taken together
    ("pro_month", "basic_month", 5, None),      # the plain case: taken together
    ("pro_month", "basic_month", 5, "20.00"),   # a credit to apply: step by step
    ("basic_month", None, 5, None),             # no change, renewed on the same terms: step by step
    ("pro_month", "cancel", 5, None),           # a cancellation: step by step
    ("pro_month", "basic_month", 4, "-5.00"),   # a debit balance the quote carried: step by step
    ("pro_month", "basic_month", 4, None),      # the plain case: taken together
    ("pro_month", "basic_month", 5, None),      # plain, with a retention discount starting at this renewal
    ("pro_month", "basic_month", 5, None),      # a trial running: step by step
    ("pro_month", "basic_month", 5, None),      # an amount-off retention credit to grant: step by step
]
PLAIN = {0, 1, 6, 7}
DISCOUNT, TRIAL, CREDIT = 7, 8, 9


def group(s, name: str) -> list[Subscription]:
    """One customer per kind, named `name`-index, each with its change scheduled as quote_accept schedules it."""
    subscriptions = []
    for index, (from_price, to, seats, balance) in enumerate(KINDS):
        customer = CustomerFactory(name=f"{name}-{index}")
        owner = MembershipFactory(customer=customer).user
        PaymentMethodFactory(customer=customer)
        subscription = Subscription.objects.create(
            customer=customer, product=s.product, price=getattr(s, from_price), quantity=5,
            current_period_start=s.subscription.current_period_start, current_period_end=PERIOD_END)
        if balance is not None:
            BalanceEntry.objects.create(customer=customer, currency="EUR", amount=Decimal(balance), kind="adjustment",
                                        description="goodwill", created_at=MID_JANUARY)
        if to is not None:
            quote = quote_create(subscription=subscription, to_price=None if to == "cancel" else getattr(s, to),
                                 quantity=seats, now=MID_JANUARY, actor=owner, cancel=to == "cancel")
            assert quote_accept(quote=quote, actor=owner, now=MID_JANUARY).status == "scheduled"
        if index == DISCOUNT:  # 10 % off for two periods from this renewal (billed with it, then one period left)
            Subscription.objects.filter(pk=subscription.pk).update(next_discount_percent=Decimal("10.00"),
                                                                   next_discount_periods=2)
        if index == TRIAL:
            from retention.models import Trial

            Trial.objects.create(customer=customer, subscription=subscription, product=s.product,
                                 from_price=s.pro_month, from_quantity=5, plan=s.business, price=s.business_month,
                                 quantity=5, starts_at=MID_JANUARY, ends_at=PERIOD_END.replace(day=10),
                                 source="portal", created_at=MID_JANUARY)
        if index == CREDIT:  # 10.00 off each of the next two renewals (retention offer, amount off)
            from retention.models import RecurringCredit

            RecurringCredit.objects.create(subscription=subscription, currency="EUR", amount=Decimal("10.00"),
                                           periods=2, periods_left=2, created_at=MID_JANUARY)
        if index == 1:  # an earlier try failed: success clears the sweep's memory of it
            for model in (Subscription, PlanChange):
                model.objects.filter(**({"pk": subscription.pk} if model is Subscription else
                                        {"subscription": subscription})).update(
                    sweep_failures=1, sweep_error="RuntimeError: earlier", sweep_retry_at=MID_JANUARY)
        subscriptions.append(subscription)
    return subscriptions


def written(subscription: Subscription) -> dict:
    """What the period-end step left for this subscription, without ids, numbers and the customer's name."""
    sub = Subscription.objects.get(pk=subscription.pk)
    customer = Customer.objects.get(pk=sub.customer_id)
    skip_invoice = {"id", "number", "customer", "subscription", "plan_change", "buyer_name", "pdf"}
    invoices = []
    for invoice in Invoice.objects.filter(subscription=sub).order_by("pk"):
        fields = {f.attname: getattr(invoice, f.attname) for f in Invoice._meta.concrete_fields
                  if f.name not in skip_invoice}
        assert invoice.buyer_name == customer.name and invoice.number
        lines = list(InvoiceLine.objects.filter(invoice=invoice).order_by("position")
                     .values("position", "description", "detail", "quantity", "unit_amount", "amount", "tax_rate"))
        invoices.append((fields, lines))
    return {
        "subscription": {f.attname: getattr(sub, f.attname) for f in Subscription._meta.concrete_fields
                         if f.name not in {"id", "customer", "created_at", "updated_at"}},
        "entitlements_version": customer.entitlements_version,
        "changes": list(PlanChange.objects.filter(subscription=sub).order_by("pk").values(
            "status", "applied_at", "closed_at", "entitlements_added", "new_period_start", "new_period_end",
            "failure_code", "failure_message", "next_action_url", "sweep_failures", "sweep_error",
            "sweep_retry_at", "to_price_id", "to_quantity")),
        "events": list(AuditEvent.objects.filter(customer=customer, created_at__gte=PERIOD_END).order_by("pk").values(
            "action", "reason_code", "object_type", "before", "after", "message", "actor_label", "created_at")),
        "balance": sorted(BalanceEntry.objects.filter(customer=customer).values_list("kind", "amount")),
        "winback": list(WinBackEnrolment.objects.filter(customer=customer).order_by("campaign_id").values(
            "campaign_id", "triggered_at", "next_position", "next_send_at", "status", "created_at")),
        "invoices": invoices,
    }


def test_the_set_based_step_writes_what_the_single_step_writes(monkeypatch):
    s = subscription_setup()
    campaigns()  # downgrades and cancellations enrol the customer in win-back campaigns
    together, alone = group(s, "together"), group(s, "alone")
    taken_together = []
    real = period_ends_bulk.period_ends_apply_set

    def spy(**kwargs):
        result = real(**kwargs)
        taken_together.extend(result)
        return result

    monkeypatch.setattr(renewals, "period_ends_apply_set", spy)
    applied = renewals.period_ends_run(subscription_ids=[x.pk for x in together], plan_change_ids=[], now=PERIOD_END)
    assert applied == len(KINDS)
    assert sorted(taken_together) == sorted(together[i].pk for i in PLAIN)
    for subscription in alone:  # the single step, one subscription at a time
        assert renewals.subscription_renew_all_due(subscription_id=subscription.pk, now=PERIOD_END) == 1

    for index, (a, b) in enumerate(zip(together, alone, strict=True)):
        left, right = written(a), written(b)
        assert left == right, f"kind {index} {KINDS[index]}"
        assert left["events"] and (left["invoices"] or KINDS[index][1] == "cancel")
    assert written(together[0])["changes"][0]["entitlements_added"] == []  # a downgrade gains nothing
    recovered = written(together[1])  # an earlier try failed; this step succeeded: both rows forget the failure
    assert (recovered["subscription"]["sweep_failures"], recovered["subscription"]["sweep_error"],
            recovered["subscription"]["sweep_retry_at"]) == (0, "", None)
    assert [(c["sweep_failures"], c["sweep_error"]) for c in recovered["changes"]] == [(0, "")]
    assert len(written(together[0])["winback"]) == 1  # enrolled in the downgrade campaign
    discounted = written(together[DISCOUNT])
    assert (discounted["subscription"]["discount_percent"], discounted["subscription"]["discount_periods_left"]) == (
        Decimal("10.00"), 1)
    assert discounted["invoices"][0][0]["total"] == Decimal("160.65")  # 5 × 30.00 − 10 % + 19 %
    credited = written(together[CREDIT])  # 5 × 30.00 + 19 % = 178.50; 10.00 credited, then applied to it
    assert credited["balance"] == [("applied_to_invoice", Decimal("-10.0000")), ("retention_credit", Decimal("10.0000"))]
    assert (credited["invoices"][0][0]["total"], credited["invoices"][0][0]["balance_applied"],
            credited["invoices"][0][0]["amount_due"]) == (Decimal("178.50"), Decimal("10.00"), Decimal("168.50"))
    # One series, numbered without a gap across both ways of issuing.
    series = DocumentSeries.objects.get(kind="invoice")
    numbers = sorted(int(n.rsplit("-", 1)[1]) for n in Invoice.objects.values_list("number", flat=True))
    assert numbers == list(range(1, series.next_number))
    # Run again: nothing is due any more, nothing is written twice.
    assert renewals.period_ends_run(subscription_ids=[x.pk for x in together], plan_change_ids=[],
                                    now=PERIOD_END) == 0
    assert Invoice.objects.count() == len(numbers)


def test_an_upgrade_with_features_gained_is_recorded_the_same_way(monkeypatch):
    """entitlements_added computed in memory from the chunk's catalog equals the single step's."""
    s = subscription_setup()
    subscriptions = []
    for name in ("together-a", "together-b", "alone"):
        customer = CustomerFactory(name=name)
        PaymentMethodFactory(customer=customer)
        subscriptions.append(Subscription.objects.create(
            customer=customer, product=s.product, price=s.basic_month, quantity=5,
            current_period_start=s.subscription.current_period_start, current_period_end=PERIOD_END))
    # A scheduled change to Pro × 20 at the period end, written directly (no customer-facing rule schedules an
    # upgrade at period end by default).
    for subscription in subscriptions:
        PlanChange.objects.create(
            customer=subscription.customer, subscription=subscription, status=PlanChange.Status.SCHEDULED,
            direction="upgrade", timing="period_end", from_price=s.basic_month, from_quantity=5,
            to_price=s.pro_month, to_quantity=20, effective_at=PERIOD_END, new_period_start=PERIOD_END,
            new_period_end=PERIOD_END.replace(month=3), currency="EUR", lines=[], subtotal=Decimal("0.00"),
            tax=Decimal("0.00"), total=Decimal("0.00"), balance_applied=Decimal("0.00"),
            amount_due=Decimal("0.00"), balance_after=Decimal("0.00"), reason_code="staff_upgrade",
            created_at=MID_JANUARY)
    taken = period_ends_bulk.period_ends_apply_set(subscription_ids=[x.pk for x in subscriptions[:2]],
                                                   now=PERIOD_END, ctx=renewals.ReadContext())
    assert sorted(taken) == sorted(x.pk for x in subscriptions[:2])
    assert renewals.subscription_renew(subscription_id=subscriptions[2].pk, now=PERIOD_END)
    together, alone = written(subscriptions[0]), written(subscriptions[2])
    assert together == alone
    assert together["changes"][0]["entitlements_added"] == ["sso", "storage"]
    assert together["invoices"][0][0]["total"] == Decimal("1190.00")  # 20 × 50.00 + 19 %


def test_a_set_based_step_that_fails_midway_leaves_nothing_and_the_chunk_goes_step_by_step(monkeypatch):
    """As a worker killed mid-chunk: the chunk's transaction rolls back whole (numbers included), and every
    subscription is then applied once, by the single step."""
    s = subscription_setup()
    subscriptions = group(s, "crash")
    crashed = []

    def crash(invoice):
        crashed.append(invoice.number)
        raise RuntimeError("worker lost")

    monkeypatch.setattr(period_ends_bulk, "renewal_invoice_enqueue", crash)
    applied = renewals.period_ends_run(subscription_ids=[x.pk for x in subscriptions], plan_change_ids=[],
                                       now=PERIOD_END)
    assert applied == len(KINDS) and len(crashed) == 1  # the set-based step got as far as its first invoice
    for index, subscription in enumerate(subscriptions):
        state = written(subscription)
        assert sum(e["action"] == "plan_change.applied" for e in state["events"]) == (KINDS[index][1] is not None)
        assert len(state["invoices"]) == (0 if KINDS[index][1] == "cancel" else 1)
    series = DocumentSeries.objects.get(kind="invoice")
    numbers = sorted(int(n.rsplit("-", 1)[1]) for n in Invoice.objects.values_list("number", flat=True))
    assert numbers == list(range(1, series.next_number))
