"""Shared machinery of the HTTP benchmarks: a PostgreSQL database with the demo data, gunicorn on a free
loopback port, N concurrent keep-alive clients (closed loop, or open loop with --rate measured from each
request's scheduled time), CPU accounting and the report. The scripts say only what the clients ask.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/crossgrade_bench"
HOST = "127.0.0.1"
TARGET_P99_MS = 50.0
MAX_MEASURE_SECONDS = 30.0


@dataclass
class Target:
    """What every client asks, again and again: `request(rng)` gives (method, path, body)."""

    request: Callable[[random.Random], tuple[str, str, str | None]]
    headers: dict[str, str]
    expected_status: int


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the database ---------------------------------------------------------------------------


def prepare_database(url: str, *, fresh: bool) -> None:
    """Create the benchmark database if it is missing; drop and recreate it first when `fresh`."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise SystemExit(f"DATABASE_URL has no database name: {url}")
    admin_url = urlunsplit(parts._replace(path="/postgres", query=""))  # the query holds Django OPTIONS
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None
        if exists and fresh:
            if "bench" not in name:
                raise SystemExit(f"refusing to drop database {name!r}: its name does not contain 'bench' "
                                 "(use --reuse-db to run against it as it is)")
            log(f"dropping database {name}")
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            exists = False
        if not exists:
            log(f"creating database {name}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def alice_token(env: dict[str, str], seed_output: str) -> str:
    match = re.search(r"API token \(alice\):\s+([0-9a-f]{40})", seed_output)
    if match:
        return match.group(1)
    return manage(env, "drf_create_token", "alice").split()[2]


# --- gunicorn ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_gunicorn(env: dict[str, str], port: int, workers: int, threads: int, logfile: Path) -> subprocess.Popen:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), "config.wsgi", "-b", f"{HOST}:{port}", "--workers", str(workers),
               "--threads", str(threads), "--no-control-socket"]
    log(f"starting: {' '.join(command)}")
    with logfile.open("wb") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_gunicorn(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # SIGTERM: the master stops its workers gracefully
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def wait_healthy(port: int, process: subprocess.Popen, logfile: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}:\n{logfile.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer /healthz within {timeout:.0f} s:\n{logfile.read_text()[-3000:]}")


def process_tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its children (Linux /proc); None elsewhere."""
    try:
        children_file = Path(f"/proc/{pid}/task/{pid}/children")
        pids = [pid, *(int(p) for p in children_file.read_text().split())]
    except (OSError, ValueError):
        return None
    return sum(cpu_seconds(pids).values()) or None


def postgres_backend_pids(database_url: str) -> list[int]:
    """The server processes serving the benchmark database (gunicorn's persistent connections)."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(query="")), autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            [name]).fetchall()
    return [row[0] for row in rows]


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each of these processes that is readable (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            seconds[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
    return seconds


# --- the API -------------------------------------------------------------------------------


def api_get(port: int, token: str, path: str):
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Token {token}", "Accept": "application/json"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200:
        raise SystemExit(f"GET {path} answered {response.status}: {body[:500]!r}")
    return json.loads(body)


class Client(threading.Thread):
    """One client: a keep-alive connection, requests one after another, each timed."""

    def __init__(self, index: int, port: int, target: Target, warmup: int, count: int, start: threading.Barrier,
                 deadline: list[float], interval: float = 0.0) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.port, self.warmup, self.count = port, warmup, count
        self.target = target
        self.rng = random.Random(index)
        self.start_barrier = start
        self.deadline = deadline
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.error_samples: list[str] = []
        self.conn: http.client.HTTPConnection | None = None
        self.reused = False
        self.retries = 0
        # With --rate, each client sends on a fixed schedule (open loop); 0 sends back to back (closed loop).
        self.interval = interval
        self.offset = interval * index / 20 if interval else 0.0  # spread the clients' first sends

    def _send(self, method: str, path: str, body: str | None) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
            self.reused = False
        self.conn.request(method, path, body=body, headers=self.target.headers)
        response = self.conn.getresponse()
        payload = response.read()
        if response.will_close:  # a sync worker answers "Connection: close"
            self.conn.close()
            self.conn = None
        else:
            self.reused = True
        return response.status, payload

    def _one(self) -> tuple[float, int, bytes]:
        method, path, body = self.target.request(self.rng)
        started = time.perf_counter()
        try:
            try:
                status, payload = self._send(method, path, body)
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                if not self.reused:
                    raise
                # The server closed an idle keep-alive connection as we reused it (gthread's keep-alive
                # timeout): nothing was processed, so retry once on a new connection, as HTTP clients do.
                self.conn.close()
                self.conn = None
                self.retries += 1
                status, payload = self._send(method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            status, payload = 0, repr(exc).encode()
        return time.perf_counter() - started, status, payload

    def run(self) -> None:
        for _ in range(self.warmup):
            self._one()
        self.start_barrier.wait()
        self.retries = 0
        began = time.perf_counter() + self.offset
        for number in range(self.count):
            if time.perf_counter() >= self.deadline[0]:
                break
            scheduled = began + number * self.interval
            if self.interval:
                pause = scheduled - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            latency, status, payload = self._one()
            if self.interval:
                # Measured from when the request was due, not when it was sent, so a server that falls
                # behind is charged for the wait (no coordinated omission).
                latency = max(latency, time.perf_counter() - scheduled)
            self.latencies.append(latency)
            self.statuses.append(status)
            if status != self.target.expected_status and len(self.error_samples) < 3:
                self.error_samples.append(f"{status}: {payload[:300]!r}")
        if self.conn is not None:
            self.conn.close()


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


def run_load(port: int, target: Target, *, clients: int, requests: int, warmup: int, max_seconds: float,
             server_pid: int, database_url: str, rate: float = 0.0) -> dict:
    deadline = [float("inf")]

    def arm() -> None:  # runs once, in the last thread to reach the barrier, when warm-up is over
        deadline[0] = time.perf_counter() + max_seconds

    barrier = threading.Barrier(clients + 1, action=arm)
    share, extra = divmod(requests, clients)
    workers = [Client(i, port, target, warmup, share + (1 if i < extra else 0), barrier, deadline,
                      clients / rate if rate else 0.0) for i in range(clients)]
    for worker in workers:
        worker.start()
    backends = postgres_backend_pids(database_url)  # connected during the warm-up, kept (CONN_MAX_AGE)
    barrier.wait()
    started = time.perf_counter()
    own_cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu_before = process_tree_cpu_seconds(server_pid)
    db_cpu_before = cpu_seconds(backends)
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    own_cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu_after = process_tree_cpu_seconds(server_pid)
    db_cpu_after = cpu_seconds(postgres_backend_pids(database_url))
    latencies = sorted(lat for w in workers for lat in w.latencies)
    statuses = [s for w in workers for s in w.statuses]
    client_cpu = (own_cpu_after.ru_utime - own_cpu_before.ru_utime) + (own_cpu_after.ru_stime - own_cpu_before.ru_stime)
    server_cpu = (server_cpu_after - server_cpu_before
                  if server_cpu_after is not None and server_cpu_before is not None else None)
    # Backends opened during the run count whole; none readable (not Linux, not root) gives None.
    db_cpu = (sum(after - db_cpu_before.get(pid, 0.0) for pid, after in db_cpu_after.items())
              if db_cpu_after else None)
    return {
        "db_cpu": db_cpu, "db_backends": len(db_cpu_after),
        "latencies": latencies, "statuses": statuses, "elapsed": elapsed,
        "error_samples": [e for w in workers for e in w.error_samples][:5],
        "retries": sum(w.retries for w in workers),
        "client_cpu": client_cpu, "server_cpu": server_cpu,
        "loadavg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def report(result: dict, *, label: str, expected_status: int, clients: int, requested: int, max_seconds: float,
           workers: int, threads: int, cache: str, rate: float = 0.0) -> bool:
    latencies_ms = [lat * 1000 for lat in result["latencies"]]
    if not latencies_ms:
        print(f"{label}: no requests completed")
        return False
    statuses = result["statuses"]
    errors = sum(1 for s in statuses if s != expected_status)
    count, elapsed = len(latencies_ms), result["elapsed"]
    p50, p90, p99 = (percentile(latencies_ms, p) for p in (50, 90, 99))
    by_status: dict[int, int] = {}
    for s in statuses:
        by_status[s] = by_status.get(s, 0) + 1
    print(f"gunicorn: --workers {workers} --threads {threads} ({'gthread' if threads > 1 else 'sync'} worker), "
          f"cache: {cache}, {os.cpu_count()} CPUs shared with the load generator")
    print(f"statuses: {', '.join(f'{k}×{v}' for k, v in sorted(by_status.items()))}; "
          f"mean {statistics.fmean(latencies_ms):.1f} ms, min {latencies_ms[0]:.1f} ms")
    cpu = f"load generator CPU {result['client_cpu']:.1f} s"
    if result["server_cpu"] is not None:
        cpu += f", gunicorn CPU {result['server_cpu']:.1f} s"
    if result["db_cpu"] is not None:
        cpu += f", PostgreSQL CPU {result['db_cpu']:.1f} s ({result['db_backends']} backends)"
    cpu += f" over {elapsed:.1f} s wall"
    if result["server_cpu"]:
        cpu += f" ({1000 * result['server_cpu'] / count:.1f} ms of gunicorn CPU per request)"
    if result["loadavg"] is not None:
        cpu += f"; 1-min load average {result['loadavg']:.1f} (other processes on the machine skew the figures)"
    print(cpu)
    if result["retries"]:
        print(f"{result['retries']} requests retried once after the server closed a keep-alive connection "
              "(their latency includes the retry)")
    for sample in result["error_samples"]:
        print(f"  error: {sample}")
    if count < requested:
        print(f"stopped at the {max_seconds:.0f} s limit: {count} of {requested} requests measured")
    ok = p99 <= TARGET_P99_MS and errors == 0
    mode = f"open loop, {rate:g} req/s offered" if rate else "closed loop"
    print(f"{label}: {clients} clients ({mode}), {count} requests, p50 {p50:.1f} ms, p90 {p90:.1f} ms, "
          f"p99 {p99:.1f} ms, max {latencies_ms[-1]:.1f} ms, {count / elapsed:.0f} req/s, {errors} errors "
          f"(target p99 ≤ {TARGET_P99_MS:.0f} ms) {'OK' if ok else 'ABOVE TARGET' if errors == 0 else 'ERRORS'}")
    return ok


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=3000, help="measured requests in all (after warm-up)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up requests per client, not measured")
    parser.add_argument("--max-seconds", type=float, default=MAX_MEASURE_SECONDS,
                        help="stop measuring after this long even if requests remain")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (>1 selects gthread)")
    parser.add_argument("--reuse-db", action="store_true", help="keep an existing database instead of recreating it")
    parser.add_argument("--redis-url", default="", help="run with the Redis cache (as production) at this URL")
    parser.add_argument("--keep-log", action="store_true", help="print where gunicorn's log is and keep it")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="offered load in requests/s across all clients, each on a fixed schedule (open loop); "
                             "default 0: every client sends its next request as soon as it has an answer")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.workers < 1 or args.threads < 1:
        parser.error("--clients, --requests, --workers and --threads must be at least 1")
    return args


def run_benchmark(args: argparse.Namespace, *, label: str, target_for: Callable[[int, str], Target]) -> int:
    """Database, demo data, gunicorn, then the load: `target_for(port, alice's API token)` says what to ask."""
    database_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    prepare_database(database_url, fresh=not args.reuse_db)
    scratch = Path(tempfile.mkdtemp(prefix="crossgrade-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(DATABASE_URL=database_url, CROSSGRADE_VAR_DIR=str(scratch / "var"), PYTHONUNBUFFERED="1",
               API_RATE_LIMIT="1000000/minute",  # the benchmark's one user must not hit the rate limit
               SECRET_KEY=secrets.token_urlsafe(50))
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    logfile = scratch / "gunicorn.log"
    server = None
    try:
        log("migrating")
        manage(env, "migrate", "--noinput")
        log("seeding demo data")
        token = alice_token(env, manage(env, "seed_demo"))
        port = free_port()
        server = start_gunicorn(env, port, args.workers, args.threads, logfile)
        wait_healthy(port, server, logfile)
        target = target_for(port, token)
        log(f"warm-up: {args.clients} clients × {args.warmup} requests; then {args.requests} measured requests")
        result = run_load(port, target, clients=args.clients, requests=args.requests, warmup=args.warmup,
                          max_seconds=args.max_seconds, server_pid=server.pid, database_url=database_url,
                          rate=args.rate)
        ok = report(result, label=label, expected_status=target.expected_status, clients=args.clients,
                    requested=args.requests, max_seconds=args.max_seconds, workers=args.workers,
                    threads=args.threads,
                    cache=f"Redis ({args.redis_url})" if args.redis_url else "file-based (scratch directory)",
                    rate=args.rate)
    finally:
        if server is not None:
            stop_gunicorn(server)
        if args.keep_log:
            log(f"gunicorn log: {logfile}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1
