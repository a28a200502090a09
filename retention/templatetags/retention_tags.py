"""Template helpers for the exit flow's pages: the stored effect of an offer keeps instants as ISO 8601 strings."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils.dateparse import parse_datetime

register = template.Library()


@register.filter
def isodate(value: str | None) -> datetime | None:
    """An ISO 8601 instant (an offer's stored effect) as an aware datetime, for the `date` filter."""
    return parse_datetime(value) if value else None
