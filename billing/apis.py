"""The billing REST API: one view per operation, explicit input and output serializers.

A user reaches only the customers they are a member of (others answer 404); quoting and
changing plans needs the owner or billing admin role (others answer 403).
"""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.errors import BillingError
from billing.models import Membership, Plan, PlanChange, Price, Subscription
from billing.selectors import (
    catalog_list,
    customer_list_for_user,
    membership_get,
    plan_change_get_for_user,
    plan_change_list,
    price_get,
    quote_get_for_user,
    subscription_get_for_user,
    subscription_get_with_role,
)
from billing.serializers import (
    CustomerSerializer,
    PlanChangeSerializer,
    ProductSerializer,
    QuoteSerializer,
    SubscriptionSerializer,
    quote_json,
)
from billing.services.idempotency import (
    idempotency_begin,
    idempotency_finish,
    idempotency_release,
    request_fingerprint,
)
from billing.services.plan_changes import plan_change_cancel, plan_change_refresh_payment, quote_accept
from billing.services.quotes import quote_create

ERROR = inline_serializer("Error", {"code": serializers.CharField(), "detail": serializers.CharField()})


def _membership_or_404(request: Request, customer_id: int) -> Membership:
    membership = membership_get(user=request.user, customer_id=customer_id)
    if membership is None:
        raise NotFound()
    return membership


BILLING_ROLE_REQUIRED = "Only the account's owners and billing admins can change plans."


def subscription_or_404(request: Request, subscription_id: int, *, billing: bool = False) -> Subscription:
    """The user's subscription (404 when it is not one of their customers'); `billing`: 403 unless they are an owner
    or billing admin of its customer."""
    found = subscription_get_with_role(user=request.user, subscription_id=subscription_id)
    if found is None:
        raise NotFound()
    subscription, role = found
    if billing and role not in Membership.BILLING_ROLES:
        raise PermissionDenied(BILLING_ROLE_REQUIRED)
    return subscription


def _require_billing_role(request: Request, customer_id: int) -> Membership:
    membership = _membership_or_404(request, customer_id)
    if membership.role not in Membership.BILLING_ROLES:
        raise PermissionDenied(BILLING_ROLE_REQUIRED)
    return membership


