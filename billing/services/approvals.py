"""Approvals: which changes wait for whom (policies as data), decisions with separation of duties, expiry, and
the held change's completion once approved.

- A customer's change that a policy matches (or whose change rule requires approval, or whose amount due is above
  the contract's budget cap) is held when the quote is accepted: a plan change in `pending_approval`, nothing
  charged. The final approval enqueues `proceed_approved_change` after commit; that task charges and applies it
  (billing.services.plan_changes), or fails it with a reason when the subscription changed meanwhile.
- A contract amendment is held when submitted; the final approval applies it (billing.services.contracts) when its
  date has come, or the sweep does on that date.

Separation of duties: the requester (and an amendment's drafter) never decides their own request; one person
decides at most one step of a request (also a unique constraint); a step is decided only by a member of its role
(group) holding `billing.decide_approvalrequest`. Locks: customer → subscription → contract → amendment →
approval request → plan change, so two approvers deciding the last step at once apply the change exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils.translation import gettext as _

from billing import proration
from billing.errors import ApprovalRefused, ChangeConflict, ChangeRefused
from billing.models import (
    Amendment,
    ApprovalPolicy,
    ApprovalRequest,
    ApprovalStep,
    Contract,
    Customer,
    Membership,
    PlanChange,
    Quote,
    Subscription,
    Timing,
)
from billing.money import format_amount
from billing.selectors import (
    billing_date,
    contract_in_force,
    customer_balance,
    legal_entity_default,
    price_item,
    tax_decision_for,
)
from billing.services.audit import audit_event_record
from billing.services.contracts import (
    AmendmentPreview,
    _lock_amendment,
    amendment_apply_locked,
    amendment_snapshot,
)
from billing.services.notifications import absolute_url, notification_queue
from billing.services.plan_changes import (
    _apply,
    _change_snapshot,
    _fail_change,
    _lock,
    _supersede_scheduled,
    plan_change_collect_payment,
)

logger = logging.getLogger(__name__)

AMENDMENTS, CUSTOMER_CHANGES = ApprovalPolicy.AppliesTo.AMENDMENTS, ApprovalPolicy.AppliesTo.CUSTOMER_CHANGES


# --- which changes need approval -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeFacts:
    """What policies look at, for a customer's change or an amendment."""

    subject: str  # ApprovalPolicy.AppliesTo.AMENDMENTS or CUSTOMER_CHANGES
    currency: str
    amount_due: Decimal
    discount_percent: Decimal = Decimal(0)  # how far the target's period is below the catalog's
    price_override: bool = False
    term_change: bool = False
    rule_requires_approval: bool = False
    budget_cap: Decimal | None = None  # the contract's, in its currency

    @property
    def over_budget_cap(self) -> bool:
        return self.budget_cap is not None and self.amount_due > self.budget_cap


def policy_reason(policy: ApprovalPolicy, facts: ChangeFacts) -> dict[str, Any] | None:
    """Why `policy` matches the change (a plain dict kept on the request), or None."""
    if not policy.is_active or policy.applies_to not in (ApprovalPolicy.AppliesTo.BOTH, facts.subject):
        return None
    trigger, Trigger = policy.trigger, ApprovalPolicy.Trigger
    reason = {"policy": policy.name, "policy_id": policy.pk, "trigger": trigger}
    if trigger == Trigger.ANY:
        return {**reason, "detail": "every change"}
    if trigger == Trigger.AMOUNT_DUE_ABOVE:
        if policy.currency == facts.currency and policy.threshold is not None and facts.amount_due > policy.threshold:
            return {**reason, "detail": f"amount due {format_amount(facts.amount_due, facts.currency)} "
                                        f"{facts.currency} above {format_amount(policy.threshold, facts.currency)}"}
        return None
    if trigger == Trigger.DISCOUNT_ABOVE:
        if policy.threshold is not None and facts.discount_percent > policy.threshold:
            return {**reason, "detail": f"discount {facts.discount_percent.quantize(Decimal('0.01'))} % deeper than "
                                        f"{policy.threshold.normalize():f} %"}
        return None
    if trigger == Trigger.PRICE_OVERRIDE:
        return {**reason, "detail": "price override"} if facts.price_override else None
    if trigger == Trigger.TERM_CHANGE:
        return {**reason, "detail": "term change"} if facts.term_change else None
    if trigger == Trigger.BUDGET_CAP:
        if facts.over_budget_cap:
            return {**reason, "detail": f"amount due {format_amount(facts.amount_due, facts.currency)} "
                                        f"{facts.currency} above the budget cap "
                                        f"{format_amount(facts.budget_cap, facts.currency)}"}
        return None
    if trigger == Trigger.CHANGE_RULE:
        return {**reason, "detail": "the change rule requires approval"} if facts.rule_requires_approval else None
    return None


