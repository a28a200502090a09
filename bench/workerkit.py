"""Shared machinery of the worker benchmarks: the environment the app and its Celery workers run with, Redis
(flushed first, queue length), K real `celery -A config worker` processes with their own log files, a
watcher that polls progress until every count reaches its target, the workers' task timings (from their
INFO logs) and CPU accounting for the workers, PostgreSQL and whatever else ran on the machine meanwhile.

Used by renewal_invoices.py; meant for any benchmark that hands work to the workers and waits for it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
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
                  queues: str = "celery", app: str = "config") -> list[Worker]:
    """`count` worker processes, each with its own hostname and log file in `log_dir`. `app` is the Celery app
    module (another one only for experiments: a module outside the repository that patches something)."""
    workers = []
    for index in range(1, count + 1):
        name = f"{prefix}-{index}-{os.getpid()}@{os.uname().nodename}"
        logfile = log_dir / f"worker-{index}.log"
        command = [sys.executable, "-m", "celery", "-A", app, "worker", "--concurrency", str(concurrency),
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


def add_run_arguments(parser: argparse.ArgumentParser, *, database_url: str, redis_url: str = DEFAULT_REDIS_URL,
                      timeout: float = 900.0, experiments: bool = True) -> None:
    """The options every worker benchmark takes: workers, timeout, database, Redis, reuse, keep (and, for the
    experiments, another Celery app module)."""
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes, --concurrency 1 each")
    parser.add_argument("--timeout", type=float, default=timeout,
                        help=f"stop waiting after this long (default {timeout:.0f})")
    parser.add_argument("--database-url", default=database_url,
                        help=f"dropped and recreated unless --reuse-db (default {database_url})")
    parser.add_argument("--redis-url", default=redis_url, help=f"broker and cache; flushed first (default {redis_url})")
    parser.add_argument("--reuse-db", action="store_true", help="keep an existing database (new customers are added)")
    if experiments:
        parser.add_argument("--celery-app", default="config",
                            help="the workers' Celery app module (default config; another only for experiments, e.g. "
                                 "a module on PYTHONPATH outside the repository that patches one function)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (worker logs, PDFs) and print it")


def finish(workers: list[Worker], scratch: Path, *, keep: bool) -> None:
    """A benchmark's teardown: the workers stopped, its temp dir removed (or kept and named)."""
    stop_workers(workers)
    if keep:
        log(f"kept {scratch} (worker logs, PDFs in var/media)")
    else:
        shutil.rmtree(scratch, ignore_errors=True)


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


