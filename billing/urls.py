from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token

from billing import apis
from entitlements.apis import CustomerEntitlementsApi
from retention.apis import SubscriptionRenewalOfferApi, SubscriptionRenewalOfferQuoteApi

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="api-token"),
    path("plans/", apis.PlanListApi.as_view(), name="api-plans"),
    path("customers/", apis.CustomerListApi.as_view(), name="api-customers"),
    path("customers/<int:customer_id>/", apis.CustomerDetailApi.as_view(), name="api-customer"),
    path("customers/<int:customer_id>/subscriptions/", apis.CustomerSubscriptionListApi.as_view(),
         name="api-customer-subscriptions"),
    path("customers/<int:customer_id>/entitlements/", CustomerEntitlementsApi.as_view(),
         name="api-customer-entitlements"),
    path("subscriptions/<int:subscription_id>/", apis.SubscriptionDetailApi.as_view(), name="api-subscription"),
    path("subscriptions/<int:subscription_id>/quotes/", apis.QuoteCreateApi.as_view(), name="api-quote-create"),
    path("subscriptions/<int:subscription_id>/changes/", apis.SubscriptionChangeListApi.as_view(),
         name="api-subscription-changes"),
    path("subscriptions/<int:subscription_id>/renewal-offer/", SubscriptionRenewalOfferApi.as_view(),
         name="api-renewal-offer"),
    path("subscriptions/<int:subscription_id>/renewal-offer/quote/", SubscriptionRenewalOfferQuoteApi.as_view(),
         name="api-renewal-offer-quote"),
    path("quotes/<int:quote_id>/", apis.QuoteDetailApi.as_view(), name="api-quote"),
    path("quotes/<int:quote_id>/accept/", apis.QuoteAcceptApi.as_view(), name="api-quote-accept"),
    path("plan-changes/<int:plan_change_id>/", apis.PlanChangeDetailApi.as_view(), name="api-plan-change"),
    path("plan-changes/<int:plan_change_id>/cancel/", apis.PlanChangeCancelApi.as_view(),
         name="api-plan-change-cancel"),
    path("plan-changes/<int:plan_change_id>/complete/", apis.PlanChangeCompleteApi.as_view(),
         name="api-plan-change-complete"),
]