@dataclass
class Hold:
    """The policies a change matched (position order) and the steps they ask for."""

    facts: ChangeFacts
    reasons: list[dict[str, Any]]
    steps: list[tuple[int, str]]  # (group id, group name), each role once, in order
    in_order: bool
    decide_within: timedelta
    policies: list[ApprovalPolicy] = field(default_factory=list)


def approval_hold_for(*, facts: ChangeFacts, policies: list[ApprovalPolicy] | None = None) -> Hold | None:
    """Every active matching policy contributes its steps (a role named twice is asked once, at its first place);
    steps go in order when any matching policy says so; the shortest deadline wins. None: no approval needed.

    A change that must be held (its change rule requires approval, or it is over the budget cap) but that no
    policy gives an approver for is refused rather than charged (`approval_not_configured`)."""
    if policies is None:
        policies = list(ApprovalPolicy.objects.filter(is_active=True).prefetch_related("steps__group")
                        .order_by("position", "pk"))
    matched, reasons = [], []
    for policy in policies:
        reason = policy_reason(policy, facts)
        if reason is not None and policy.steps.all():
            matched.append(policy)
            reasons.append(reason)
    if not matched:
        if facts.rule_requires_approval or facts.over_budget_cap:
            raise ChangeRefused("approval_not_configured",
                                _("This change needs approval, but no approver is set up for it; contact support."))
        return None
    steps: list[tuple[int, str]] = []
    for policy in matched:
        for step in policy.steps.all():
            if step.group_id not in {group_id for group_id, _name in steps}:
                steps.append((step.group_id, step.group.name))
    return Hold(facts=facts, reasons=reasons, steps=steps, in_order=any(p.in_order for p in matched),
                decide_within=timedelta(hours=min(p.decide_within_hours for p in matched)), policies=matched)


def _discount_percent(catalog: Decimal, effective: Decimal) -> Decimal:
    return (catalog - effective) / catalog * 100 if catalog > 0 else Decimal(0)


def change_facts_for_quote(*, quote: Quote, subscription: Subscription, contract: Contract | None) -> ChangeFacts:
    """A customer's quoted change as policies see it; the contract (if any) is the one the quote was priced with."""
    discount = Decimal(0)
    if quote.direction != "cancel":
        currency = quote.currency
        catalog = proration.period_amount(price_item(price=quote.to_price, quantity=quote.to_quantity), currency)
        effective = proration.period_amount(price_item(price=quote.to_price, quantity=quote.to_quantity,
                                                       discount_percent=subscription.discount_percent
                                                       if quote.target_discount_percent is None
                                                       else quote.target_discount_percent,
                                                       contract=contract), currency)
        discount = _discount_percent(catalog, effective)
    return ChangeFacts(subject=CUSTOMER_CHANGES, currency=quote.currency, amount_due=quote.amount_due,
                       discount_percent=discount, rule_requires_approval=quote.requires_approval,
                       budget_cap=contract.budget_cap if contract is not None else None)


def approval_hold_for_quote(*, quote: Quote, subscription: Subscription,
                            policies: list[ApprovalPolicy] | None = None) -> Hold | None:
    """Whether accepting `quote` holds it for approval (and for whom); raises approval_not_configured."""
    contract = contract_in_force(subscription_id=subscription.pk, at=quote.created_at)
    return approval_hold_for(facts=change_facts_for_quote(quote=quote, subscription=subscription, contract=contract),
                             policies=policies)


