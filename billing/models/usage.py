"""Usage that products report against a numeric limit (storage in GB, API calls this month …).

Seats are reported on the subscription (`seats_in_use`); everything else here, one row per customer and feature.
Usage is never cut to a limit: above it, the excess is read-only (entitlements say `over_limit`, `read_only`).
"""

from __future__ import annotations

from django.db import models

from billing.models.catalog import Feature
from billing.models.customers import Customer


class FeatureUsage(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="feature_usage")
    feature = models.ForeignKey(Feature, on_delete=models.PROTECT, related_name="+")
    used = models.BigIntegerField(help_text="How much the account uses now, in the feature's unit.")
    reported_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "feature usage"
        constraints = [models.UniqueConstraint(fields=["customer", "feature"], name="feature_usage_once")]

    def __str__(self) -> str:
        return f"{self.customer} · {self.feature}: {self.used}"
