from retention.models.offers import ExitReason, ExitSurvey, OfferPresentation, RecurringCredit, RetentionOffer
from retention.models.renewal_offers import RenewalOffer, RenewalOfferDismissal, RenewalOfferQuote
from retention.models.trials import Trial
from retention.models.winback import EmailOptOut, WinBackCampaign, WinBackEnrolment, WinBackSend, WinBackStep

__all__ = ["EmailOptOut", "ExitReason", "ExitSurvey", "OfferPresentation", "RecurringCredit", "RenewalOffer",
           "RenewalOfferDismissal", "RenewalOfferQuote", "RetentionOffer", "Trial", "WinBackCampaign",
           "WinBackEnrolment", "WinBackSend", "WinBackStep"]
