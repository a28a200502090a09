from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from billing import webhooks as billing_webhooks
from billing.views import local_gateway_authenticate
from portal import views as portal_views
from portal.forms import RateLimitedAdminLoginForm

admin.site.login_form = RateLimitedAdminLoginForm
admin.site.site_header = "Crossgrade back office"
admin.site.site_title = "Crossgrade"
admin.site.index_title = "Catalog, customers and plan changes"

urlpatterns = [
    path("", include("portal.urls")),
    path("healthz", portal_views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/", include("billing.urls")),
    path("api/", include("retention.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("gateway/local/authenticate/<str:reference>/", local_gateway_authenticate,
         name="local-gateway-authenticate"),
    path("webhooks/stripe/", billing_webhooks.stripe_webhook, name="stripe-webhook"),
    path("i18n/", include("django.conf.urls.i18n")),
]

handler403 = "portal.views.permission_denied"
handler404 = "portal.views.not_found"
handler500 = "portal.views.server_error"
