"""Crossgrade settings: one module, driven by the environment (django-environ).

Defaults are the quick local run: SQLite under var/, no Redis (a filesystem Celery broker and
a file cache), DEBUG off unless the run command turns it on. Production sets DATABASE_URL,
REDIS_URL, SECRET_KEY, ALLOWED_HOSTS and the security variables (see docs/deploy.md).
"""

from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("CROSSGRADE_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)
INSECURE_LOCAL_SECRET_KEY = "insecure-local-only-key-set-SECRET_KEY-in-production-0123456789"
# Local runs and tests use the public key above; `check --deploy` and config/wsgi.py refuse it.
SECRET_KEY = env.str("SECRET_KEY", default=INSECURE_LOCAL_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "billing",
    "entitlements",
    "retention",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "portal.middleware.ResetTimezoneMiddleware",
    "portal.middleware.HtmxLoginRedirectMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'crossgrade.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: wait for locks, take the write lock up front.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    # Server-side binding lets psycopg prepare statements a connection runs repeatedly (planning once).
    DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = env.bool(
        "DATABASE_SERVER_SIDE_BINDING", default=True)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # Shared by the web server and the worker of the local run; never per-process memory.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# Sessions read through the cache (Redis in production), written through to the database.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:home"
LOGOUT_REDIRECT_URL = "portal:login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("de", "Deutsch")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(VAR_DIR / "media")}},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env.bool("STATIC_MANIFEST", default=False)  # production: 1, after collectstatic
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# Security: production values come from the environment (docs/deploy.md).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "billing.api_errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["billing.api_throttle.FixedWindowThrottle"],
}
API_RATE_LIMIT = env.str("API_RATE_LIMIT", default="6000/minute")
SPECTACULAR_SETTINGS = {
    "TITLE": "Crossgrade API",
    "DESCRIPTION": "Quotes and plan changes with exact proration (shared/PRORATION.md), "
    "entitlements, and the catalog. Errors are JSON objects with a stable `code` and a human `detail`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Celery: Redis in production; a filesystem broker (no server) in the local run.
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
if not REDIS_URL:
    _broker_dir = VAR_DIR / "celery-broker"
    (_broker_dir / "out").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
    }
if REDIS_URL:
    # A task taken by a worker that died (acks_late) goes back to the queue after this long, not Redis's default hour.
    # It must exceed the longest countdown of a retried task (Celery's retry backoff stops at 10 minutes).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 1800}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
# Keep a worker's database connection across tasks (Celery closes it after every task otherwise): measured on
# the renewal benchmark, collect_invoice 62 → 47 ms and a third of PostgreSQL's CPU.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=100)
# PDFs wait behind payments and emails (Redis priorities: 0 first, 9 last), so a month end charges cards and
# sends receipts within seconds of issuing instead of after every PDF is rendered.
CELERY_TASK_ROUTES = {"billing.tasks.render_invoice_pdf": {"priority": 9}}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "apply-due-changes": {"task": "billing.tasks.apply_due_changes", "schedule": timedelta(minutes=1)},
    "reconcile-pending-changes": {
        "task": "billing.tasks.reconcile_pending_changes",
        "schedule": timedelta(minutes=5),
    },
    "collect-due-invoices": {"task": "billing.tasks.collect_due_invoices", "schedule": timedelta(minutes=5)},
    "send-pending-notifications": {"task": "billing.tasks.send_pending_notifications",
                                   "schedule": timedelta(minutes=5)},
    "render-missing-pdfs": {"task": "billing.tasks.render_missing_pdfs", "schedule": timedelta(minutes=5)},
    "process-stuck-stripe-events": {"task": "billing.tasks.process_stuck_stripe_events",
                                    "schedule": timedelta(minutes=10)},
    # Approvals: expiry, approved held changes the broker missed, amendments whose date has come.
    "sweep-approvals": {"task": "billing.tasks.sweep_approvals", "schedule": timedelta(minutes=1)},
    # Renewal-window annual offers: the reminder email a few days into the window (retention/services).
    "renewal-offer-emails": {"task": "retention.tasks.send_renewal_offer_emails", "schedule": timedelta(hours=1)},
    # Trials of a higher tier: reminders before the end, conversion or fallback at the end.
    "sweep-trials": {"task": "retention.tasks.sweep_trials", "schedule": timedelta(minutes=1)},
    # Win-back campaigns: the emails now due, once per enrolment and step.
    "winback-sweep": {"task": "retention.tasks.winback_sweep", "schedule": timedelta(minutes=5)},
}

