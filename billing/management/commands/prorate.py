"""`manage.py prorate FILE|-`: the proration calculator of shared/PRORATION.md."""

from __future__ import annotations

import json
import sys
from decimal import Decimal

from django.core.management.base import BaseCommand

from billing.proration import ProrationInputError, change_from_json, prorate, result_to_json


class Command(BaseCommand):
    help = "Price one plan change given as JSON (FILE, or - for standard input) and print the result as JSON."
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="JSON input file, or - for standard input")

    def handle(self, *args, **options) -> None:
        path = options["file"]
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        except OSError as exc:
            self._fail("FILE", f"cannot read {path}: {exc.strerror}")
        except UnicodeDecodeError:
            self._fail("FILE", f"{path} is not UTF-8 text")
        try:
            data = json.loads(text, parse_float=Decimal)
        except (json.JSONDecodeError, ValueError) as exc:
            self._fail("input", f"malformed JSON: {exc}")
        try:
            result = prorate(change_from_json(data))
        except ProrationInputError as exc:
            self._fail(exc.field, exc.message)
        self.stdout.write(json.dumps(result_to_json(result), indent=2, ensure_ascii=False))

    def _fail(self, field: str, message: str) -> None:
        self.stderr.write(f"prorate: {field}: {message}".replace("\n", " "))
        sys.exit(2)
