"""Shared machinery of the worker benchmarks: the environment the app and its Celery workers run with, Redis
(flushed first, queue length), K real `celery -A config worker` processes with their own log files, a
watcher that polls progress until every count reaches its target, the workers' task timings (from their
INFO logs) and CPU accounting for the workers, PostgreSQL and whatever else ran on the machine meanwhile.

Used by renewal_invoices.py; meant for any benchmark that hands work to the workers and waits for it.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from loadkit import ROOT, cpu_seconds, log

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
# Emails go to memory in the worker (the message is still built, as for SMTP), never to the console.
WORKER_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Never inherited from the caller's shell: the benchmark decides each of these.
_UNINHERITED = ("DJANGO_DEBUG", "DJANGO_SETTINGS_MODULE", "CELERY_TASK_ALWAYS_EAGER", "REDIS_URL", "DATABASE_URL",
                "CROSSGRADE_VAR_DIR", "EMAIL_BACKEND", "LOG_LEVEL")


# --- environment and Django --------------------------------------------------------------------------


def app_env(*, database_url: str, redis_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of manage.py, the workers and the benchmark's own Django: as production would run
    (DEBUG off, Redis broker and cache) but on the benchmark's database, Redis db and a throwaway var dir."""
    env = {k: v for k, v in os.environ.items() if k not in _UNINHERITED}
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, CROSSGRADE_VAR_DIR=str(var_dir),
               EMAIL_BACKEND=WORKER_EMAIL_BACKEND, PYTHONUNBUFFERED="1", **extra)
    return env


def django_setup(env: dict[str, str]) -> None:
    """Django in this process, with exactly `env` for the variables the benchmark decides."""
    for name in _UNINHERITED:
        os.environ.pop(name, None)
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


# --- Redis ---------------------------------------------------------------------------------------------


def _redis(url: str):
    import redis

    return redis.Redis.from_url(url)


def redis_flush(url: str) -> None:
    """Empty the benchmark's Redis database (queues, results, cache). Refuses db 0, the shared default."""
    db = urlsplit(url).path.lstrip("/")
    if not db.isdigit() or int(db) == 0:
        raise SystemExit(f"refusing to flush {url}: name a Redis database other than 0 (e.g. …/11)")
    _redis(url).flushdb()


def queue_length(url: str, queue: str = "celery") -> int:
    """Messages waiting in a Celery queue on Redis (kombu keeps one list per queue and priority step)."""
    client = _redis(url)
    keys = [queue, *(key.decode() for key in client.scan_iter(match=f"{queue}\x06\x16*"))]
    return sum(client.llen(key) for key in keys)


# --- workers -------------------------------------------------------------------------------------------

# "[2026-01-31 23:59:59,123: INFO/ForkPoolWorker-1] Task billing.tasks.x[<id>] succeeded in 0.08s: …"
_SUCCEEDED = re.compile(r"^\[(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3}): INFO/[^\]]+\] "
                        r"Task (?P<name>[\w.]+)\[(?P<id>[0-9a-f-]+)\] succeeded in (?P<seconds>[0-9.e-]+)s", re.M)
_FAILED = re.compile(r"Task (?P<name>[\w.]+)\[[0-9a-f-]+\] (?:raised unexpected|retry:|INTERNAL ERROR)")


@dataclass(frozen=True)
class TaskRun:
    name: str
    worker: str
    ended: float  # epoch seconds (the worker's log clock, local time, millisecond resolution)
    seconds: float  # as the worker measured it: the task function alone, without the broker round trip

    @property
    def started(self) -> float:
        return self.ended - self.seconds


