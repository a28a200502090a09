"""`manage.py apply_due_changes [--now ISO]`: apply scheduled plan changes whose date has come."""

from __future__ import annotations

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.services.plan_changes import plan_changes_apply_due


def parse_now(value: str | None) -> datetime:
    if value is None:
        return timezone.now()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--now: {value!r} is not an ISO 8601 date-time", returncode=2) from None
    if moment.tzinfo is None:
        raise CommandError("--now: give a UTC offset, e.g. 2026-02-01T00:00:00+00:00", returncode=2)
    return moment


class Command(BaseCommand):
    help = "Apply every scheduled plan change due at --now (default: the current time). Idempotent; safe to run concurrently."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--now", help="The instant to apply changes at (ISO 8601 with offset)")

    def handle(self, *args, **options) -> None:
        applied = plan_changes_apply_due(now=parse_now(options["now"]))
        self.stdout.write(f"Applied {applied} scheduled change(s).")