def approval_hold_for_amendment(*, amendment: Amendment, preview: AmendmentPreview, contract: Contract) -> Hold | None:
    facts = ChangeFacts(subject=AMENDMENTS, currency=preview.currency, amount_due=preview.amount_due,
                        discount_percent=preview.discount_percent, price_override=preview.price_override,
                        term_change=preview.term_change, budget_cap=contract.budget_cap)
    return approval_hold_for(facts=facts)


def approval_request_open(*, customer: Customer, hold: Hold, actor: AbstractBaseUser | None, now: datetime,
                          summary: str, plan_change: PlanChange | None = None,
                          amendment: Amendment | None = None) -> ApprovalRequest:
    """Open the request and copy its steps from the policies (call in the holding transaction)."""
    authenticated = actor is not None and actor.is_authenticated
    request = ApprovalRequest.objects.create(
        customer=customer, plan_change=plan_change, amendment=amendment, in_order=hold.in_order,
        reasons=hold.reasons, currency=hold.facts.currency, amount_due=hold.facts.amount_due, summary=summary[:300],
        requested_by=actor if authenticated else None,
        requested_by_label=actor.get_username() if authenticated else "system", created_at=now,
        expires_at=now + hold.decide_within,
    )
    ApprovalStep.objects.bulk_create([
        ApprovalStep(request=request, position=position, group_id=group_id, group_name=name)
        for position, (group_id, name) in enumerate(hold.steps, start=1)
    ])
    audit_event_record(actor=actor, action="approval.requested", target=request, now=now, customer=customer,
                       reason_code=hold.reasons[0]["trigger"], after={"reasons": hold.reasons,
                                                                     "steps": [name for _id, name in hold.steps],
                                                                     "in_order": hold.in_order},
                       message=summary)
    return request


def plan_change_summary(change: PlanChange) -> str:
    if change.direction == "cancel":
        what = f"cancel {change.from_price.plan} × {change.from_quantity}"
    else:
        what = f"{change.from_price.plan} × {change.from_quantity} → {change.to_price.plan} × {change.to_quantity}"
    return f"Customer change: {what}, {format_amount(change.amount_due, change.currency)} {change.currency} due"


# --- deciding ----------------------------------------------------------------------------------------------------


def _lock_request(request_id: int) -> tuple[Customer, Subscription, Amendment | None, ApprovalRequest]:
    """Lock customer → subscription → (contract → amendment) → request, the order every writer follows."""
    row = ApprovalRequest.objects.select_related("plan_change", "amendment__contract").get(pk=request_id)
    amendment = None
    if row.amendment_id is not None:
        customer, subscription, _contract, amendment = _lock_amendment(row.amendment_id)
    else:
        customer, subscription, _none = _lock(row.customer_id, row.plan_change.subscription_id)
    request = ApprovalRequest.objects.select_for_update(of=("self",)).get(pk=request_id)
    return customer, subscription, amendment, request


