"""The set-based staff step writes exactly what the single path writes, on the same data, and a chunk that fails
midway (a worker killed between charging and applying) is finished by the single path, charged once."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from decimal import Decimal

import pytest

from billing.models import (
    ApprovalRequest,
    AuditEvent,
    BalanceEntry,
    Customer,
    DocumentSeries,
    Invoice,
    InvoiceLine,
    LocalPayment,
    PlanChange,
    Quote,
    ScheduledChange,
    Subscription,
)
from billing.services import scheduled_changes, scheduled_changes_bulk
from billing.services.scheduled_changes import scheduled_change_apply, scheduled_change_create, scheduled_changes_run
from billing.tests.factories import (
    MID_JANUARY,
    PERIOD_END,
    CustomerFactory,
    PaymentMethodFactory,
    UserFactory,
    approval_policy,
    contract_for,
    subscription_setup,
)
from retention.models import Trial, WinBackEnrolment
from retention.tests.winback_support import campaigns

pytestmark = pytest.mark.django_db

NOW = MID_JANUARY
# (name, card, from price, to price, seats): one customer and one staff change each.
KINDS = [
    ("upgrade", "pm_card_visa", "basic_month", "pro_month", 5),            # plain: taken together
    ("seats", "pm_card_visa", "basic_month", "basic_month", 8),            # plain: more seats, taken together
    ("business", "pm_card_visa", "basic_month", "business_month", 5),      # plain: features gained
    ("returning", "pm_card_visa", "basic_month", "pro_month", 5),          # plain, and a win-back enrolment converts
    ("declined", "pm_card_chargeDeclined", "basic_month", "pro_month", 5),  # together until the charge: declined
    ("3ds", "pm_card_authenticationRequired", "basic_month", "pro_month", 5),  # needs authentication: failed
    ("downgrade", "pm_card_visa", "pro_month", "basic_month", 5),          # at the period end: one by one
    ("held", "pm_card_visa", "basic_month", "business_month", 20),         # an approval policy holds it
    ("refused", "pm_card_visa", "basic_month", "business_month", 2),       # below the plan's minimum seats
    ("balance", "pm_card_visa", "basic_month", "pro_month", 5),            # a credit balance to apply
    ("contract", "pm_card_visa", "basic_month", "pro_month", 5),           # a contract's negotiated prices
    ("trial", "pm_card_visa", "basic_month", "pro_month", 5),              # a trial running
    ("paused", "pm_card_visa", "basic_month", "pro_month", 5),             # paused: refused
]
TOGETHER = {"upgrade", "seats", "business", "returning", "declined", "3ds"}  # charged by the set-based step


def group(s, name: str, staff, c) -> list[ScheduledChange]:
    rows = []
    for kind, card, from_price, to_price, seats in KINDS:
        customer = CustomerFactory(name=f"{name}-{kind}")
        PaymentMethodFactory(customer=customer, reference=card)
        subscription = Subscription.objects.create(
            customer=customer, product=s.product, price=getattr(s, from_price), quantity=5,
            current_period_start=s.subscription.current_period_start, current_period_end=PERIOD_END)
        if kind == "balance":
            BalanceEntry.objects.create(customer=customer, currency="EUR", amount=Decimal("20.00"), kind="adjustment",
                                        description="goodwill", created_at=NOW - timedelta(days=1))
        if kind == "contract":
            contract_for(dataclasses.replace(s, customer=customer, subscription=subscription),
                         number=f"ENT-{name}")
        if kind == "trial":
            Trial.objects.create(customer=customer, subscription=subscription, product=s.product,
                                 from_price=s.basic_month, from_quantity=5, plan=s.business, price=s.business_month,
                                 quantity=5, starts_at=NOW - timedelta(days=2), ends_at=PERIOD_END,
                                 source="portal", created_at=NOW - timedelta(days=2))
        if kind == "paused":
            Subscription.objects.filter(pk=subscription.pk).update(paused_until=PERIOD_END)
        if kind == "returning":
            WinBackEnrolment.objects.create(customer=customer, campaign=c.downgrade, subscription=subscription,
                                            triggered_at=NOW - timedelta(days=5), next_send_at=NOW + timedelta(days=9),
                                            created_at=NOW - timedelta(days=5))
        rows.append(scheduled_change_create(subscription=subscription, to_price=getattr(s, to_price),
                                            quantity=seats, effective_at=NOW, actor=staff, reason="Q1 repricing",
                                            now=NOW - timedelta(hours=1)))
    return rows


def _norm(value, ids: dict[str, str]):
    """Ids and gateway references replaced by their role, so both groups compare equal."""
    if isinstance(value, dict):
        return {k: _norm(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v, ids) for v in value]
    if isinstance(value, str):
        value = re.sub(r"pi_local_[0-9a-f]+", "pi_local_…", value)
        return re.sub(r"(plan change|request) \d+", lambda m: f"{m.group(1)} #", value)
    return value


def written(row: ScheduledChange) -> dict:
    """Everything written for this row's customer, without ids, numbers, names and gateway references."""
    row = ScheduledChange.objects.get(pk=row.pk)
    sub = Subscription.objects.get(pk=row.subscription_id)
    customer = Customer.objects.get(pk=sub.customer_id)

    def fields(obj, skip: set[str]) -> dict:
        return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields
                if f.name not in skip and f.attname not in skip}

    ids = {"id", "customer", "subscription", "quote", "plan_change", "payment_method", "created_at", "updated_at",
           "payment_reference", "related_invoice", "buyer_name", "number", "pdf"}
    changes = list(PlanChange.objects.filter(subscription=sub).order_by("pk"))
    invoices = []
    for invoice in Invoice.objects.filter(subscription=sub).order_by("pk"):
        assert invoice.number and invoice.buyer_name == customer.name
        assert invoice.payment_reference == (invoice.plan_change.payment_reference if invoice.plan_change else "")
        lines = list(InvoiceLine.objects.filter(invoice=invoice).order_by("position")
                     .values("position", "description", "detail", "quantity", "unit_amount", "amount", "tax_rate"))
        invoices.append((fields(invoice, ids), lines))
    payments = [(p.amount_minor, p.currency, p.status, p.payment_method, p.failure_code)
                for change in changes for p in LocalPayment.objects.filter(idempotency_key=change.payment_idempotency_key)]
    return _norm({
        "row": fields(row, ids | {"job", "created_by", "line_number", "source"}) | {
            "has_quote": row.quote_id is not None, "has_change": row.plan_change_id is not None},
        "subscription": fields(sub, ids),
        "entitlements_version": customer.entitlements_version,
        "quotes": [fields(q, ids | {"from_price", "to_price", "change_rule", "created_by"})
                   | {"to_price": q.to_price_id, "rule": q.change_rule_id}
                   for q in Quote.objects.filter(subscription=sub).order_by("pk")],
        "changes": [fields(c, ids | {"created_by"}) | {"paid": bool(c.payment_reference)} for c in changes],
        "payments": payments,
        "events": list(AuditEvent.objects.filter(customer=customer, created_at__gte=NOW).order_by("pk").values(
            "action", "reason_code", "object_type", "before", "after", "message", "actor_label", "created_at")),
        "balance": sorted(BalanceEntry.objects.filter(customer=customer).values_list("kind", "amount")),
        "winback": list(WinBackEnrolment.objects.filter(customer=customer).order_by("campaign_id").values(
            "campaign_id", "status", "converted_at", "revenue_won_back", "currency", "next_send_at")),
        "approvals": list(ApprovalRequest.objects.filter(customer=customer).values(
            "status", "reasons", "currency", "amount_due", "summary")),
        "invoices": invoices,
    }, {})


