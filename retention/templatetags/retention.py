from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def by_key(mapping: dict | None, key: Any) -> Any:
    """`trials|by_key:sub.pk`: a dict entry by key (None when absent)."""
    return (mapping or {}).get(key)