def approval_step_refusal(*, request: ApprovalRequest, steps: list[ApprovalStep], step: ApprovalStep,
                          user: AbstractBaseUser, now: datetime, drafter_id: int | None = None) -> ApprovalRefused | None:
    """Why `user` may not decide `step` now (None: they may). The queue ("waiting for me") and the decision itself
    both ask this, so what the queue offers is exactly what the decision accepts."""
    if request.status != ApprovalRequest.Status.PENDING:
        return ApprovalRefused("approval_not_pending", _("This request is %(status)s already.")
                               % {"status": request.get_status_display().lower()})
    if now >= request.expires_at:
        return ApprovalRefused("approval_expired", _("This request was not decided in time and has expired."))
    if step.status != ApprovalStep.Status.PENDING:
        return ApprovalRefused("step_decided", _("Step %(position)s (%(role)s) is decided already.")
                               % {"position": step.position, "role": step.group_name})
    if user.pk is not None and user.pk in (request.requested_by_id, drafter_id):
        return ApprovalRefused("own_request", _("You asked for this change: someone else must approve it."))
    if any(other.decided_by_id == user.pk for other in steps if other.pk != step.pk):
        return ApprovalRefused("one_step_per_person", _("You decided another step of this request already: a "
                                                        "different person must decide this one."))
    if not (user.is_active and user.is_staff and user.has_perm("billing.decide_approvalrequest")):
        return ApprovalRefused("permission_required", _("Deciding approval requests needs the permission “Can "
                                                        "approve or reject approval requests”."))
    if not user.groups.filter(pk=step.group_id).exists():
        return ApprovalRefused("not_in_role", _("Step %(position)s is for %(role)s, and you are not one of them.")
                               % {"position": step.position, "role": step.group_name})
    if request.in_order:
        earlier = next((other for other in steps if other.position < step.position
                        and other.status != ApprovalStep.Status.APPROVED), None)
        if earlier is not None:
            return ApprovalRefused("step_out_of_order", _("Steps are decided in order: step %(position)s "
                                                          "(%(role)s) comes first.")
                                   % {"position": earlier.position, "role": earlier.group_name})
    return None


def approval_request_decide(*, request_id: int, step_id: int, actor: AbstractBaseUser, approve: bool, comment: str,
                            now: datetime) -> ApprovalRequest:
    """Approve or reject one step. A rejection (with its mandatory comment) rejects the request; the last
    approval approves it and the change proceeds. Raises ApprovalRefused (separation of duties) and changes
    nothing then."""
    comment = comment.strip()
    with transaction.atomic():
        customer, subscription, amendment, request = _lock_request(request_id)
        steps = list(request.steps.select_for_update().order_by("position"))
        step = next((s for s in steps if s.pk == step_id), None)
        if step is None:
            raise ApprovalRefused("no_such_step", _("This request has no such step."), status=404)
        refusal = approval_step_refusal(request=request, steps=steps, step=step, user=actor, now=now,
                                        drafter_id=amendment.created_by_id if amendment is not None else None)
        if refusal is not None:
            raise refusal
        if not approve and not comment:
            raise ApprovalRefused("comment_required", _("Say why you reject it: the requester and the customer's "
                                                        "billing contact read this comment."), status=422)
        step.status = ApprovalStep.Status.APPROVED if approve else ApprovalStep.Status.REJECTED
        step.decided_by = actor
        step.decided_at = now
        step.comment = comment
        step.save()
        audit_event_record(actor=actor, action="approval.step_approved" if approve else "approval.step_rejected",
                           target=request, now=now, customer=customer, reason_code=f"step_{step.position}",
                           after={"step": step.position, "role": step.group_name, "status": step.status},
                           message=comment)
        if not approve:
            _request_close(request=request, status=ApprovalRequest.Status.REJECTED, customer=customer,
                           subscription=subscription, amendment=amendment, actor=actor, now=now, comment=comment)
        elif all(s.status == ApprovalStep.Status.APPROVED for s in steps):
            _request_close(request=request, status=ApprovalRequest.Status.APPROVED, customer=customer,
                           subscription=subscription, amendment=amendment, actor=actor, now=now)
    return request


