from retention.models.offers import ExitReason, ExitSurvey, OfferPresentation, RetentionOffer
from retention.models.renewal_offers import RenewalOffer, RenewalOfferDismissal, RenewalOfferQuote
from retention.models.trials import Trial

__all__ = ["ExitReason", "ExitSurvey", "OfferPresentation", "RenewalOffer", "RenewalOfferDismissal",
           "RenewalOfferQuote", "RetentionOffer", "Trial"]
