from django.urls import path

from retention import apis_exit as apis

urlpatterns = [
    path("exit-reasons/", apis.ExitReasonListApi.as_view(), name="api-exit-reasons"),
    path("subscriptions/<int:subscription_id>/exit-surveys/", apis.ExitSurveyCreateApi.as_view(),
         name="api-exit-survey-create"),
    path("subscriptions/<int:subscription_id>/reactivate/", apis.SubscriptionReactivateApi.as_view(),
         name="api-subscription-reactivate"),
    path("subscriptions/<int:subscription_id>/resume/", apis.SubscriptionResumeApi.as_view(),
         name="api-subscription-resume"),
    path("exit-surveys/<int:survey_id>/", apis.ExitSurveyDetailApi.as_view(), name="api-exit-survey"),
    path("exit-surveys/<int:survey_id>/decline/", apis.ExitSurveyDeclineApi.as_view(), name="api-exit-survey-decline"),
    path("offers/<int:presentation_id>/accept/", apis.OfferAcceptApi.as_view(), name="api-offer-accept"),
]
