"""The exit flow over the REST API: the same steps as the portal, with the billing API's auth, throttling and error
format. Start a survey (the offers that fit come back with their exact effects), accept an offer, or decline them
and get the downgrade or cancellation quote, which is accepted like any quote (POST /api/quotes/{id}/accept/).
"""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.apis import ERROR, _require_billing_role, subscription_or_404
from billing.errors import BillingError
from billing.models import Price
from billing.serializers import PlanChangeSerializer, QuoteSerializer, SubscriptionSerializer, quote_json
from retention.models import ExitReason, ExitSurvey, OfferPresentation
from retention.selectors.exit_flow import exit_reason_list, offer_presentation_list
from retention.services.exit_flow import (
    exit_survey_continue,
    exit_survey_start,
    subscription_reactivate,
    subscription_resume,
)
from retention.services.offers import offer_accept, offer_present


class ExitReasonSerializer(serializers.ModelSerializer):
    class Meta:
        model = ExitReason
        fields = ["code", "label", "asks_details"]


class OfferPresentationSerializer(serializers.ModelSerializer):
    kind = serializers.CharField(source="offer.kind")
    headline = serializers.CharField(source="offer.headline")
    effect = serializers.JSONField(help_text="The exact effect shown: amounts as strings with the currency's digits "
                                             "(pay, instead_of, saving_*, then_pay), instants in ISO 8601.")

    class Meta:
        model = OfferPresentation
        fields = ["id", "kind", "headline", "status", "currency", "effect", "shown_at", "decided_at"]


class ExitSurveySerializer(serializers.ModelSerializer):
    reason = serializers.CharField(source="reason.code")
    offers = serializers.SerializerMethodField()

    class Meta:
        model = ExitSurvey
        fields = ["id", "subscription", "flow", "reason", "details", "target_price", "target_quantity", "quote",
                  "plan_change", "created_at", "offers"]

    def get_offers(self, survey: ExitSurvey) -> list[dict]:
        return OfferPresentationSerializer(offer_presentation_list(survey=survey), many=True).data


def _survey_for_billing(request: Request, survey_id: int) -> ExitSurvey:
    survey = (ExitSurvey.objects.select_related("reason", "subscription__price__plan__product", "target_price__plan")
              .filter(pk=survey_id, customer__memberships__user=request.user).first())
    if survey is None:
        raise NotFound()
    _require_billing_role(request, survey.customer_id)
    return survey


class ExitReasonListApi(APIView):
    @extend_schema(summary="List the exit survey's reasons", responses=ExitReasonSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(ExitReasonSerializer(exit_reason_list(), many=True).data)


class ExitSurveyCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        flow = serializers.ChoiceField(choices=ExitSurvey.Flow.values)
        reason = serializers.CharField(max_length=50, help_text="An active reason's code (GET /api/exit-reasons/).")
        details = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
        price = serializers.IntegerField(required=False, help_text="Downgrade: the lower plan's price id.")
        quantity = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False,
                                            help_text="Downgrade: seats (default: as now).")

    @extend_schema(
        summary="Start a downgrade or cancellation: the exit survey, answered with the offers that fit",
        description="Records the reason, then shows (and records as shown) the retention offers that fit, each with "
        "its exact effect. Accept one (POST /api/offers/{id}/accept/) or decline them all and get the downgrade or "
        "cancellation quote (POST /api/exit-surveys/{id}/decline/).",
        request=InputSerializer, responses={201: ExitSurveySerializer, 400: ERROR, 403: ERROR, 404: ERROR, 409: ERROR,
                                            422: ERROR},
    )
    def post(self, request: Request, subscription_id: int) -> Response:
        subscription = subscription_or_404(request, subscription_id, billing=True)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        target = None
        if values["flow"] == ExitSurvey.Flow.DOWNGRADE and "price" in values:
            target = Price.objects.select_related("plan__product").filter(pk=values["price"], is_active=True).first()
            if target is None:
                raise BillingError("price_not_found", f"There is no price {values['price']}.", status=422)
        now = timezone.now()
        survey = exit_survey_start(subscription=subscription, flow=values["flow"], reason_code=values["reason"],
                                   details=values["details"], actor=request.user, now=now, target_price=target,
                                   target_quantity=values.get("quantity"))
        offer_present(survey=survey, now=now)
        return Response(ExitSurveySerializer(survey).data, status=status.HTTP_201_CREATED)


class ExitSurveyDetailApi(APIView):
    @extend_schema(summary="Get an exit survey with its offers", responses={200: ExitSurveySerializer, 404: ERROR})
    def get(self, request: Request, survey_id: int) -> Response:
        return Response(ExitSurveySerializer(_survey_for_billing(request, survey_id)).data)


class ExitSurveyDeclineApi(APIView):
    @extend_schema(
        summary="Decline the offers and quote the downgrade or cancellation",
        description="Every offer still shown is declined; the answer is the quote to accept as usual "
        "(POST /api/quotes/{id}/accept/ with an Idempotency-Key). Calling again within the quote's life returns the "
        "same quote.",
        request=None, responses={201: QuoteSerializer, 403: ERROR, 404: ERROR, 409: ERROR, 422: ERROR},
    )
    def post(self, request: Request, survey_id: int) -> Response:
        survey = _survey_for_billing(request, survey_id)
        now = timezone.now()
        quote = exit_survey_continue(survey=survey, actor=request.user, now=now)
        return Response(quote_json(quote, now=now), status=status.HTTP_201_CREATED)


class OfferAcceptApi(APIView):
    @extend_schema(
        summary="Accept a retention offer shown in an exit survey",
        description="Applies the offer at once, exactly as its effect says. Idempotent: accepting an accepted offer "
        "answers 200 with it unchanged. 409 when another offer was taken, the offers were declined or the prices "
        "changed since they were shown; 422 when the offer no longer applies.",
        request=None, responses={200: OfferPresentationSerializer, 403: ERROR, 404: ERROR, 409: ERROR, 422: ERROR},
    )
    def post(self, request: Request, presentation_id: int) -> Response:
        presentation = (OfferPresentation.objects.select_related("offer", "survey")
                        .filter(pk=presentation_id, customer__memberships__user=request.user).first())
        if presentation is None:
            raise NotFound()
        _require_billing_role(request, presentation.customer_id)
        presentation = offer_accept(presentation=presentation, actor=request.user, now=timezone.now())
        return Response(OfferPresentationSerializer(presentation).data)


class SubscriptionReactivateApi(APIView):
    @extend_schema(summary="Keep a subscription: withdraw its scheduled cancellation (or downgrade)", request=None,
                   responses={200: PlanChangeSerializer, 403: ERROR, 404: ERROR, 409: ERROR})
    def post(self, request: Request, subscription_id: int) -> Response:
        subscription = subscription_or_404(request, subscription_id, billing=True)
        change = subscription_reactivate(subscription=subscription, actor=request.user, now=timezone.now())
        return Response(PlanChangeSerializer(change).data)


class SubscriptionResumeApi(APIView):
    @extend_schema(summary="Resume a paused subscription now (billing starts again today)", request=None,
                   responses={200: SubscriptionSerializer, 403: ERROR, 404: ERROR, 409: ERROR})
    def post(self, request: Request, subscription_id: int) -> Response:
        subscription = subscription_or_404(request, subscription_id, billing=True)
        subscription = subscription_resume(subscription=subscription, actor=request.user, now=timezone.now())
        return Response(SubscriptionSerializer(subscription).data)

