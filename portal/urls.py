from django.contrib.auth import views as auth_views
from django.urls import path, register_converter

from portal import views, views_renewal_offers, views_trials, views_winback


class IdConverter:
    """A database id: 1 to 18 ASCII digits (fits a 64-bit key; larger numbers are simply not found)."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="portal:login"), name="logout"),
    path("c/<id:customer_id>/", views.overview, name="overview"),
    path("c/<id:customer_id>/billing/", views.history, name="billing"),
    path("c/<id:customer_id>/invoices/<id:invoice_id>.pdf", views.invoice_pdf, name="invoice-pdf"),
    path("c/<id:customer_id>/invoices/<id:invoice_id>/pay/", views.invoice_pay, name="invoice-pay"),
    path("c/<id:customer_id>/invoices/<id:invoice_id>/pay/return/", views.invoice_pay_return,
         name="invoice-pay-return"),
    path("c/<id:customer_id>/subscriptions/<id:subscription_id>/plans/", views.plans, name="plans"),
    path("c/<id:customer_id>/subscriptions/<id:subscription_id>/plans/<id:plan_id>/price/", views.plan_price,
         name="plan-price"),
    path("c/<id:customer_id>/subscriptions/<id:subscription_id>/review/", views.review_create,
         name="review-create"),
    path("c/<id:customer_id>/subscriptions/<id:subscription_id>/cancel/", views.cancel_subscription,
         name="cancel"),
    path("c/<id:customer_id>/subscriptions/<id:subscription_id>/renewal-offer/switch/",
         views_renewal_offers.renewal_offer_switch, name="renewal-offer-switch"),
    path("c/<id:customer_id>/subscriptions/<id:subscription_id>/renewal-offer/not-now/",
         views_renewal_offers.renewal_offer_not_now, name="renewal-offer-not-now"),
    path("c/<id:customer_id>/quotes/<id:quote_id>/", views.review, name="review"),
    path("c/<id:customer_id>/quotes/<id:quote_id>/confirm/", views.confirm, name="confirm"),
    path("c/<id:customer_id>/quotes/<id:quote_id>/return/", views.complete_pending, name="complete-pending"),
    path("c/<id:customer_id>/changes/<id:change_id>/", views.change, name="change"),
    path("c/<id:customer_id>/changes/<id:change_id>/complete/", views.complete, name="complete"),
    path("c/<id:customer_id>/changes/<id:change_id>/cancel/", views.change_cancel, name="change-cancel"),
    path("c/<id:customer_id>/subscriptions/<id:subscription_id>/trial/<id:plan_id>/", views_trials.trial_confirm,
         name="trial-confirm"),
    path("c/<id:customer_id>/trials/<id:trial_id>/opt-in/", views_trials.trial_opt_in, name="trial-opt-in"),
    path("c/<id:customer_id>/trials/<id:trial_id>/end/", views_trials.trial_end_now, name="trial-end"),
    path("winback/offer/<str:token>/", views_winback.winback_offer, name="winback-offer"),
    path("winback/unsubscribe/<str:token>/", views_winback.winback_unsubscribe, name="winback-unsubscribe"),
]