def _start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot, /proc/<pid>/stat field 22); None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass
class Worker:
    """One `celery -A config worker` process (prefork, --concurrency N), its output in a log file."""

    name: str
    logfile: Path
    process: subprocess.Popen
    children: dict[int, str] = field(default_factory=dict)  # pid → its start time, so a reused pid is never hit
    stopped: bool = False

    @property
    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def is_ready(self) -> bool:
        return re.search(rf"{re.escape(self.name)} ready\.", self.log_text) is not None

    def pids(self) -> list[int]:
        """The main process and its pool processes (remembered, so the CPU of one that was replaced counts)."""
        try:
            live = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except (OSError, ValueError):
            live = []
        for pid in map(int, live):
            if pid not in self.children and (started := _start_time(pid)) is not None:
                self.children[pid] = started
        return [self.process.pid, *sorted(self.children)]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(self.pids()).values())

    def task_runs(self) -> list[TaskRun]:
        return [TaskRun(name=m["name"], worker=self.name, seconds=float(m["seconds"]),
                        ended=time.mktime(time.strptime(m["at"], "%Y-%m-%d %H:%M:%S")) + int(m["ms"]) / 1000)
                for m in _SUCCEEDED.finditer(self.log_text)]

    def problems(self) -> list[str]:
        """Lines about failed or retried tasks and tracebacks: a correct run has none."""
        return [line for line in self.log_text.splitlines()
                if _FAILED.search(line) or line.startswith("Traceback") or ": ERROR/" in line]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (warm shutdown: the running task finishes), then SIGKILL; pool processes left behind are
        killed by their own ids."""
        if self.stopped:
            return
        self.pids()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for pid, started in self.children.items():
            if _start_time(pid) == started:  # still the pool process we saw, not a pid reused since
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.stopped = True


def start_workers(env: dict[str, str], *, count: int, log_dir: Path, prefix: str, concurrency: int = 1,
                  queues: str = "celery") -> list[Worker]:
    """`count` worker processes, each with its own hostname and log file in `log_dir`."""
    workers = []
    for index in range(1, count + 1):
        name = f"{prefix}-{index}-{os.getpid()}@{os.uname().nodename}"
        logfile = log_dir / f"worker-{index}.log"
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--concurrency", str(concurrency),
                   "--pool", "prefork", "-Q", queues, "--without-heartbeat", "--without-mingle", "--without-gossip",
                   "--hostname", name, "--loglevel", "INFO"]
        if index == 1:
            log(f"starting {count} × {' '.join(command[1:])}")
        with logfile.open("wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        workers.append(Worker(name=name, logfile=logfile, process=process))
    return workers


def wait_ready(workers: list[Worker], timeout: float = 120.0) -> float:
    """Until every worker has logged "<hostname> ready." (connected and consuming). Returns the seconds taken."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        for worker in workers:
            if worker.process.poll() is not None:
                raise SystemExit(f"worker {worker.name} exited with {worker.process.returncode}:\n"
                                 f"{worker.log_text[-3000:]}")
        if all(worker.is_ready() for worker in workers):
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"workers not ready within {timeout:.0f} s:\n" +
                     "\n".join(f"--- {w.name}\n{w.log_text[-1500:]}" for w in workers if not w.is_ready()))


