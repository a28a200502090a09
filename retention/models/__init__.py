from retention.models.offers import ExitReason, ExitSurvey, OfferPresentation, RetentionOffer

__all__ = ["ExitReason", "ExitSurvey", "OfferPresentation", "RetentionOffer"]
