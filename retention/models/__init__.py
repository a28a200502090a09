from retention.models.offers import ExitReason, ExitSurvey, OfferPresentation, RetentionOffer
from retention.models.trials import Trial

__all__ = ["ExitReason", "ExitSurvey", "OfferPresentation", "RetentionOffer", "Trial"]