def stop_workers(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.terminate()  # all at once, so their warm shutdowns overlap
    for worker in workers:
        worker.stop()


def dead_worker(workers: list[Worker]) -> str | None:
    for worker in workers:
        if worker.process.poll() is not None:
            return f"worker {worker.name} exited with {worker.process.returncode}"
    return None


# --- waiting for the work ------------------------------------------------------------------------------


@dataclass
class Progress:
    """When (seconds after the start) each count first moved and first reached its target."""

    targets: dict[str, int]
    first: dict[str, float | None]
    reached: dict[str, float | None]
    last: dict[str, int]
    samples: list[tuple[float, dict[str, int]]]
    elapsed: float
    stopped_because: str

    @property
    def complete(self) -> bool:
        return all(value is not None for value in self.reached.values())


def watch(progress: Callable[[], dict[str, int]], targets: dict[str, int], *, started: float, timeout: float,
          interval: float = 0.5, report_every: float = 5.0, alive: Callable[[], str | None] = lambda: None) -> Progress:
    """Poll `progress()` every `interval` s (from the monotonic instant `started`) until every count reaches its
    target, `timeout` s pass, or `alive()` names a reason to stop (a worker died)."""
    first: dict[str, float | None] = dict.fromkeys(targets)
    reached: dict[str, float | None] = dict.fromkeys(targets)
    samples: list[tuple[float, dict[str, int]]] = []
    last_report = 0.0
    reason = "timeout"
    while True:
        counts = progress()
        now = time.monotonic() - started
        samples.append((now, counts))
        for key, target in targets.items():
            if first[key] is None and counts.get(key, 0) > 0:
                first[key] = now
            if reached[key] is None and counts.get(key, 0) >= target:
                reached[key] = now
        if now - last_report >= report_every:
            last_report = now
            log(f"{now:6.1f} s  " + ", ".join(f"{key} {counts.get(key, 0)}/{target}" for key, target in targets.items()))
        if all(value is not None for value in reached.values()):
            reason = "done"
            break
        if (why := alive()) is not None:
            reason = why
            break
        if now >= timeout:
            break
        time.sleep(max(0.0, interval - (time.monotonic() - started - now)))
    return Progress(targets=targets, first=first, reached=reached, last=counts, samples=samples,
                    elapsed=time.monotonic() - started, stopped_because=reason)


# --- what the workers did ------------------------------------------------------------------------------


def percentile(sorted_values: list[float], pct: float) -> float:
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


def task_table(runs: list[TaskRun], *, clock_start: float, workers: int) -> list[str]:
    """Per task: count, time per run (p50/p90/max), busy seconds and share of the workers' time, and the window
    from the first start to the last end (seconds after `clock_start`, an epoch time)."""
    lines = [f"{'task':<36} {'runs':>5} {'mean':>8} {'p50':>8} {'p90':>8} {'max':>8} {'busy':>8} {'share':>6}  window"]
    busy_all = sum(run.seconds for run in runs) or 1.0
    names = sorted({run.name for run in runs}, key=lambda n: min(r.started for r in runs if r.name == n))
    for name in names:
        mine = [run for run in runs if run.name == name]
        ms = sorted(run.seconds * 1000 for run in mine)
        busy = sum(run.seconds for run in mine)
        window = (f"{min(r.started for r in mine) - clock_start:6.1f} – {max(r.ended for r in mine) - clock_start:6.1f} s")
        lines.append(f"{name.removeprefix('billing.tasks.'):<36} {len(mine):>5} {statistics.fmean(ms):>6.0f}ms "
                     f"{percentile(ms, 50):>6.0f}ms {percentile(ms, 90):>6.0f}ms {ms[-1]:>6.0f}ms {busy:>7.1f}s "
                     f"{100 * busy / busy_all:>5.0f}%  {window}")
    span = max(r.ended for r in runs) - min(r.started for r in runs) if runs else 0.0
    if span > 0:
        lines.append(f"workers busy {busy_all:.1f} s of {workers} × {span:.1f} s ({100 * busy_all / (workers * span):.0f}% "
                     "utilised; the rest is the broker round trip, Celery's own work and waiting for a CPU)")
    return lines


# --- the machine ---------------------------------------------------------------------------------------


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """Every readable process: pid → (command, user + system CPU seconds so far)."""
    tick = os.sysconf("SC_CLK_TCK")
    snapshot = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        snapshot[int(entry.name)] = (command or stat.split("(", 1)[1].split(")", 1)[0],
                                     (int(fields[11]) + int(fields[12])) / tick)
    return snapshot


def cpu_top(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], *, exclude: set[int],
            limit: int = 6, minimum: float = 1.0) -> list[tuple[float, int, str]]:
    """The processes, other than `exclude`, that used the most CPU between two snapshots (a process that started
    meanwhile counts whole; one that also ended meanwhile is not seen)."""
    used = []
    for pid, (command, seconds) in after.items():
        if pid in exclude:
            continue
        delta = seconds - before.get(pid, (command, 0.0))[1]
        if delta >= minimum:
            used.append((delta, pid, command[:110]))
    return sorted(used, reverse=True)[:limit]


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat): the share of the run's
    CPU that was busy says whether the workers could have had more."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user … steal; guest time is already inside user
    return (total - idle) / tick, total / tick


def postgres_server_cpu() -> float | None:
    """CPU seconds of the local PostgreSQL server, all databases: its live processes plus what the postmaster
    reaped from backends that ended (one per Celery task here, as the workers reconnect for every task)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, found = 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.split("(", 1)[1].split(")", 1)[0] != "postgres":
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
        if fields[1] == "1":  # the postmaster (its parent is init)
            total += int(fields[13]) + int(fields[14])  # cutime, cstime: its ended children
            found = True
    return total / tick if found else None


def database_stats(database_url: str) -> dict[str, float]:
    """The benchmark database's counters (pg_stat_database, PostgreSQL 14+): sessions opened, time spent
    executing statements, commits and rollbacks."""
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    with psycopg.connect(parts._replace(query="").geturl(), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT sessions, active_time, xact_commit, xact_rollback FROM pg_stat_database "
                           "WHERE datname = %s", [name]).fetchone()
    if row is None:
        return {}
    return {"sessions": row[0], "active_seconds": row[1] / 1000, "commits": row[2], "rollbacks": row[3]}


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())
