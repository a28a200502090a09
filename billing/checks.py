from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def secret_key_is_not_the_local_one(app_configs, **kwargs):
    if settings.SECRET_KEY == settings.INSECURE_LOCAL_SECRET_KEY:
        return [Error("SECRET_KEY is the public local key.", hint="Set the SECRET_KEY environment variable.",
                      id="crossgrade.E001")]
    return []


@register()
def renewal_retry_schedule_is_valid(app_configs, **kwargs):
    schedule = settings.RENEWAL_RETRY_SCHEDULE
    if not all(isinstance(days, int) and days > 0 for days in schedule):
        return [Error(f"RENEWAL_RETRY_SCHEDULE_DAYS must be whole numbers of days above 0, got {schedule!r}.",
                      hint="e.g. RENEWAL_RETRY_SCHEDULE_DAYS=1,3,5", id="crossgrade.E002")]
    return []