@pytest.fixture
def world(settings):
    settings.SCHEDULED_CHANGES_SET_BASED = True
    s = subscription_setup()
    c = campaigns()
    approval_policy("Large changes", "amount_due_above", "finance", threshold="1000.00", currency="EUR")
    return s, c, UserFactory(is_staff=True, username="ops")


def test_the_set_based_step_writes_what_the_single_path_writes(world, monkeypatch):
    s, c, staff = world
    together, alone = group(s, "together", staff, c), group(s, "alone", staff, c)
    taken = {}
    real = scheduled_changes_bulk.scheduled_changes_apply_set

    def spy(**kwargs):
        result = real(**kwargs)
        taken.update(result)
        return result

    monkeypatch.setattr(scheduled_changes_bulk, "scheduled_changes_apply_set", spy)
    done = scheduled_changes_run(ids=[r.pk for r in together], now=NOW)
    assert done == len(KINDS)
    assert sorted(taken) == sorted(r.pk for r, kind in zip(together, KINDS, strict=True) if kind[0] in TOGETHER)
    for row in alone:  # the single path, one row at a time
        scheduled_change_apply(scheduled_change_id=row.pk, now=NOW)

    for (kind, *_rest), a, b in zip(KINDS, together, alone, strict=True):
        left, right = written(a), written(b)
        assert left == right, kind
    results = {kind: written(row)["row"] for (kind, *_rest), row in zip(KINDS, together, strict=True)}
    assert {k: (v["status"], v["result_code"]) for k, v in results.items()} == {
        "upgrade": ("applied", ""), "seats": ("applied", ""), "business": ("applied", ""),
        "returning": ("applied", ""), "declined": ("failed", "card_declined"),
        "3ds": ("failed", "needs_authentication"), "downgrade": ("handed_over", ""),
        "held": ("handed_over", "pending_approval"), "refused": ("refused", "quantity_out_of_range"),
        "balance": ("applied", ""), "contract": ("applied", ""), "trial": ("applied", ""),
        "paused": ("refused", "subscription_paused")}
    business = written(together[2])
    assert business["changes"][0]["entitlements_added"] == ["sso", "storage"]
    assert business["invoices"][0][0]["status"] == "paid" and business["payments"][0][2] == "succeeded"
    assert written(together[3])["winback"][0]["status"] == "converted"
    # One series, numbered without a gap across both ways of issuing; each change charged once.
    series = DocumentSeries.objects.get(kind="invoice")
    numbers = sorted(int(n.rsplit("-", 1)[1]) for n in Invoice.objects.values_list("number", flat=True))
    assert numbers == list(range(1, series.next_number))
    charged = LocalPayment.objects.filter(status="succeeded").count()
    assert charged == Invoice.objects.count() == 2 * 7
    # Run again: nothing is open any more, nothing is written twice.
    assert scheduled_changes_run(ids=[r.pk for r in together], now=NOW) == len(KINDS)
    assert LocalPayment.objects.count() == 2 * 9 and Invoice.objects.count() == len(numbers)


