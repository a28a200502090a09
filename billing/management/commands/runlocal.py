"""`manage.py runlocal`: the whole product on one machine — web server plus Celery worker and beat.

Used by `make run`. With no REDIS_URL the worker uses the filesystem broker under var/, so no
server is needed besides this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from billing.management.commands.seed_demo import ADMIN_PASSWORD, DEMO_PASSWORD


class Command(BaseCommand):
    help = "Run the web server with a Celery worker and beat (the local, all-in-one run)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--addrport", default="127.0.0.1:8000")
        parser.add_argument("--no-worker", action="store_true", help="Only the web server.")

    def handle(self, *args, **options) -> None:
        addrport = options["addrport"]
        worker = None
        if not options["no_worker"]:
            schedule = os.path.join(settings.VAR_DIR, "celerybeat-schedule")
            worker = subprocess.Popen(  # noqa: S603 - fixed argv, our own interpreter
                [sys.executable, "-m", "celery", "-A", "config", "worker", "--beat", "--schedule", schedule,
                 "--concurrency", "1", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
            )
        url = f"http://{addrport}/"
        self.stdout.write(self.style.SUCCESS(f"\nCrossgrade is starting at {url}"))
        self.stdout.write(f"  Back office:  {url}admin/   admin / {ADMIN_PASSWORD}")
        self.stdout.write(f"  API docs:     {url}api/docs/")
        self.stdout.write(f"  Customers:    alice, bob, carol, dave, erin, kenji / {DEMO_PASSWORD}")
        self.stdout.write(f"  Worker:       {'Celery worker + beat running' if worker else 'not started'}\n")
        try:
            call_command("runserver", addrport, use_reloader=False)
        finally:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    worker.kill()