def code_state() -> str:
    """Which code ran: HEAD and the application files changed but not committed (others edit the same checkout)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    if (ROOT / "SNAPSHOT").is_file() and not (ROOT / ".git").exists():  # a copy made with `git archive`
        return "code: " + (ROOT / "SNAPSHOT").read_text().strip()
    head = git("log", "-1", "--format=%h %cd", "--date=format:%Y-%m-%d %H:%M")
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
               if line[3:].endswith(".py") and not line[3:].startswith("bench/") and "/tests/" not in line[3:]]
    return f"code: HEAD {head or '?'}" + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


def fmt(seconds: float | None) -> str:
    return f"{seconds:.1f} s" if seconds is not None else "not reached"


# --- the benchmark database and its data ----------------------------------------------------------------


def app_database(env: dict[str, str], database_url: str, *, fresh: bool) -> None:
    """(Re)create the benchmark database, run `migrate` and `seed_demo` (catalog, change rules, tax rates, the
    legal entity, the admin user), then set Django up in this process with `env`."""
    from loadkit import manage, prepare_database

    prepare_database(database_url, fresh=fresh)
    log("migrating")
    manage(env, "migrate", "--noinput")
    log("seeding demo data")
    manage(env, "seed_demo")
    django_setup(env)


def scoped(field: str, ids: list[int]) -> dict:
    """A filter on ids: a range when they are contiguous (cheap to poll), else IN."""
    if ids and max(ids) - min(ids) + 1 == len(ids):
        return {f"{field}__gte": min(ids), f"{field}__lte": max(ids)}
    return {f"{field}__in": ids}


def catalog_price(product: str, plan: str, currency: str = "EUR", interval: str = "month"):
    from billing.models import Price

    return Price.objects.select_related("plan__product").get(
        plan__product__code=product, plan__code=plan, currency=currency, interval=interval, is_active=True)


@dataclass
class Customers:
    """What customers_with_subscriptions() created: ids in creation order, the subscriptions themselves."""

    customer_ids: list[int]
    subscriptions: list  # billing.models.Subscription, with .customer and .price (plan, product) set
    start: object  # datetime: every subscription's current period
    end: object

    @property
    def subscription_ids(self) -> list[int]:
        return [s.pk for s in self.subscriptions]


def customers_with_subscriptions(count: int, *, tag: str, label: str, price, seats: int, start, end,
                                 timezone_name: str = "Europe/Berlin", card: str = "pm_card_visa") -> Customers:
    """`count` customers in DE (EUR, `timezone_name` as billing timezone), each with a default card on the local
    gateway and one active subscription to `seats` × `price` for the period `start` … `end`, with bulk_create."""
    from django.db import transaction

    from billing.models import Customer, PaymentMethod, Subscription

    with transaction.atomic():
        customers = Customer.objects.bulk_create([
            Customer(name=f"{label} {tag} {i:05d}", email=f"billing+{tag}-{i}@{label.lower().replace(' ', '-')}.example",
                     currency="EUR", country="DE", timezone=timezone_name, language="en",
                     address=f"{label} {i}\nMusterweg {i}\n10115 Berlin")
            for i in range(1, count + 1)], batch_size=1000)
        PaymentMethod.objects.bulk_create([
            PaymentMethod(customer=customer, gateway="local", reference=card, label="Visa ending 4242",
                          is_default=True) for customer in customers], batch_size=1000)
        subscriptions = Subscription.objects.bulk_create([
            Subscription(customer=customer, product=price.plan.product, price=price, quantity=seats,
                         seats_in_use=2, status=Subscription.Status.ACTIVE, current_period_start=start,
                         current_period_end=end) for customer in customers], batch_size=1000)
    return Customers(customer_ids=[c.pk for c in customers], subscriptions=subscriptions, start=start, end=end)


def series_failures() -> list[str]:
    """Every document series (invoices and credit notes) must hold exactly the numbers 1 … next_number − 1."""
    from billing.models import DocumentSeries, Invoice

    failures = []
    for series in DocumentSeries.objects.all():
        head = f"{series.prefix}-{series.year}-"
        taken = sorted(int(number.removeprefix(head)) for number in Invoice.objects.filter(
            legal_entity_id=series.legal_entity_id, kind=series.kind, number__startswith=head,
        ).values_list("number", flat=True))
        if taken != list(range(1, series.next_number)):
            missing = sorted(set(range(1, series.next_number)) - set(taken))
            failures.append(f"series {head} ({series.kind}): {len(taken)} numbers for next_number "
                            f"{series.next_number}, missing {missing[:5]}, duplicates {len(taken) - len(set(taken))}")
    return failures


# --- a run with workers ----------------------------------------------------------------------------------


@dataclass
class Meter:
    """CPU and database counters at one instant, to subtract."""

    workers: dict[str, float]
    machine: tuple[float, float]
    processes: dict[int, tuple[str, float]]
    postgres: float | None
    database: dict[str, float]
    own: float
    load: str

    @classmethod
    def read(cls, workers: list[Worker], database_url: str) -> Meter:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(workers={w.name: w.cpu_seconds() for w in workers}, machine=machine_cpu(),
                   processes=cpu_snapshot(), postgres=postgres_server_cpu(),
                   database=database_stats(database_url), own=usage.ru_utime + usage.ru_stime,
                   load=load_average())

    @staticmethod
    def report(before: Meter, after: Meter, *, workers: list[Worker], items: int, elapsed: float,
               unit: str = "invoice") -> list[str]:
        worker_cpu = {name: after.workers[name] - before.workers[name] for name in after.workers}
        busy = after.machine[0] - before.machine[0]
        total = after.machine[1] - before.machine[1]
        redis_pids = {pid for pid, (command, _) in after.processes.items() if command.startswith("redis-server")}
        redis_cpu = sum(after.processes[pid][1] - before.processes.get(pid, ("", 0.0))[1] for pid in redis_pids)
        lines = [
            "CPU over the run: " + ", ".join(f"{name.split('@')[0]} {sec:.1f} s" for name, sec in worker_cpu.items())
            + f" ({1000 * sum(worker_cpu.values()) / max(items, 1):.0f} ms of worker CPU per {unit})"
            + (f", PostgreSQL server {after.postgres - before.postgres:.1f} s (all databases)"
               if after.postgres is not None and before.postgres is not None else "")
            + f", Redis {redis_cpu:.1f} s, this script {after.own - before.own:.1f} s; the machine was busy "
            f"{busy:.0f} of {total:.0f} CPU-seconds ({100 * busy / max(total, 1e-9):.0f}%) in {elapsed:.1f} s"]
        if after.database and before.database:
            d = {key: after.database[key] - before.database[key] for key in after.database}
            lines.append(f"benchmark database: {d['sessions']:.0f} sessions opened (connections), {d['commits']:.0f} "
                         f"commits ({d['commits'] / max(items, 1):.1f} per {unit}, autocommit statements included), "
                         f"{d['rollbacks']:.0f} rollbacks, "
                         f"{d['active_seconds']:.1f} s executing statements")
        ours = {pid for w in workers for pid in w.pids()} | redis_pids | {os.getpid()}
        others = cpu_top(before.processes, after.processes, exclude=ours)
        if others:
            lines.append("other processes that used CPU meanwhile (ones that started and ended during the run are "
                         "not seen): " + "; ".join(f"{sec:.1f} s {cmd}" for sec, _pid, cmd in others))
        return lines


class WaitSampler:
    """Wraps a progress function: every poll also samples what the benchmark database's other sessions (the
    workers') are doing in pg_stat_activity: idle (the worker is outside any transaction: Python, the broker),
    idle in transaction (Python between statements while the transaction and its locks stay open), or active on a
    statement, and if so what it waits for (Lock:transactionid is a row lock held by another transaction,
    IO:WALSync / LWLock:WALWrite a commit waiting for the disk, none: running)."""

    def __init__(self, progress: Callable[[], dict[str, int]], *, target: tuple[str, int] | None = None) -> None:
        self.progress = progress
        self.target = target  # (count, value): samples before it is reached and after are reported apart
        self.polls: dict[str, int] = {}
        self.seen: dict[str, dict[tuple[str, str, str], int]] = {}

    def reset(self) -> None:
        self.polls.clear()
        self.seen.clear()

    def __call__(self) -> dict[str, int]:
        counts = self.progress()
        phase = "all"
        if self.target is not None:
            key, value = self.target
            phase = f"until {key} {value}" if counts.get(key, 0) < value else f"after {key} {value}"
        seen = self.seen.setdefault(phase, {})
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                           "AND backend_type = 'client backend'")
            rows = cursor.fetchall()
        self.polls[phase] = self.polls.get(phase, 0) + 1
        for state, wait_type, wait_event, query in rows:
            if state == "idle":
                key = ("idle", "", "")
            elif state == "active":
                key = ("active", f"{wait_type}:{wait_event}" if wait_type else "running",
                       _short(query_shape(" ".join((query or "").split())), 110))
            else:
                key = (state or "?", "", _short(query_shape(" ".join((query or "").split())), 110))
            seen[key] = seen.get(key, 0) + 1
        return counts

    def report(self, top: int = 12) -> list[str]:
        lines = []
        for phase, seen in self.seen.items():
            total = sum(seen.values())
            if not total:
                continue
            by_state: dict[str, int] = {}
            for (state, _wait, _query), n in seen.items():
                by_state[state] = by_state.get(state, 0) + n
            lines.append(f"what the workers' database sessions were doing, {phase} ({total} samples in "
                         f"{self.polls[phase]} polls): " + ", ".join(
                             f"{state} {100 * n / total:.0f}%" for state, n in
                             sorted(by_state.items(), key=lambda kv: -kv[1])))
            busy = sorted(((n, key) for key, n in seen.items() if key[0] != "idle"), reverse=True)
            for n, (state, wait, query) in busy[:top]:
                label = f"{state} {wait}" if wait else state
                lines.append(f"  {100 * n / total:5.1f}%  {label:<28} {query}")
        return lines


@dataclass
class WorkerRun:
    """What run_with_workers() saw: the progress, the meters, the workers' task runs and problems."""

    progress: Progress
    before: Meter
    after: Meter
    clock_wall: float
    runs: list[TaskRun]
    problems: list[str]
    waiting: int
    workers: list[Worker]
    waits: WaitSampler | None = None

    def report(self, *, items: int, unit: str) -> list[str]:
        lines = []
        if self.runs:
            lines.append("per task, as the workers logged it (time inside the task; window in s after the clock "
                         "started):")
            lines += ["  " + line for line in task_table(self.runs, clock_start=self.clock_wall,
                                                         workers=len(self.workers))]
        lines += Meter.report(self.before, self.after, workers=self.workers, items=items,
                              elapsed=self.progress.elapsed, unit=unit)
        if self.waits is not None:
            lines += self.waits.report()
        lines += [f"  worker problem: {line}" for line in self.problems[:10]]
        return lines