def test_a_chunk_that_fails_between_charging_and_applying_is_finished_by_the_single_path_charged_once(
        world, monkeypatch):
    """As a worker killed after the gateway took the payments: the apply transaction rolls back whole (numbers
    included); the rows stay processing with their quote and pending change; after the lease the sweep resumes each
    one, the payment key finds the charge, nothing is charged twice."""
    s, c, staff = world
    rows = group(s, "crash", staff, c)
    crashed = []

    def crash(invoice):
        crashed.append(invoice.number)
        raise SystemExit("worker lost")  # not an Exception: nothing in the worker catches it

    monkeypatch.setattr(scheduled_changes_bulk, "plan_change_invoice_enqueue", crash)
    with pytest.raises(SystemExit):
        scheduled_changes_run(ids=[r.pk for r in rows], now=NOW)
    assert len(crashed) == 1
    paid_once = LocalPayment.objects.filter(status="succeeded").count()
    assert paid_once == 4 and not Invoice.objects.exists()  # charged, nothing applied
    assert ScheduledChange.objects.filter(status="processing").count() == 4  # declined and 3ds recorded already
    monkeypatch.undo()
    later = NOW + scheduled_changes.PROCESSING_LEASE + timedelta(seconds=1)
    assert scheduled_changes_run(ids=[r.pk for r in rows], now=later) == len(KINDS)
    assert LocalPayment.objects.filter(status="succeeded").count() == paid_once + 3  # balance, contract, trial
    for (kind, *_rest), row in zip(KINDS, rows, strict=True):
        state = written(row)
        if kind in TOGETHER:
            assert len(state["payments"]) == 1, kind  # one gateway charge per change, never two
        applied = state["row"]["status"] == "applied"
        assert len(state["invoices"]) == int(applied), kind
    series = DocumentSeries.objects.get(kind="invoice")
    numbers = sorted(int(n.rsplit("-", 1)[1]) for n in Invoice.objects.values_list("number", flat=True))
    assert numbers == list(range(1, series.next_number))


def test_a_row_another_worker_claimed_first_is_left_to_it(world):
    """Two workers with the same chunk: the second claims nothing the first holds (the lease), as the single path."""
    s, c, staff = world
    rows = group(s, "race", staff, c)
    ScheduledChange.objects.filter(pk=rows[0].pk).update(status="processing", attempts=1,
                                                         retry_at=NOW + scheduled_changes.PROCESSING_LEASE)
    scheduled_changes_run(ids=[r.pk for r in rows], now=NOW)
    first = ScheduledChange.objects.get(pk=rows[0].pk)
    assert (first.status, first.quote_id, first.attempts) == ("processing", None, 1)
    assert not PlanChange.objects.filter(subscription_id=rows[0].subscription_id).exists()
