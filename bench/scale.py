"""Benchmark 12: schedules x serves (``python -m bench.scale``).

``--schedules N`` schedules, every one ``* * * * *`` (one burst of N fire times a minute) with a
one-step job, run by ``--serves K`` real ``durably-sched serve`` processes started together on a
fresh database (PostgreSQL: a database of its own, dropped afterwards; SQLite: a new file), each
with scheduler and worker (``--no-worker``: scheduler only). The schema is migrated first, so
"fresh" means no cursors: the serves create them.

Measured, for the first minute boundary T at least 3 s after every serve is ready, the serves
share the schedule buckets and every schedule's cursor is in the current minute (a serve that took
more than a minute to be ready fires the minute it started in first: T is a minute of its own):

* **ready**: seconds from spawning a serve to its "scheduler ready" log line (interpreter start,
  imports and parsing the schedules file included);
* **created / started**: each run's ``created_at`` / ``started_at`` (the database's clock) minus T,
  p50 and p99; runs not started ``--wait-started`` seconds after T are counted, not timed;
* **rows per fire time** (PostgreSQL): row inserts and updates of the scheduling tables
  (fire_records, schedule_cursors, runs inserts, run_labels) from T - 2 s until all runs exist, read
  from pg_stat_user_tables after the stats are flushed, divided by N; the same for 1 and K serves
  means the serves do not write each other's work;
* **transactions per fire time** (PostgreSQL): commits of the database in that window / N (the
  workers' claims and checkpoints in the window included: with ``--no-worker`` it is the
  scheduling alone);
* **CPU per fire time per process**: each serve's CPU seconds (utime + stime) from T - 2 s until
  all runs exist, divided by N (with a worker, its claims in that window are included);
* **restart ready**: after the rest, the first serve is stopped (SIGTERM) and started again
  ``--restarts`` times, the others staying up; seconds from each spawn to its "scheduler ready"
  (the cursors and the schedules' definitions are stored by then, as on any restart).

The machine is shared: figures vary with the load of other work (say so when quoting them).
``python -m bench.scale --suite`` runs the issue's matrix, each size in a child process, and writes
bench/scale.json, bench/SCALE.md and bench/scale.png (bench.run --only scale does the same).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from durably_sched.schedule.ownership import bucket_of

from ._pg import default_url, fresh_database
from ._util import emit, percentile, proc_cpu_seconds, scratch_dir

ROOT = Path(__file__).resolve().parent.parent
SCHEDULING_TABLES = ("fire_records", "schedule_cursors", "runs", "run_labels")


def schedules_yaml(count: int) -> str:
    return "schedules:\n" + "".join(f"  s{i:06d}: {{cron: '* * * * *', job: tick}}\n" for i in range(count))


def spawn(url: str, schedules: Path, log: Path, no_worker: bool) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "durably_sched.cli", "--database", url, "--jobs", "bench.scale_jobs"]
    cmd += ["--schedules", str(schedules), "serve", *(["--no-worker"] if no_worker else [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def restart_ready(
    procs: list[subprocess.Popen[bytes]], url: str, schedules: Path, tmp: Path, args: argparse.Namespace
) -> list[float]:
    """Stop the first serve and start it again, ``args.restarts`` times: seconds to ready each time
    (``procs[0]`` is replaced by the running one)."""
    out: list[float] = []
    for i in range(args.restarts):
        procs[0].send_signal(signal.SIGTERM)
        procs[0].wait(60)
        log = tmp / f"serve-0-restart-{i}.log"
        spawned = time.monotonic()
        procs[0] = spawn(url, schedules, log, args.no_worker)
        wait(lambda log=log: "scheduler ready" in log.read_text(errors="replace"), 120, "the restart", procs)
        out.append(round(time.monotonic() - spawned, 2))
    return out


def wait(predicate: Any, timeout: float, what: str, procs: list[subprocess.Popen[bytes]]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a serve exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.05)


class Database:
    """The reads of the measurement, on either backend (plain drivers: no store in between)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")

    def query(self, sql: str, *args: Any) -> list[Any]:
        if self.sqlite:
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=60)
            try:
                return conn.execute(sql.replace("$1", "?").replace("$2", "?"), args).fetchall()
            finally:
                conn.close()
        return asyncio.run(self._pg(sql, *args))

    async def _pg(self, sql: str, *args: Any) -> list[Any]:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    def settled(self, serves: int) -> bool:
        """Every live serve owns buckets, and together they own all 256."""
        now = str(int(time.time() * 1000)) if self.sqlite else "now()"
        rows = self.query(
            "SELECT s.id, (SELECT count(*) FROM schedule_buckets b WHERE b.owner = s.id "
            f"AND b.expires_at > {now}) FROM schedulers s WHERE s.expires_at > {now}"
        )
        return len(rows) == serves and all(n > 0 for _, n in rows) and sum(n for _, n in rows) == 256

    def caught_up(self, count: int) -> bool:
        """Every schedule's cursor is in the current minute: no fire time of an earlier minute is
        left to fire (a serve that took longer than a minute to be ready fires the minutes it
        started in first; the burst measured must not overlap that catch-up)."""
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        since: Any = int(minute.timestamp() * 1000) if self.sqlite else minute
        [(n,)] = self.query("SELECT count(*) FROM schedule_cursors WHERE last_fire_time >= $1", since)
        return int(n) >= count

    def counts(self, key_suffix: str) -> tuple[int, int]:
        """(runs of fire time T, of them started)."""
        [(made, started)] = self.query(
            "SELECT count(*), count(started_at) FROM runs WHERE idempotency_key LIKE $1", f"%:{key_suffix}"
        )
        return int(made), int(started)

    def times(self, key_suffix: str, fire: datetime) -> tuple[list[float], list[float]]:
        rows = self.query(
            "SELECT created_at, started_at FROM runs WHERE idempotency_key LIKE $1", f"%:{key_suffix}"
        )

        def since(value: Any) -> float | None:
            if value is None:
                return None
            at = datetime.fromtimestamp(value / 1000, UTC) if isinstance(value, int) else value
            return (at - fire).total_seconds()

        created = [t for t in (since(c) for c, _ in rows) if t is not None]
        started = [t for t in (since(s) for _, s in rows) if t is not None]
        return created, started

    def owners(self) -> dict[int, str]:
        """{bucket: owner} now (the owners of the burst: the bench waits for them to settle first)."""
        return {int(b): str(o) for b, o in self.query("SELECT bucket, owner FROM schedule_buckets")}

    def created_by_owner(self, key_suffix: str, fire: datetime) -> dict[str, float]:
        """Creation p99 of each owner's share of the burst (which serve is the slow one)."""
        owners = self.owners()
        rows = self.query(
            "SELECT schedule_name, created_at FROM runs WHERE idempotency_key LIKE $1", f"%:{key_suffix}"
        )
        late: dict[str, list[float]] = {}
        for name, at in rows:
            when = datetime.fromtimestamp(at / 1000, UTC) if isinstance(at, int) else at
            late.setdefault(owners.get(bucket_of(name), "?"), []).append((when - fire).total_seconds())
        return {owner: round(percentile(v, 0.99), 3) for owner, v in sorted(late.items())}

    def stats(self) -> dict[str, int] | None:
        if self.sqlite:
            return None
        rows = self.query(
            "SELECT relname, n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = ANY($1::text[])",
            list(SCHEDULING_TABLES),
        )
        out = {f"{name}_ins": int(ins) for name, ins, _ in rows} | {
            f"{name}_upd": int(upd) for name, _, upd in rows
        }
        [(commits,)] = self.query(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        out["commits"] = int(commits)
        return out


def scheduling_rows(before: dict[str, int], after: dict[str, int]) -> int:
    """Inserts and updates of the scheduling tables (runs: inserts only; workers update runs)."""
    keys = [
        f"{t}_{kind}" for t in SCHEDULING_TABLES for kind in ("ins", "upd") if (t, kind) != ("runs", "upd")
    ]
    return sum(after.get(k, 0) - before.get(k, 0) for k in keys)


def measure(url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    db = Database(url)
    schedules = tmp / "schedules.yaml"
    schedules.write_text(schedules_yaml(args.schedules))
    subprocess.run(
        [sys.executable, "-m", "durably_sched.cli", "--database", url, "migrate"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True,
    )  # fmt: skip
    logs = [tmp / f"serve-{i}.log" for i in range(args.serves)]
    spawned = time.monotonic()
    procs = [spawn(url, schedules, log, args.no_worker) for log in logs]
    try:
        ready: list[float | None] = [None] * len(procs)

        def all_ready() -> bool:
            for i, log in enumerate(logs):
                if ready[i] is None and "scheduler ready" in log.read_text(errors="replace"):
                    ready[i] = time.monotonic() - spawned
            return all(r is not None for r in ready)

        wait(all_ready, 300, "every serve ready", procs)
        wait(lambda: db.settled(args.serves), 60, "the serves sharing the buckets", procs)
        wait(lambda: db.caught_up(args.schedules), 180, "the serves' startup fire times handled", procs)
        now = datetime.now(UTC)
        fire = (now + timedelta(seconds=3)).replace(second=0, microsecond=0) + timedelta(minutes=1)
        key = fire.strftime("%Y-%m-%dT%H:%M:%SZ")
        time.sleep(max(0.0, (fire - datetime.now(UTC)).total_seconds() - 2))
        cpu0 = [proc_cpu_seconds(p.pid) for p in procs]
        stats0 = db.stats()
        wait(lambda: db.counts(key)[0] >= args.schedules, 120, "every run created", procs)
        cpu1 = [proc_cpu_seconds(p.pid) for p in procs]
        created_done = (datetime.now(UTC) - fire).total_seconds()
        if stats0 is not None:
            time.sleep(11)  # PostgreSQL 15 flushes a backend's stats within 10 s when it goes idle
        stats1 = db.stats()
        if not args.no_worker:
            deadline = fire + timedelta(seconds=args.wait_started)
            while db.counts(key)[1] < args.schedules and datetime.now(UTC) < deadline:
                time.sleep(0.5)
        created, started = db.times(key, fire)
        by_serve = db.created_by_owner(key, fire)
        restarts = restart_ready(procs, url, schedules, tmp, args)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
    n = args.schedules
    out: dict[str, Any] = {
        "backend": "sqlite" if db.sqlite else "postgres",
        "schedules": n,
        "serves": args.serves,
        "worker": not args.no_worker,
        "fire_time": key,
        "ready_seconds": [round(r or 0, 2) for r in ready],
        "ready_max": round(max(r or 0 for r in ready), 2),
        "created": len(created),
        "created_p50": round(percentile(created, 0.5), 3),
        "created_p99": round(percentile(created, 0.99), 3),
        "created_max": round(max(created), 3),
        "all_created_after": round(created_done, 2),
        "created_p99_by_serve": by_serve,
        "serve_log_errors": [
            sum(" ERROR " in line for line in log.read_text(errors="replace").splitlines()) for log in logs
        ],
        "cpu_ms_per_fire_per_process": [
            round((b - a) * 1000 / n, 4) for a, b in zip(cpu0, cpu1, strict=True)
        ],
        "restart_ready_seconds": restarts,
    }
    if not args.no_worker:
        out |= {
            "started": len(started),
            "not_started": n - len(started),
            "started_p50": round(percentile(started, 0.5), 3) if started else None,
            "started_p99": round(percentile(started, 0.99), 3) if started else None,
            "wait_started": args.wait_started,
        }
    if stats0 is not None and stats1 is not None:
        out["rows_per_fire"] = round(scheduling_rows(stats0, stats1) / n, 3)
        out["transactions_per_fire"] = round((stats1["commits"] - stats0["commits"]) / n, 4)
    return out


async def _in_fresh_database(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    async with fresh_database(args.postgres, "bench_scale") as url:
        return await asyncio.to_thread(measure, url, args, tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--serves", type=int, default=1)
    parser.add_argument("--no-worker", action="store_true", help="serves without a worker (scheduler only)")
    parser.add_argument("--wait-started", type=float, default=60.0, help="seconds after T to wait for starts")
    parser.add_argument("--restarts", type=int, default=3, help="restarts of one serve timed at the end")
    parser.add_argument("--postgres", default=default_url(), metavar="URL")
    parser.add_argument("--suite", action="store_true", help="run the matrix and write bench/scale.*")
    args = parser.parse_args(argv)
    if args.suite:
        from .scale_suite import run_suite

        return run_suite(args.postgres)
    tmp = scratch_dir("bench-scale-")
    if args.backend == "sqlite":
        result = measure(f"sqlite:///{tmp / 'scale.db'}", args, tmp)
    else:
        result = asyncio.run(_in_fresh_database(args, tmp))
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
