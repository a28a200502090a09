"""Retention admin: each area registers its models in its own module, imported here."""

from billing import admin_usage  # noqa: F401  (feature usage: what is over a limit and read-only)
from retention import (
    admin_renewal_offers,  # noqa: F401  (renewal-window annual offers)
    admin_trials,  # noqa: F401  (trials)
    admin_winback,  # noqa: F401  (win-back campaigns, records and the staff report)
)