class PlanListApi(APIView):
    @extend_schema(
        summary="List products, their plans, prices and features",
        parameters=[OpenApiParameter("currency", str, description="Only prices in this currency"),
                    OpenApiParameter("product", str, description="Only this product code")],
        responses=ProductSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        currency = request.query_params.get("currency") or None
        products = catalog_list(currency=currency.upper() if currency else None,
                                product_code=request.query_params.get("product") or None)
        return Response(ProductSerializer(products, many=True).data)


class CustomerListApi(APIView):
    @extend_schema(summary="List the customers (billing accounts) you are a member of",
                   responses=CustomerSerializer(many=True))
    def get(self, request: Request) -> Response:
        customers = list(customer_list_for_user(user=request.user))
        memberships = {m.customer_id: m for m in Membership.objects.filter(user=request.user)}
        return Response(CustomerSerializer(customers, many=True, context={"memberships": memberships}).data)


class CustomerDetailApi(APIView):
    @extend_schema(summary="Get a customer, with its balances", responses={200: CustomerSerializer, 404: ERROR})
    def get(self, request: Request, customer_id: int) -> Response:
        membership = _membership_or_404(request, customer_id)
        data = CustomerSerializer(membership.customer, context={"memberships": {customer_id: membership}}).data
        return Response(data)


class CustomerSubscriptionListApi(APIView):
    @extend_schema(summary="List a customer's subscriptions", responses=SubscriptionSerializer(many=True))
    def get(self, request: Request, customer_id: int) -> Response:
        membership = _membership_or_404(request, customer_id)
        subscriptions = membership.customer.subscriptions.select_related("price__plan__product")
        return Response(SubscriptionSerializer(subscriptions, many=True).data)


class SubscriptionDetailApi(APIView):
    @extend_schema(summary="Get a subscription", responses={200: SubscriptionSerializer, 404: ERROR})
    def get(self, request: Request, subscription_id: int) -> Response:
        subscription = subscription_get_for_user(user=request.user, subscription_id=subscription_id)
        if subscription is None:
            raise NotFound()
        return Response(SubscriptionSerializer(subscription).data)


class QuoteCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        price = serializers.IntegerField(required=False, help_text="Target price id; or give plan and interval.")
        plan = serializers.IntegerField(required=False, help_text="Target plan id (priced in the subscription's currency).")
        interval = serializers.ChoiceField(choices=["month", "quarter", "year"], required=False)
        quantity = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
        cancel = serializers.BooleanField(default=False, help_text="Quote ending the subscription instead.")

        def validate(self, attrs):
            if attrs["cancel"]:
                return attrs
            if "price" not in attrs and not ("plan" in attrs and "interval" in attrs):
                raise serializers.ValidationError("Give either price, or plan and interval (or cancel: true).")
            if "quantity" not in attrs:
                raise serializers.ValidationError({"quantity": "This field is required."})
            return attrs

    @extend_schema(
        summary="Quote a change of this subscription",
        description="Checks eligibility, then prices the change at this instant per shared/PRORATION.md. "
        "The quote expires after 15 minutes and is valid only for the subscription version it priced.",
        request=InputSerializer,
        responses={201: QuoteSerializer, 403: ERROR, 404: ERROR, 422: ERROR},
    )
    def post(self, request: Request, subscription_id: int) -> Response:
        now = timezone.now()
        subscription = subscription_or_404(request, subscription_id, billing=True)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["cancel"]:
            quote = quote_create(subscription=subscription, to_price=None, quantity=0, now=now, actor=request.user,
                                 cancel=True)
        else:
            to_price = self._target_price(data.validated_data, subscription.price.currency)
            quote = quote_create(subscription=subscription, to_price=to_price,
                                 quantity=data.validated_data["quantity"], now=now, actor=request.user)
        return Response(quote_json(quote, now=now), status=status.HTTP_201_CREATED)

    @staticmethod
    def _target_price(data: dict, currency: str) -> Price:
        if "price" in data:
            price = Price.objects.select_related("plan__product").filter(pk=data["price"]).first()
            if price is None:
                raise BillingError("price_not_found", f"There is no price {data['price']}.", status=422)
            return price
        price = price_get(plan_id=data["plan"], currency=currency, interval=data["interval"])
        if price is None:
            plan = Plan.objects.select_related("product").filter(pk=data["plan"]).first()
            if plan is None:
                raise BillingError("plan_not_found", f"There is no plan {data['plan']}.", status=422)
            raise BillingError("currency_unavailable",
                               f"{plan} is not sold in {currency} billed {data['interval']}ly.", status=422)
        return price


class QuoteDetailApi(APIView):
    @extend_schema(summary="Get a quote", responses={200: QuoteSerializer, 404: ERROR})
    def get(self, request: Request, quote_id: int) -> Response:
        quote = quote_get_for_user(user=request.user, quote_id=quote_id)
        if quote is None:
            raise NotFound()
        return Response(quote_json(quote, now=timezone.now()))


def plan_change_response(change: PlanChange) -> tuple[int, dict]:
    """How an accepted quote's outcome reads over HTTP."""
    body = PlanChangeSerializer(change).data
    if change.status == PlanChange.Status.FAILED:
        return 402, {"code": "payment_declined", "detail": change.failure_message, "plan_change": body}
    if change.status == PlanChange.Status.PENDING_APPROVAL:
        return 202, body  # held for approval: nothing charged yet (docs/contracts.md)
    if change.status == PlanChange.Status.REQUIRES_ACTION:
        return 402, {"code": "payment_requires_action",
                     "detail": "Your bank asks you to confirm this payment; open next_action_url to confirm.",
                     "next_action_url": change.next_action_url, "plan_change": body}
    return 200, body


class QuoteAcceptApi(APIView):
    @extend_schema(
        summary="Accept a quote: pay and apply it, or schedule it",
        description="Requires an `Idempotency-Key` header. The same key replays the stored answer; the same key "
        "with a different request is refused (422 idempotency_key_reused). A declined payment (402 "
        "payment_declined) changes nothing; authentication (402 payment_requires_action) is completed at "
        "next_action_url, then POST /api/plan-changes/{id}/complete/. A change that needs approval answers 202 with "
        "the plan change waiting for approval: nothing is charged until it is approved.",
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=True)],
        request=None,
        responses={200: PlanChangeSerializer, 202: PlanChangeSerializer, 402: ERROR, 403: ERROR, 404: ERROR, 409: ERROR,
                   422: ERROR},
    )
    def post(self, request: Request, quote_id: int) -> Response:
        now = timezone.now()
        quote = quote_get_for_user(user=request.user, quote_id=quote_id)
        if quote is None:
            raise NotFound()
        _require_billing_role(request, quote.customer_id)
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            raise BillingError("idempotency_key_required", "Send an Idempotency-Key header with every accept.",
                               status=400)
        stored = idempotency_begin(user=request.user, key=key,
                                   fingerprint=request_fingerprint("quote_accept", quote_id), now=now)
        if stored is not None:
            return Response(stored.body, status=stored.status, headers={"Idempotent-Replayed": "true"})
        try:
            change = quote_accept(quote=quote, actor=request.user, now=now)
            code, body = plan_change_response(change)
        except BillingError as exc:
            if exc.status >= 500:
                idempotency_release(user=request.user, key=key)
                raise
            code, body = exc.status, exc.as_dict()
        except Exception:
            idempotency_release(user=request.user, key=key)
            raise
        idempotency_finish(user=request.user, key=key, status=code, body=body, now=now)
        return Response(body, status=code)