def _request_close(*, request: ApprovalRequest, status: str, customer: Customer, subscription: Subscription,
                   amendment: Amendment | None, actor: AbstractBaseUser | None, now: datetime, comment: str = "") -> None:
    """Decide the request and its subject (locks held): approved → the change proceeds; rejected or expired →
    it is closed with the reason; the requester and the customer's billing contact are emailed."""
    request.status = status
    request.decided_at = now
    request.save(update_fields=["status", "decided_at"])
    approved = status == ApprovalRequest.Status.APPROVED
    audit_event_record(actor=actor, action=f"approval.{status}", target=request, now=now, customer=customer,
                       reason_code=status, message=comment or request.summary)
    _notify_decision(request=request, customer=customer, amendment=amendment, now=now, comment=comment)
    if amendment is not None:
        before = amendment_snapshot(amendment)
        if approved:
            amendment.status = Amendment.Status.APPROVED
        else:
            amendment.status = Amendment.Status.REJECTED if status == "rejected" else Amendment.Status.EXPIRED
            amendment.failure_code = f"approval_{status}"
            amendment.failure_message = comment[:300]
            amendment.closed_at = now
        amendment.save()
        audit_event_record(actor=actor, action=f"amendment.{amendment.status}", target=amendment, now=now,
                           customer=customer, reason_code=amendment.reason_code, before=before,
                           after=amendment_snapshot(amendment))
        if approved:
            contract = amendment.contract
            amendment_apply_locked(amendment=amendment, contract=contract, customer=customer,
                                   subscription=subscription, actor=actor, now=now)
        return
    change = PlanChange.objects.select_for_update().get(pk=request.plan_change_id)
    if change.status != PlanChange.Status.PENDING_APPROVAL:
        return
    if approved:
        audit_event_record(actor=actor, action="plan_change.approved", target=change, now=now, customer=customer,
                           reason_code=change.reason_code, after=_change_snapshot(change))
        # robust: a broker that is down must not undo the decision; the approvals sweep dispatches it later.
        transaction.on_commit(lambda: _enqueue_proceed(change.pk), robust=True)
        return
    code = "approval_rejected" if status == ApprovalRequest.Status.REJECTED else "approval_expired"
    message = f"Not approved: {comment}" if comment else "Not decided in time."
    _fail_change(change=change, customer=customer, code=code, message=message[:300], now=now)


def _enqueue_proceed(plan_change_id: int) -> None:
    from billing.tasks import proceed_approved_change

    proceed_approved_change.delay(plan_change_id)


def approval_requests_expire(*, now: datetime) -> int:
    """Beat: requests not decided in time expire; their change is closed and everyone is told. Idempotent."""
    expired = 0
    ids = list(ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING, expires_at__lte=now)
               .order_by("expires_at", "pk").values_list("pk", flat=True)[:500])
    for request_id in ids:
        try:
            with transaction.atomic():
                customer, subscription, amendment, request = _lock_request(request_id)
                if request.status != ApprovalRequest.Status.PENDING or request.expires_at > now:
                    continue
                _request_close(request=request, status=ApprovalRequest.Status.EXPIRED, customer=customer,
                               subscription=subscription, amendment=amendment, actor=None, now=now)
                expired += 1
        except Exception:
            logger.exception("expiring approval request %s failed", request_id)
    return expired


# --- a held customer change, once approved -------------------------------------------------------------------------


def _held_change_failure(*, change: PlanChange, subscription: Subscription, customer: Customer,
                         now: datetime) -> tuple[str, str] | None:
    """Why an approved held change can no longer be made as quoted (None: it can)."""
    quote = change.quote
    if subscription.status == Subscription.Status.PAST_DUE:
        return "invoice_unpaid", "A renewal invoice of the subscription is unpaid."
    if subscription.status not in (Subscription.Status.ACTIVE, Subscription.Status.TRIALING):
        return "subscription_not_active", f"The subscription is {subscription.get_status_display().lower()}."
    if quote is not None and subscription.version != quote.subscription_version:
        return "subscription_changed", "The subscription changed while the change waited for approval."
    if now >= subscription.current_period_end or (change.timing == Timing.NOW and now >= change.new_period_end):
        return "period_ended", "The billing period the change was priced for has ended."
    if change.timing == Timing.NOW and change.lines and legal_entity_default() is None:
        return "no_legal_entity", "No default legal entity is configured to issue invoices."
    if quote is not None:
        decision = tax_decision_for(customer=customer, on=billing_date(customer=customer, moment=quote.created_at))
        if (decision.rate, decision.reverse_charge) != (quote.tax_rate, quote.reverse_charge):
            return "tax_changed", "The tax that applies changed while the change waited for approval."
        if customer_balance(customer=customer, currency=quote.currency) != quote.balance_before:
            return "balance_changed", "The account balance changed while the change waited for approval."
    return None


