"""Reads for the exit flow: reasons, a customer's surveys and the offers shown in them."""

from __future__ import annotations

from django.db.models import QuerySet

from billing.models import Customer
from retention.models import ExitReason, ExitSurvey, OfferPresentation


def exit_reason_list() -> QuerySet[ExitReason]:
    """The active reasons, in the order the survey shows them."""
    return ExitReason.objects.filter(is_active=True).order_by("position", "pk")


def exit_survey_get(*, customer: Customer, survey_id: int) -> ExitSurvey | None:
    """One of this customer's surveys (None for anyone else's)."""
    return (ExitSurvey.objects.select_related("reason", "subscription__price__plan__product", "target_price__plan",
                                              "quote", "plan_change")
            .filter(pk=survey_id, customer=customer).first())


def offer_presentation_list(*, survey: ExitSurvey) -> list[OfferPresentation]:
    """The offers shown in this survey, best first (the offers' priority)."""
    return list(survey.presentations.select_related("offer__target_plan", "quote")
                .order_by("offer__priority", "offer__pk"))


def offer_presentation_get(*, customer: Customer, presentation_id: int) -> OfferPresentation | None:
    return (OfferPresentation.objects.select_related("survey__reason", "offer__target_plan", "quote")
            .filter(pk=presentation_id, customer=customer).first())
