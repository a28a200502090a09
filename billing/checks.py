from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def secret_key_is_not_the_local_one(app_configs, **kwargs):
    if settings.SECRET_KEY == settings.INSECURE_LOCAL_SECRET_KEY:
        return [Error("SECRET_KEY is the public local key.", hint="Set the SECRET_KEY environment variable.",
                      id="crossgrade.E001")]
    return []
