import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from django.conf import settings  # noqa: E402 - after the application set settings up

if settings.SECRET_KEY == settings.INSECURE_LOCAL_SECRET_KEY and not settings.DEBUG:
    raise ImproperlyConfigured("Set SECRET_KEY: the WSGI server never runs with the public local key.")