class SubscriptionChangeListApi(APIView):
    @extend_schema(summary="List a subscription's plan changes", responses=PlanChangeSerializer(many=True))
    def get(self, request: Request, subscription_id: int) -> Response:
        subscription = subscription_get_for_user(user=request.user, subscription_id=subscription_id)
        if subscription is None:
            raise NotFound()
        return Response(PlanChangeSerializer(plan_change_list(subscription=subscription), many=True).data)


class PlanChangeDetailApi(APIView):
    @extend_schema(summary="Get a plan change, with its receipt once applied",
                   responses={200: PlanChangeSerializer, 404: ERROR})
    def get(self, request: Request, plan_change_id: int) -> Response:
        change = plan_change_get_for_user(user=request.user, plan_change_id=plan_change_id)
        if change is None:
            raise NotFound()
        return Response(PlanChangeSerializer(change).data)


class PlanChangeCancelApi(APIView):
    @extend_schema(summary="Cancel a scheduled change (or one waiting for authentication)", request=None,
                   responses={200: PlanChangeSerializer, 403: ERROR, 404: ERROR, 409: ERROR})
    def post(self, request: Request, plan_change_id: int) -> Response:
        change = plan_change_get_for_user(user=request.user, plan_change_id=plan_change_id)
        if change is None:
            raise NotFound()
        _require_billing_role(request, change.customer_id)
        change = plan_change_cancel(plan_change=change, actor=request.user, now=timezone.now())
        return Response(PlanChangeSerializer(change).data)


class PlanChangeCompleteApi(APIView):
    @extend_schema(
        summary="Complete a change after the customer authenticated its payment",
        description="Asks the gateway where the payment stands: succeeded applies the change, declined fails it.",
        request=None, responses={200: PlanChangeSerializer, 402: ERROR, 403: ERROR, 404: ERROR},
    )
    def post(self, request: Request, plan_change_id: int) -> Response:
        change = plan_change_get_for_user(user=request.user, plan_change_id=plan_change_id)
        if change is None:
            raise NotFound()
        _require_billing_role(request, change.customer_id)
        change = plan_change_refresh_payment(plan_change=change, now=timezone.now(), actor=request.user)
        code, body = plan_change_response(change)
        return Response(body, status=code)


