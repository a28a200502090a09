"""Retention admin: each area registers its models from its own module."""

from retention import admin_exitflow  # noqa: F401
