"""API rate limit: a fixed window per user (or client address), O(1) cache work per request.

DRF's UserRateThrottle rewrites each user's whole request history on every request, which costs
more than the quote itself at high rates.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle


class FixedWindowThrottle(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        limit, period = SimpleRateThrottle.parse_rate(None, settings.API_RATE_LIMIT)
        user = request.user
        ident = f"u{user.pk}" if user and user.is_authenticated else f"a{self.get_ident(request)}"
        now = time.time()
        window = int(now // period)
        key = f"throttle:{ident}:{window}"
        cache.add(key, 0, period + 1)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, period + 1)
            count = 1
        self._wait = period - (now % period)
        return count <= limit

    def wait(self) -> float:
        return self._wait
