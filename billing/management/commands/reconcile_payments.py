"""`manage.py reconcile_payments [--now ISO]`: settle plan changes whose payment outcome was missed."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from billing.management.commands.apply_due_changes import parse_now
from billing.services.plan_changes import plan_changes_reconcile


class Command(BaseCommand):
    help = "Re-check pending and authentication-waiting plan changes with the gateway; apply, fail or cancel them."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--now", help="The instant to reconcile at (ISO 8601 with offset)")

    def handle(self, *args, **options) -> None:
        counts = plan_changes_reconcile(now=parse_now(options["now"]))
        self.stdout.write(", ".join(f"{name}: {count}" for name, count in counts.items()))