def run_with_workers(env: dict[str, str], *, database_url: str, redis_url: str, count: int, log_dir: Path,
                     prefix: str, start: Callable[[], None], progress: Callable[[], dict[str, int]],
                     targets: dict[str, int], timeout: float, workers_out: list[Worker],
                     app: str = "config") -> WorkerRun:
    """Flush Redis, start `count` workers and wait until they are ready, then start the clock, call `start()`
    (send the task, or confirm the job) and watch `progress()` until every count reaches its target or
    `timeout`. The workers are appended to `workers_out` as they start, so the caller's `finally` can stop them
    whatever happens; they are stopped here once the run is measured."""
    from django.db import connections

    connections.close_all()
    redis_flush(redis_url)  # seed_demo's own after-commit tasks too: not part of the run
    workers_out.extend(start_workers(env, count=count, log_dir=log_dir, prefix=prefix, app=app))
    log(f"workers ready in {wait_ready(workers_out):.1f} s")
    progress = WaitSampler(progress, target=next(iter(targets.items())))  # the first target is the benchmark's
    progress()  # connect before the clock starts
    progress.reset()
    before = Meter.read(workers_out, database_url)
    clock_wall = time.time()
    clock = time.monotonic()
    start()
    seen = watch(progress, targets, started=clock, timeout=timeout, alive=lambda: dead_worker(workers_out))
    after = Meter.read(workers_out, database_url)
    waiting = queue_length(redis_url)
    runs = [run for w in workers_out for run in w.task_runs()]
    problems = [f"{w.name}: {line}" for w in workers_out for line in w.problems()]
    stop_workers(workers_out)
    return WorkerRun(progress=seen, before=before, after=after, clock_wall=clock_wall, runs=runs, problems=problems,
                     waiting=waiting, workers=list(workers_out), waits=progress)


