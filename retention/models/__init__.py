from retention.models.offers import ExitReason, ExitSurvey, OfferPresentation, RetentionOffer
from retention.models.winback import EmailOptOut, WinBackCampaign, WinBackEnrolment, WinBackSend, WinBackStep

__all__ = ["EmailOptOut", "ExitReason", "ExitSurvey", "OfferPresentation", "RetentionOffer", "WinBackCampaign",
           "WinBackEnrolment", "WinBackSend", "WinBackStep"]
