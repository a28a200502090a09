"""`manage.py apply_due_changes [--now ISO]`: period ends (renewals, scheduled changes) and due payment attempts."""

from __future__ import annotations

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.services.collection import invoice_collect, invoices_collect_due
from billing.services.renewals import plan_changes_apply_due


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
    help = ("Renew every subscription whose period ended by --now (default: the current time), applying the changes "
            "scheduled for then and issuing the new period's invoices, then run the payment attempts that are due. "
            "Idempotent; safe to run concurrently.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--now", help="The instant to apply changes at (ISO 8601 with offset)")

    def handle(self, *args, **options) -> None:
        now = parse_now(options["now"])
        applied = plan_changes_apply_due(now=now)
        outcomes: dict[str, int] = {}
        for invoice_id in invoices_collect_due(now=now):
            attempt = invoice_collect(invoice_id=invoice_id, now=now)
            if attempt is not None:
                outcomes[attempt.status] = outcomes.get(attempt.status, 0) + 1
        self.stdout.write(f"Applied {applied} scheduled change(s) and renewal(s).")
        if outcomes:
            self.stdout.write("Payment attempts: " + ", ".join(f"{n} {status}" for status, n in sorted(outcomes.items())))