# Billing
PAYMENT_GATEWAY = env.str("PAYMENT_GATEWAY", default="local")
QUOTE_TTL = timedelta(minutes=env.int("QUOTE_TTL_MINUTES", default=15))
# A pending plan change whose payment outcome is unknown this long is re-checked by the reconciler.
PAYMENT_RECONCILE_AFTER = timedelta(minutes=env.int("PAYMENT_RECONCILE_AFTER_MINUTES", default=2))
# Only this long after a charge is "the gateway never took it" concluded from a search (Stripe's lags).
PAYMENT_NOT_TAKEN_AFTER = timedelta(minutes=env.int("PAYMENT_NOT_TAKEN_AFTER_MINUTES", default=15))
# A plan change left waiting for the customer's authentication this long is cancelled.
PAYMENT_ACTION_TIMEOUT = timedelta(hours=env.int("PAYMENT_ACTION_TIMEOUT_HOURS", default=23))
# Renewal invoices that fail to collect: retry this many days after the 1st, 2nd, … failed attempt; when the
# list is used up the subscription is cancelled (data kept) and the invoice stays open for finance.
RENEWAL_RETRY_SCHEDULE = env.list("RENEWAL_RETRY_SCHEDULE_DAYS", cast=int, default=[1, 3, 5])
# The period-end sweep retries a subscription or scheduled change whose step raised (1, 2, 4 … minutes apart)
# and parks it as "needs attention" in admin after this many errors in a row.
SWEEP_MAX_FAILURES = env.int("SWEEP_MAX_FAILURES", default=5)
# A worker owns a staff change it is applying for this long; after that (it died) the sweep takes it over.
SCHEDULED_CHANGE_LEASE_SECONDS = env.int("SCHEDULED_CHANGE_LEASE_SECONDS", default=120)
# Chunks of staff changes take their plain rows together (billing/services/scheduled_changes_bulk.py): one
# transaction per step for the chunk instead of six per row (proven equal: billing/tests/test_scheduled_changes_bulk.py).
# Off: every row one by one, as before.
SCHEDULED_CHANGES_SET_BASED = env.bool("SCHEDULED_CHANGES_SET_BASED", default=True)
# Staff may roll back an applied plan change for this many days after it applied (docs/back-office.md).
ROLLBACK_WINDOW_DAYS = env.int("ROLLBACK_WINDOW_DAYS", default=14)
IDEMPOTENCY_LOCK_TIMEOUT = timedelta(seconds=env.int("IDEMPOTENCY_LOCK_TIMEOUT_SECONDS", default=60))
# Trials of a higher tier (docs/retention-trials.md): default length, one trial per product and customer within the
# window, reminder emails this many days before the end.
TRIAL_DEFAULT_DAYS = env.int("TRIAL_DEFAULT_DAYS", default=14)
TRIAL_REPEAT_WINDOW_DAYS = env.int("TRIAL_REPEAT_WINDOW_DAYS", default=365)
TRIAL_REMINDER_DAYS = env.list("TRIAL_REMINDER_DAYS", cast=int, default=[3, 1])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000")
# Win-back emails (docs/retention-winback.md): how long the signed offer and unsubscribe links work.
WINBACK_OFFER_LINK_DAYS = env.int("WINBACK_OFFER_LINK_DAYS", default=30)
WINBACK_UNSUBSCRIBE_LINK_DAYS = env.int("WINBACK_UNSUBSCRIBE_LINK_DAYS", default=365)
# Prefix of the idempotency keys sent to payment gateways: set one per deployment (production, staging, CI)
# when several share a Stripe account, so their keys and payments can never be mistaken for each other.
IDEMPOTENCY_NAMESPACE = env.str("IDEMPOTENCY_NAMESPACE", default="crossgrade")
# Stripe (PAYMENT_GATEWAY=stripe). Keys come only from the environment, never from the repository.
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
# Short, so a request thread never hangs on Stripe; an unanswered charge is resumed with the same key.
STRIPE_TIMEOUT_SECONDS = env.float("STRIPE_TIMEOUT_SECONDS", default=10.0)
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(VAR_DIR / "emails"))  # the file backend (make run)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="billing@crossgrade.local")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
    "loggers": {"weasyprint.progress": {"level": "WARNING"}},  # seven lines per PDF at INFO
}
