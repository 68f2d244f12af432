"""Benchmarks 1-4 for DBOS Transact, in one fresh process (``python -m bench.dbos_side ...``).

The same shapes as bench/durably_side.py with DBOS's ordinary API: an async ``@DBOS.workflow()``
calling ``@DBOS.step()`` no-op steps (``async def``; for benchmark 1s plain ``def`` steps, which
DBOS runs on the calling thread), default settings except durability.

**SQLite** (default): a system database in a temporary directory.

* DBOS opens SQLite with the library defaults: rollback journal (``journal_mode=DELETE``) and
  ``synchronous=FULL``. The benchmark creates the database file in WAL mode before DBOS opens it
  (the journal mode is stored in the file, so every DBOS connection then uses WAL); the durably side
  uses WAL too.
* ``synchronous`` stays DBOS's own FULL unless ``--sync`` says otherwise, in which case a SQLAlchemy
  ``connect`` listener sets it on every connection DBOS opens.

Every connection's journal mode and synchronous level are read back and reported.

**PostgreSQL** (``--postgres URL``): a database created for this process on that server (dropped
afterwards) is DBOS's system database (``system_database_url`` in DBOS's config). Nothing is
changed about DBOS's connections; each one's ``synchronous_commit`` is read back and reported.

A run is started with ``DBOS.start_workflow_async`` and awaited with ``handle.get_result()`` (the
counterpart of ``trigger_and_wait``); calling the workflow function directly is measured as well.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time
from typing import Any

import sqlalchemy as sa
from dbos import DBOS

from ._pg import fresh_database
from ._util import emit, percentile, scratch_dir

SYNC_LEVELS = {"0": "OFF", "1": "NORMAL", "2": "FULL", "3": "EXTRA"}
BENCHMARKS = ("1", "1s", "2", "3", "4")
observed: set[tuple[str, str]] = set()


def install_pragma_listener(sync: str | None) -> None:
    """Set (when asked) and record the durability settings of every connection DBOS opens."""

    @sa.event.listens_for(sa.Engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        if not isinstance(dbapi_conn, sqlite3.Connection):  # PostgreSQL (psycopg): read only
            cursor = dbapi_conn.cursor()
            cursor.execute("SHOW synchronous_commit")
            value = str(cursor.fetchone()[0])
            cursor.close()
            dbapi_conn.rollback()  # leave no transaction open behind DBOS's back
            observed.add(("postgres", value))
            return
        if sync is not None:
            dbapi_conn.execute(f"PRAGMA synchronous = {sync}")
        journal = dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0]
        level = str(dbapi_conn.execute("PRAGMA synchronous").fetchone()[0])
        observed.add((str(journal).upper(), SYNC_LEVELS.get(level, level)))


@DBOS.step()
async def noop() -> None:
    return None


@DBOS.step()
def noop_sync() -> None:
    return None


@DBOS.workflow()
async def many(n: int) -> int:
    for _ in range(n):
        await noop()
    return n


@DBOS.workflow()
async def many_sync(n: int) -> int:
    for _ in range(n):
        noop_sync()
    return n


async def start_and_wait(n: int) -> int:
    handle = await DBOS.start_workflow_async(many, n)
    result: int = await handle.get_result()
    return result


def _rate(count: int, seconds: float, cpu: float) -> dict[str, float]:
    return {"count": count, "seconds": seconds, "rate": count / seconds, "cpu_seconds": cpu}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.postgres:
        async with fresh_database(args.postgres, "bench_dbos") as url:
            return await measure(args, url, url)
    tmp = scratch_dir("bench-dbos-")
    path = tmp / "dbos_system.sqlite"
    if args.journal == "wal":
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.close()
    install_pragma_listener(None if args.sync == "default" else args.sync.upper())
    return await measure(args, f"sqlite:///{path}", "sqlite:///<tmp>/dbos_system.sqlite")


async def measure(args: argparse.Namespace, url: str, shown_url: str) -> dict[str, Any]:
    which = set(args.benchmarks.split(","))
    if args.postgres:
        install_pragma_listener(None)
    DBOS(config={"name": "bench", "system_database_url": url})
    DBOS.launch()
    out: dict[str, Any] = {
        "system_database_url": shown_url,
        "backend": "postgres" if args.postgres else "sqlite",
    }
    try:
        # 1. steps/s in one run; 1s. the same with plain def steps
        for key, workflow, name in (("1", many, "steps_one_run"), ("1s", many_sync, "steps_one_run_sync")):
            if key not in which:
                continue
            await workflow(100)  # warm-up
            c0, t0 = time.process_time(), time.perf_counter()
            await workflow(args.steps)
            out[name] = _rate(args.steps, time.perf_counter() - t0, time.process_time() - c0)
        if "2" in which or "3" in which or "4" in which:
            await benchmarks_2_to_4(args, out)
    finally:
        DBOS.destroy()
    if args.postgres:
        out["connections"] = sorted({f"synchronous_commit={v}" for _, v in observed})
        out["synchronous_commit"] = "/".join(sorted({v for _, v in observed}))
        return out
    out["connections"] = sorted({f"journal_mode={j} synchronous={s}" for j, s in observed})
    modes = {j for j, _ in observed}
    levels = {s for _, s in observed}
    out["journal_mode"] = "/".join(sorted(modes))
    out["synchronous"] = "/".join(sorted(levels))
    return out


async def benchmarks_2_to_4(args: argparse.Namespace, out: dict[str, Any]) -> None:
    # 2. steps/s with N runs at once
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(start_and_wait(args.parallel_steps) for _ in range(args.parallel_runs)))
    total = args.parallel_runs * args.parallel_steps
    out["steps_parallel"] = {
        **_rate(total, time.perf_counter() - t0, time.process_time() - c0),
        "runs": args.parallel_runs,
    }

    # 3. one-step runs/s: each started and awaited on its own, all at once
    await asyncio.gather(*(start_and_wait(1) for _ in range(20)))  # warm-up
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(start_and_wait(1) for _ in range(args.runs)))
    out["runs_per_s"] = _rate(args.runs, time.perf_counter() - t0, time.process_time() - c0)
    # 3b. the workflow function called directly (no handle)
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(many(1) for _ in range(args.runs)))
    out["runs_per_s_direct"] = _rate(args.runs, time.perf_counter() - t0, time.process_time() - c0)

    # 4. start-and-wait latency, one at a time
    for _ in range(10):
        await start_and_wait(1)
    samples = []
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(args.latency):
        t1 = time.perf_counter()
        await start_and_wait(1)
        samples.append((time.perf_counter() - t1) * 1000)
    out["sequential_runs_per_s"] = _rate(len(samples), time.perf_counter() - t0, time.process_time() - c0)
    direct = []
    for _ in range(args.latency):
        t0 = time.perf_counter()
        await many(1)
        direct.append((time.perf_counter() - t0) * 1000)
    out["latency_ms"] = {
        "count": len(samples),
        "p50": percentile(samples, 0.5),
        "p99": percentile(samples, 0.99),
        "mean": sum(samples) / len(samples),
    }
    out["latency_ms_direct"] = {
        "count": len(direct),
        "p50": percentile(direct, 0.5),
        "p99": percentile(direct, 0.99),
        "mean": sum(direct) / len(direct),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sync",
        default="full",
        choices=["default", "off", "normal", "full", "extra"],
        help="synchronous level for DBOS's connections ('default': leave DBOS's own, which is FULL)",
    )
    parser.add_argument("--journal", default="wal", choices=["wal", "default"])
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="PostgreSQL system database: a fresh database on this server (created and dropped here)",
    )
    parser.add_argument(
        "--benchmarks",
        default="1,2,3,4",
        help=f"comma-separated subset of {','.join(BENCHMARKS)} (2-4 always run together)",
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--parallel-runs", type=int, default=50)
    parser.add_argument("--parallel-steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--latency", type=int, default=200)
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(asyncio.run(main(parse_args())))