# --- in process: queries and cProfile of one chunk --------------------------------------------------------


class QueryCounter:
    """A cheap execute_wrapper (`with connection.execute_wrapper(counter):`): how many statements and how long
    they took, without keeping their text (CaptureQueriesContext keeps every one)."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.count += 1
            self.seconds += time.perf_counter() - started


_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")
_IN_LIST = re.compile(r"\((?:\s*\?\s*,)+\s*\?\s*\)")
_SAVEPOINT = re.compile(r'"s\d+_x\d+"')


def query_shape(sql: str) -> str:
    """The statement with its literals replaced by ?, IN lists and savepoint names collapsed: one shape per
    query the code issues, whatever the ids."""
    shape = _SAVEPOINT.sub('"sN"', sql)
    shape = _LITERALS.sub("?", shape)
    return _IN_LIST.sub("(?, …)", shape)


def _short(shape: str, width: int) -> str:
    """SELECT's column list is long and says little: keep the verb and what follows FROM."""
    if shape.startswith("SELECT ") and " FROM " in shape:
        columns, rest = shape.split(" FROM ", 1)
        what = "COUNT …" if "COUNT(" in columns else "1 …" if columns.startswith("SELECT 1 AS") else "…"
        shape = " ".join(("SELECT", what, "FROM", rest))
    elif shape.startswith("SELECT ") and (table := re.match(r'SELECT (?:DISTINCT )?"(\w+)"\.', shape)):
        shape = " ".join(("SELECT … FROM", table.group(1), "… (PostgreSQL kept only the text's first kB)"))
    return shape if len(shape) <= width else shape[: width - 1] + "…"


