"""Billing test fixtures: a local stand-in of Stripe's API, driven by the real SDK."""

from __future__ import annotations

import pytest

from billing.tests.stripe_standin import StripeStandin

STRIPE_TEST_WEBHOOK_SECRET = "whsec_test_standin"  # a test secret, never a real one


@pytest.fixture
def stripe_standin(settings):
    """Starts the stand-in on a free port and points the Stripe gateway at it (PAYMENT_GATEWAY=stripe)."""
    import stripe

    stripe.enable_telemetry = False  # no telemetry headers about earlier requests
    standin = StripeStandin(api_key="sk_test_standin", timeout_sleep=2.0).start()
    settings.STRIPE_API_BASE = standin.url
    settings.STRIPE_SECRET_KEY = "sk_test_standin"
    settings.STRIPE_WEBHOOK_SECRET = STRIPE_TEST_WEBHOOK_SECRET
    settings.STRIPE_TIMEOUT_SECONDS = 1.0
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.PAYMENT_GATEWAY = "stripe"
    yield standin
    standin.stop()
