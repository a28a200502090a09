"""Reads for approvals: the approver's queue, a change's request, whether a quote would be held."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef, Q, QuerySet

from billing.errors import ChangeRefused
from billing.models import ApprovalRequest, ApprovalStep, PlanChange, Quote


def approval_requests_waiting_for(*, user: AbstractBaseUser, now: datetime) -> QuerySet[ApprovalRequest]:
    """Requests with a step this user may decide now: the same rules as `approval_step_refusal` (a pending, unexpired
    request; a pending step of one of the user's roles, and its turn when steps go in order; not their own request
    or amendment draft; no other step of it decided by them; the decide permission)."""
    if not (user.is_active and user.is_staff and user.has_perm("billing.decide_approvalrequest")):
        return ApprovalRequest.objects.none()
    earlier_open = (ApprovalStep.objects.filter(request=OuterRef("request"), position__lt=OuterRef("position"))
                    .exclude(status=ApprovalStep.Status.APPROVED))
    decided_by_user = ApprovalStep.objects.filter(request=OuterRef("request"), decided_by=user)
    steps = (ApprovalStep.objects.filter(status=ApprovalStep.Status.PENDING, group__in=user.groups.all(),
                                         request__status=ApprovalRequest.Status.PENDING,
                                         request__expires_at__gt=now)
             .exclude(request__requested_by=user)
             .filter(Q(request__amendment__isnull=True) | ~Q(request__amendment__created_by=user))
             .exclude(Exists(decided_by_user))
             .filter(Q(request__in_order=False) | ~Exists(earlier_open)))
    return ApprovalRequest.objects.filter(pk__in=steps.values("request_id"))


def approval_request_for_change(*, plan_change: PlanChange) -> ApprovalRequest | None:
    """The latest approval request of a customer's change (with its steps), or None."""
    return plan_change.approval_requests.prefetch_related("steps").order_by("-pk").first()


def quote_needs_approval(*, quote: Quote) -> bool:
    """Whether accepting the quote would hold it for approval (the review page says so before the customer
    confirms). A change that needs approval nobody is set up to give says so when it is confirmed."""
    from billing.services.approvals import approval_hold_for_quote

    try:
        return approval_hold_for_quote(quote=quote, subscription=quote.subscription) is not None
    except ChangeRefused:
        return False
