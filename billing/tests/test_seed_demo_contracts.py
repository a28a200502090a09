"""The demo's enterprise contract, approvers and policies load twice without duplicates and make a working demo."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from billing.models import Amendment, ApprovalPolicy, ApprovalPolicyStep, Contract, Subscription
from billing.services.plan_changes import quote_accept
from billing.services.quotes import quote_create

pytestmark = pytest.mark.django_db


def test_seed_demo_has_a_contract_approvers_and_policies_once():
    call_command("seed_demo", stdout=io.StringIO())
    call_command("seed_demo", stdout=io.StringIO())
    contract = Contract.objects.get()
    assert (contract.number, contract.customer.name, contract.purchase_order) == ("ENT-2026-001", "Umbrella AG",
                                                                                  "PO-2026-0815")
    assert contract.prices.count() == 2 and Amendment.objects.get().status == "draft"
    assert ApprovalPolicy.objects.count() == 6 and ApprovalPolicyStep.objects.count() == 8
    maria = get_user_model().objects.get(username="maria")
    fiona = get_user_model().objects.get(username="fiona")
    for user in (maria, fiona):
        assert user.is_staff and user.has_perm("billing.decide_approvalrequest")
    assert [g.name for g in maria.groups.all()] == ["Sales managers"]
    assert fiona.has_perm("billing.download_invoice")  # finance keeps its own permissions


def test_in_the_demo_a_big_seat_addition_is_held_for_a_sales_manager():
    call_command("seed_demo", stdout=io.StringIO())
    subscription = Subscription.objects.get(customer__name="Umbrella AG")
    uma = get_user_model().objects.get(username="uma")
    now = timezone.now()
    quote = quote_create(subscription=subscription, to_price=subscription.price, quantity=90, now=now, actor=uma)
    change = quote_accept(quote=quote, actor=uma, now=now)
    if quote.amount_due > 1000:  # 30 seats × 45.00 for the rest of the month, tax on top: above the cap most days
        assert change.status == "pending_approval"
        assert [s.group_name for s in change.approval_requests.get().steps.all()] == ["Sales managers"]
    else:
        assert change.status == "applied"