def query_report(queries: list[dict], *, items: int, top: int = 40, width: int = 150) -> list[str]:
    """Per query shape: how often per item and its time, most frequent first (CaptureQueriesContext's list)."""
    shapes: dict[str, list[float]] = {}
    for query in queries:
        shapes.setdefault(query_shape(query["sql"]), []).append(float(query["time"]))
    total_time = sum(sum(times) for times in shapes.values())
    verbs: dict[str, int] = {}
    for shape, times in shapes.items():
        verb = shape.split(" ", 1)[0]
        verbs[verb] = verbs.get(verb, 0) + len(times)
    lines = [f"{len(queries)} statements for {items} items: {len(queries) / items:.1f} per item, "
             f"{1000 * total_time / items:.1f} ms per item in the database driver (as Django timed them); by verb: "
             + ", ".join(f"{verb} {n / items:.1f}" for verb, n in sorted(verbs.items(), key=lambda kv: -kv[1])),
             f"  {'per item':>8} {'ms/item':>8}  statement (literals as ?)"]
    ranked = sorted(shapes.items(), key=lambda kv: (-len(kv[1]), -sum(kv[1])))
    for shape, times in ranked[:top]:
        lines.append(f"  {len(times) / items:>8.2f} {1000 * sum(times) / items:>8.2f}  {_short(shape, width)}")
    if len(ranked) > top:
        rest = sum(len(times) for _shape, times in ranked[top:])
        lines.append(f"  {rest / items:>8.2f}           … {len(ranked) - top} more shapes")
    return lines


PACKAGES = [
    ("/django/db/models/sql/", "django ORM: SQL compilation"),
    ("/django/db/models/", "django ORM: querysets, models, fields"),
    ("/django/db/", "django db backend"),
    ("/django/", "django: other"),
    ("/psycopg/", "psycopg (mostly waiting for PostgreSQL's answer: connection.wait)"),
    ("/kombu/", "kombu/celery (sending tasks)"),
    ("/celery/", "kombu/celery (sending tasks)"),
    ("/redis/", "redis client"),
    ("/billing/", "billing (Crossgrade)"),
    ("/entitlements/", "entitlements (Crossgrade)"),
    ("/bench/", "benchmark harness"),
]


def cprofile_report(profile, *, items: int, top: int = 25) -> list[str]:
    """cProfile of one chunk: own time by package, then the hottest functions by own and by cumulative time."""
    import io
    import pstats

    stats = pstats.Stats(profile)
    by_package: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        if filename == "~":
            label = ("waiting for PostgreSQL/Redis (socket, select, psycopg C)"
                     if any(word in name for word in ("select", "socket", "poll", "recv", "send", "psycopg", "wait"))
                     else "builtins: other")
        else:
            label = next((lab for marker, lab in PACKAGES if marker in filename), "python stdlib / other")
        by_package[label] = by_package.get(label, 0.0) + tottime
    total = sum(by_package.values()) or 1.0
    lines = [f"cProfile: {total:.2f} s profiled for {items} items ({1000 * total / items:.1f} ms per item under the "
             "profiler); own time by package:"]
    lines += [f"  {sec:7.2f} s {100 * sec / total:5.1f}%  {label}"
              for label, sec in sorted(by_package.items(), key=lambda kv: -kv[1])]
    for sort, title in (("tottime", "by own time"), ("cumulative", "by cumulative time")):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).strip_dirs().sort_stats(sort).print_stats(top)
        body = out.getvalue().split("\n")
        start = next((i for i, line in enumerate(body) if line.lstrip().startswith("ncalls")), 0)
        lines.append(f"hottest functions {title}:")
        lines += ["  " + line for line in body[start:] if line.strip()]
    return lines