def approved_change_proceed(*, plan_change_id: int, now: datetime) -> PlanChange:
    """Complete a held change whose request was approved: charge it and apply it (or schedule it), exactly as
    quoted. Idempotent: a second delivery finds it decided already, or resumes its payment with the same key.
    If the subscription changed meanwhile or the quote's period ended, it fails with that reason and the
    requester and the billing contact are told."""
    change = PlanChange.objects.get(pk=plan_change_id)
    with transaction.atomic():
        customer, subscription, change = _lock(change.customer_id, change.subscription_id, change.pk)
        approved = change.approval_requests.filter(status=ApprovalRequest.Status.APPROVED).exists()
        if not approved:
            return change
        if change.status == PlanChange.Status.PENDING_APPROVAL:
            failure = _held_change_failure(change=change, subscription=subscription, customer=customer, now=now)
            if failure is not None:
                _fail_change(change=change, customer=customer, code=failure[0], message=failure[1], now=now)
                approval_subject_failed_notify(plan_change=change, now=now)
                return change
            if change.timing == Timing.PERIOD_END:
                change.status = PlanChange.Status.SCHEDULED
                change.save(update_fields=["status"])
                _supersede_scheduled(subscription=subscription, keep=change, actor=None, now=now)
                audit_event_record(actor=None, action="plan_change.scheduled", target=change, now=now,
                                   customer=customer, reason_code=change.reason_code, after=_change_snapshot(change),
                                   message=f"Approved; scheduled for {change.effective_at.isoformat()}")
                return change
            change.status = PlanChange.Status.PENDING
            try:
                with transaction.atomic():
                    change.save(update_fields=["status"])
            except IntegrityError:  # another change of this customer waits for its payment: try again later
                raise ChangeConflict("change_in_progress", "Another change of this customer is under way.") from None
            if change.amount_due == 0:
                _apply(change=change, customer=customer, subscription=subscription, actor=None, now=now)
                return change
            audit_event_record(actor=None, action="plan_change.requested", target=change, now=now, customer=customer,
                               reason_code=change.reason_code, after=_change_snapshot(change),
                               message="Approved: charging the saved payment method")
        elif change.status != PlanChange.Status.PENDING:
            return change
    try:
        change = plan_change_collect_payment(plan_change=change, now=now)
    except ChangeConflict:  # the outcome is unknown: the reconciler settles it with the same key
        logger.warning("payment of approved change %s has an unknown outcome", change.pk)
        return PlanChange.objects.get(pk=change.pk)
    if change.status in (PlanChange.Status.FAILED, PlanChange.Status.REQUIRES_ACTION):
        with transaction.atomic():
            approval_subject_failed_notify(plan_change=change, now=now)
    return change


def approved_changes_dispatch(*, now: datetime, older_than: timedelta = timedelta(minutes=1)) -> int:
    """Catch-up (beat): approved held changes still waiting a minute after their decision (the broker was down
    when it committed, say) go to the workers again."""
    ids = list(PlanChange.objects.filter(
        status=PlanChange.Status.PENDING_APPROVAL, approval_requests__status=ApprovalRequest.Status.APPROVED,
        approval_requests__decided_at__lte=now - older_than).values_list("pk", flat=True).distinct()[:500])
    for plan_change_id in ids:
        _enqueue_proceed(plan_change_id)
    return len(ids)


# --- emails ------------------------------------------------------------------------------------------------------


