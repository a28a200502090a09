from __future__ import annotations

from datetime import datetime

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.selectors import membership_get
from entitlements.selectors import entitlements_for_customer


class _StoredDateTime(serializers.DateTimeField):
    """An instant the (cached) entitlements keep as ISO 8601 text, rendered like every other instant of the API."""

    def to_representation(self, value: datetime | str | None) -> str | None:
        return super().to_representation(parse_datetime(value) if isinstance(value, str) else value)


class EntitlementSerializer(serializers.Serializer):
    feature = serializers.CharField()
    name = serializers.CharField()
    kind = serializers.CharField()
    enabled = serializers.BooleanField()
    limit = serializers.IntegerField(allow_null=True, help_text="null: unlimited, or not a limit")
    unit = serializers.CharField()
    sources = serializers.ListField(
        child=serializers.CharField(),
        help_text="Where it comes from: 'plan:<product>/<plan>' for a subscription, 'trial:<product>/<plan>' for a "
                  "trial of a higher tier (gone at the trial's end)")
    used = serializers.IntegerField(allow_null=True, help_text="Usage reported against the limit; null: not reported")
    over_limit = serializers.BooleanField(help_text="Usage is above the limit (after a downgrade or a trial's end)")
    read_only = serializers.BooleanField(
        help_text="Nothing is deleted: what is above the limit (or everything of a frozen feature) stays readable "
                  "but cannot grow or be edited until usage is brought under the limit or the plan is upgraded (or "
                  "the pause ends)")
    frozen = serializers.BooleanField(
        help_text="Granted only by a subscription that is paused now: the data is kept and readable, nothing new may "
                  "be added (read_only) until frozen_until")
    frozen_until = _StoredDateTime(
        allow_null=True, help_text="When the pause ends and the feature is live again (null: not frozen); earlier if "
                                   "the customer resumes")


class CustomerEntitlementsApi(APIView):
    @extend_schema(summary="What this account may use right now", responses=EntitlementSerializer(many=True))
    def get(self, request: Request, customer_id: int) -> Response:
        membership = membership_get(user=request.user, customer_id=customer_id)
        if membership is None:
            raise NotFound()
        return Response(EntitlementSerializer(entitlements_for_customer(customer=membership.customer), many=True).data)
