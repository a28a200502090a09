"""Renewal offers in the REST API: what a subscription is offered now, and a quote for it (accepted through
POST /api/quotes/<id>/accept/ like any quote). Members may read; only owners and billing admins may quote."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.apis import ERROR, subscription_or_404
from billing.money import format_amount
from billing.serializers import QuoteSerializer, quote_json
from retention.selectors.renewal_offers import (
    Figures,
    RenewalOfferView,
    renewal_offer_for,
    renewal_offer_get,
    renewal_offer_reason_text,
)
from retention.services.renewal_offers import renewal_offer_quote_create

_FIGURES = inline_serializer("RenewalOfferFigures", {
    "months_total": serializers.CharField(help_text="months × the monthly period amount"),
    "period_amount": serializers.CharField(help_text="one period of the offered interval"),
    "saving": serializers.CharField(), "saving_percent": serializers.CharField(help_text="one decimal, e.g. '16.7'"),
})
_PAIR = inline_serializer("RenewalOfferNetGross", {
    "net": _FIGURES, "gross": _FIGURES,
})
RENEWAL_OFFER = inline_serializer("RenewalOffer", {
    "available": serializers.BooleanField(),
    "reason": serializers.CharField(help_text="Why there is no offer (stable code), empty when available."),
    "detail": serializers.CharField(help_text="The reason in words, empty when available."),
    "offer": inline_serializer("RenewalOfferTerms", {
        "id": serializers.IntegerField(), "name": serializers.CharField(), "headline": serializers.CharField(),
        "target_interval": serializers.CharField(),
        "discount_percent": serializers.CharField(allow_null=True, help_text="On the first period only; null: none."),
    }, allow_null=True),
    "subscription": serializers.IntegerField(),
    "window_opens_at": serializers.DateTimeField(required=False), "renews_at": serializers.DateTimeField(required=False),
    "currency": serializers.CharField(required=False), "target_price": serializers.IntegerField(required=False),
    "months": serializers.IntegerField(required=False),
    "monthly": inline_serializer("RenewalOfferMonthly", {"net": serializers.CharField(),
                                                          "gross": serializers.CharField()}, required=False),
    "every_period": _PAIR,
    "first_period": inline_serializer("RenewalOfferFirstPeriod", {"net": _FIGURES, "gross": _FIGURES},
                                      allow_null=True, required=False),
    "today": inline_serializer("RenewalOfferToday", {
        "subtotal": serializers.CharField(), "tax": serializers.CharField(), "total": serializers.CharField(),
        "amount_due": serializers.CharField(), "new_period_start": serializers.DateTimeField(),
        "new_period_end": serializers.DateTimeField(), "next_period_amount": serializers.CharField(),
    }, required=False),
})


def _figures(figures: Figures, currency: str) -> dict:
    return {"months_total": format_amount(figures.months_total, currency),
            "period_amount": format_amount(figures.period_amount, currency),
            "saving": format_amount(figures.saving, currency), "saving_percent": str(figures.saving_percent)}


def renewal_offer_json(view: RenewalOfferView) -> dict:
    cur, q, offer = view.currency, view.quote, view.offer
    return {
        "available": True, "reason": "", "detail": "",
        "offer": {"id": offer.pk, "name": offer.name, "headline": offer.headline,
                  "target_interval": offer.target_interval,
                  "discount_percent": None if view.discount_percent is None else str(view.discount_percent)},
        "subscription": view.subscription.pk, "window_opens_at": view.window_opens_at.isoformat(),
        "renews_at": view.renews_at.isoformat(), "currency": cur, "target_price": view.target_price.pk,
        "months": view.months,
        "monthly": {"net": format_amount(view.monthly_net, cur), "gross": format_amount(view.monthly_gross, cur)},
        "every_period": {"net": _figures(view.net, cur), "gross": _figures(view.gross, cur)},
        "first_period": None if view.first_net is None else {"net": _figures(view.first_net, cur),
                                                              "gross": _figures(view.first_gross, cur)},
        "today": {"subtotal": format_amount(q.subtotal, cur), "tax": format_amount(q.tax, cur),
                  "total": format_amount(q.total, cur), "amount_due": format_amount(q.amount_due, cur),
                  "new_period_start": q.new_period_start.isoformat(), "new_period_end": q.new_period_end.isoformat(),
                  "next_period_amount": format_amount(q.next_period_amount, cur)},
    }


class SubscriptionRenewalOfferApi(APIView):
    @extend_schema(
        summary="Get the renewal offer a monthly subscription sees now",
        description="In the window before a monthly renewal: the longer interval of the same plan, with the saving "
        "net and as paid (tax as the quote computes it), the first period at the offer's discount if any, and what "
        "switching costs today (a quote's amounts; PRORATION.md: anchor reset, unused month credited). Otherwise "
        "`available: false` with a `reason` code and its `detail`.",
        responses={200: RENEWAL_OFFER, 404: ERROR},
    )
    def get(self, request: Request, subscription_id: int) -> Response:
        subscription = subscription_or_404(request, subscription_id)
        view, reason = renewal_offer_get(subscription=subscription, now=timezone.now())
        if view is None:
            return Response({"available": False, "reason": reason, "subscription": subscription.pk, "offer": None,
                             "detail": renewal_offer_reason_text(reason,
                                                                 offer=renewal_offer_for(subscription=subscription))})
        return Response(renewal_offer_json(view))


class SubscriptionRenewalOfferQuoteApi(APIView):
    @extend_schema(
        summary="Quote switching to the renewal offer",
        description="Prices the offer now and stores it as a quote (with the first-period discount, if any); accept "
        "it with POST /api/quotes/{id}/accept/ and an Idempotency-Key. 422 with the reason when there is no offer.",
        request=None, responses={201: QuoteSerializer, 403: ERROR, 404: ERROR, 422: ERROR},
    )
    def post(self, request: Request, subscription_id: int) -> Response:
        subscription = subscription_or_404(request, subscription_id, billing=True)
        now = timezone.now()
        quote = renewal_offer_quote_create(subscription=subscription, actor=request.user, now=now)
        return Response(quote_json(quote, now=now), status=status.HTTP_201_CREATED)
