from billing import admin_usage  # noqa: F401 - feature usage (over-limit, read-only), registered with the trials' work
from retention import admin_trials  # noqa: F401 - trials (registers them)
