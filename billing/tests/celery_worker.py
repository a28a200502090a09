"""A real Celery worker for the tests that need one: `celery -A config worker` as a subprocess over Redis against the
test database (test_…), its output collected line by line as it comes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The test database, for the worker process."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class CeleryWorker:
    """One worker node named `hostname` (unique per test process), with `env` on top of this process's environment
    (tasks are never eager in it). `new_session`: its own process group, so a test can kill it with its pool."""

    stop_seconds = 20  # a warm shutdown lets the running task finish

    def __init__(self, *, hostname: str, var_dir: Path, env: dict[str, str] | None = None, concurrency: int = 2,
                 loglevel: str = "INFO", new_session: bool = False) -> None:
        full_env = {**os.environ, "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL,
                    "CROSSGRADE_VAR_DIR": str(var_dir), **(env or {})}
        full_env.pop("CELERY_TASK_ALWAYS_EAGER", None)
        self.new_session = new_session
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--concurrency", str(concurrency),
             "--pool", "prefork", "--loglevel", loglevel, "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--hostname", f"{hostname}-{os.getpid()}@%h"],
            cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=new_session,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def succeeded(self, task: str) -> dict[str, str]:
        """Task id → return value of every `task` the worker finished (celery's INFO log)."""
        return dict(re.findall(rf"Task {re.escape(task)}\[([0-9a-f-]+)\] succeeded in [0-9.e-]+s: (.*)", self.output))

    def stop(self) -> str:
        """Stop it (warm, then killed if it takes longer than `stop_seconds`) and return everything it printed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.stop_seconds)
            except subprocess.TimeoutExpired:
                if self.new_session:
                    os.killpg(self.process.pid, signal.SIGKILL)
                else:
                    self.process.kill()
                self.process.wait()
        self.reader.join(timeout=5)
        return self.output


def wait_for(condition: Callable[[], object], *, worker: CeleryWorker, what: str, seconds: float = 90):
    """Poll `condition` until it is truthy (returned); fail with the worker's output if it exits or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        if worker.process.poll() is not None:
            pytest.fail(f"the worker exited ({worker.process.returncode}) before {what}:\n{worker.output}")
        time.sleep(0.2)
    pytest.fail(f"not within {seconds:.0f} s: {what}\n--- worker output ---\n{worker.output}")
