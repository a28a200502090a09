from django.contrib.auth import views as auth_views
from django.urls import path

from portal import views

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="portal:login"), name="logout"),
    path("c/<int:customer_id>/", views.overview, name="overview"),
    path("c/<int:customer_id>/billing/", views.history, name="billing"),
    path("c/<int:customer_id>/invoices/<int:invoice_id>.pdf", views.invoice_pdf, name="invoice-pdf"),
    path("c/<int:customer_id>/subscriptions/<int:subscription_id>/plans/", views.plans, name="plans"),
    path("c/<int:customer_id>/subscriptions/<int:subscription_id>/plans/<int:plan_id>/price/", views.plan_price,
         name="plan-price"),
    path("c/<int:customer_id>/subscriptions/<int:subscription_id>/review/", views.review_create,
         name="review-create"),
    path("c/<int:customer_id>/subscriptions/<int:subscription_id>/cancel/", views.cancel_subscription,
         name="cancel"),
    path("c/<int:customer_id>/quotes/<int:quote_id>/", views.review, name="review"),
    path("c/<int:customer_id>/quotes/<int:quote_id>/confirm/", views.confirm, name="confirm"),
    path("c/<int:customer_id>/quotes/<int:quote_id>/return/", views.complete_pending, name="complete-pending"),
    path("c/<int:customer_id>/changes/<int:change_id>/", views.change, name="change"),
    path("c/<int:customer_id>/changes/<int:change_id>/complete/", views.complete, name="complete"),
    path("c/<int:customer_id>/changes/<int:change_id>/cancel/", views.change_cancel, name="change-cancel"),
]
