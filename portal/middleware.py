from __future__ import annotations

from django.utils import timezone


class ResetTimezoneMiddleware:
    """Portal views show dates in the customer's billing timezone; never let it leak into the next request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
