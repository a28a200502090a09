"""Project-wide test fixtures. Tests needing PostgreSQL, Redis or Chromium skip with a reason when absent."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection


@pytest.fixture(autouse=True)
def _isolated_cache_and_eager_tasks(settings):
    from django.core.cache import cache

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed, tests only

    from config.celery import app

    cache.clear()
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    cache.clear()


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


requires_postgres = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="needs PostgreSQL: set DATABASE_URL=postgres://… (.ci/run does)",
)
requires_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis: set REDIS_URL=redis://… (.ci/run does)")