def _subject_context(*, customer: Customer, plan_change: PlanChange | None = None,
                     amendment: Amendment | None = None) -> dict[str, Any]:
    """Plain values the emails put in the reader's words (the templates translate; nothing English is stored)."""
    if amendment is not None:
        contract = amendment.contract
        return {
            "subject_kind": "amendment", "amendment_id": amendment.pk, "amendment_kind": amendment.kind,
            "contract_number": contract.number, "seats": amendment.seats,
            "to_plan": str(amendment.to_price.plan) if amendment.to_price_id else "",
            "unit_amount": str(amendment.unit_amount) if amendment.unit_amount is not None else "",
            "extend_periods": amendment.extend_periods, "effective_at": amendment.effective_at.isoformat(),
            "amount": str(amendment.amount_due if amendment.amount_due is not None else 0),
            "currency": amendment.currency or contract.currency, "timezone": customer.timezone,
            "url": absolute_url(reverse("portal:overview", args=[customer.pk])),
            "staff_url": absolute_url(reverse("admin:billing_amendment_change", args=[amendment.pk])),
        }
    change = plan_change
    return {
        "subject_kind": "plan_change", "plan_change_id": change.pk, "direction": change.direction,
        "from_plan": str(change.from_price.plan), "from_quantity": change.from_quantity,
        "to_plan": str(change.to_price.plan), "to_quantity": change.to_quantity,
        "amount": str(change.amount_due), "currency": change.currency, "timezone": customer.timezone,
        "effective_at": change.effective_at.isoformat(),
        "url": absolute_url(reverse("portal:change", args=[customer.pk, change.pk])),
        "staff_url": absolute_url(reverse("admin:billing_planchange_change", args=[change.pk])),
    }


def _recipients(*, customer: Customer, requester: AbstractBaseUser | None) -> list[tuple[str, str, bool]]:
    """(address, language, is the requester): the billing contact, and the requester when someone else. A
    requester who belongs to the customer reads the customer's language; staff read the site's."""
    recipients = [(customer.email, customer.language or "en", False)]
    if requester is not None and requester.email and requester.email.lower() != customer.email.lower():
        member = Membership.objects.filter(customer=customer, user=requester).exists()
        language = (customer.language or "en") if member else settings.LANGUAGE_CODE
        recipients.append((requester.email, language, True))
    return recipients


def _queue_for_everyone(*, customer: Customer, requester, kind: str, key: str, context: dict, now: datetime) -> None:
    for address, language, is_requester in _recipients(customer=customer, requester=requester):
        staff = is_requester and requester.is_staff
        notification_queue(customer=customer, kind=kind, key=f"{key}-requester" if is_requester else key,
                           to_email=address, language=language, now=now,
                           context={**context, "for_requester": is_requester,
                                    "url": context["staff_url"] if staff else context["url"]})


def _notify_decision(*, request: ApprovalRequest, customer: Customer, amendment: Amendment | None, now: datetime,
                     comment: str) -> None:
    plan_change = None if amendment is not None else PlanChange.objects.select_related(
        "from_price__plan__product", "to_price__plan__product").get(pk=request.plan_change_id)
    context = {**_subject_context(customer=customer, plan_change=plan_change, amendment=amendment),
               "decision": request.status, "comment": comment}
    _queue_for_everyone(customer=customer, requester=request.requested_by, kind="approval_decided",
                        key=f"approval-{request.pk}-{request.status}", context=context, now=now)


def approval_subject_failed_notify(*, now: datetime, plan_change: PlanChange | None = None,
                                   amendment: Amendment | None = None) -> None:
    """An approved change could not be made (or its payment needs the customer): tell the requester and the
    billing contact why (in the caller's transaction)."""
    if amendment is not None:
        customer = amendment.contract.customer
        request = amendment.approval_requests.order_by("-pk").first()
        requester = request.requested_by if request is not None else amendment.submitted_by
        code, message, key = amendment.failure_code, amendment.failure_message, f"amendment-{amendment.pk}-failed"
    else:
        customer = plan_change.customer
        request = plan_change.approval_requests.order_by("-pk").first()
        requester = request.requested_by if request is not None else plan_change.created_by
        code, message = plan_change.failure_code, plan_change.failure_message
        key = f"plan-change-{plan_change.pk}-{plan_change.status}-after-approval"
    context = {**_subject_context(customer=customer, plan_change=plan_change, amendment=amendment),
               "failure_code": code, "failure_message": message,
               "needs_action": plan_change is not None and plan_change.status == PlanChange.Status.REQUIRES_ACTION}
    _queue_for_everyone(customer=customer, requester=requester, kind="approved_change_failed", key=key,
                        context=context, now=now)
