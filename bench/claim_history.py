"""Benchmark 6: claim latency as finished history grows (``python -m bench.claim_history``).

The table is filled with finished runs of the very job being claimed (the worst case for an index
on the job name), written directly with ``sqlite3.executemany`` in the schema of
durably_sched/store/migrations/sqlite; at each size a pending run is created and ``store.claim``
timed end to end (one write transaction on the store's writer thread), then the run is completed so
the next round starts from the same state. The claim's candidate SELECT, as the store runs it
(captured with sqlite3's trace callback), is also timed on its own in a plain sqlite3 connection: it
isolates the query from the commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from durably_sched.store.base import NewRun
from durably_sched.store.sqlite import SqliteStore

from ._util import emit, median, percentile, scratch_dir

JOB = "bench"
STATUSES = ("completed", "completed", "completed", "failed", "cancelled")
INSERT = (
    "INSERT INTO runs (id, job_name, status, input, output, error, labels, schedule_name, generation, "
    "worker_id, step_count, attempt, created_at, started_at, completed_at, updated_at) "
    "VALUES (?, ?, ?, '{}', ?, ?, ?, ?, 1, 'w', 1, 1, ?, ?, ?, ?)"
)


def history_rows(start: int, count: int, base_ms: int) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(start, start + count):
        status = STATUSES[i % len(STATUSES)]
        schedule = f"nightly-{i % 50}" if i % 2 else None
        labels = json.dumps({"schedule": schedule}) if schedule else "{}"
        t = base_ms + i * 10
        rows.append(
            (
                str(uuid.UUID(int=i + 1)),
                JOB,
                status,
                '{"ok":true}' if status == "completed" else None,
                "RuntimeError: boom" if status == "failed" else None,
                labels,
                schedule,
                t,
                t + 1,
                t + 5,
                t + 5,
            )
        )
    return rows


def fill(path: Path, start: int, count: int) -> float:
    t0 = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    base = int(time.time() * 1000) - 10 * 10**7
    batch = 50_000
    for offset in range(start, start + count, batch):
        conn.executemany(INSERT, history_rows(offset, min(batch, start + count - offset), base))
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - t0


def time_query(path: Path, sql: str, repeats: int) -> tuple[float, list[str]]:
    """Median time of one statement in a plain sqlite3 connection, and its plan."""
    conn = sqlite3.connect(path)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        conn.execute(sql).fetchall()
        samples.append((time.perf_counter() - t0) * 1e6)
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    conn.close()
    return median(samples), plan


async def candidate_sql(store: SqliteStore) -> str:
    """The claim's candidate SELECT exactly as the store runs it (values filled in by sqlite3's trace)."""
    statements: list[str] = []
    writer = store.writer.connection  # the sqlite3 connection every write of the store goes through
    assert writer is not None
    writer.set_trace_callback(statements.append)
    try:
        await time_claims(store, 1)
    finally:
        writer.set_trace_callback(None)
    for sql in statements:
        if sql.startswith("SELECT seq, concurrency_key, worker_id FROM runs"):
            return sql
    raise RuntimeError("no claim candidate query seen; the store's SQL changed shape")


async def time_claims(store: SqliteStore, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        run_id = str(uuid.uuid4())
        await store.create_runs([NewRun(id=run_id, job_name=JOB, input={})])
        t0 = time.perf_counter()
        claimed = await store.claim("bench-worker", [JOB], 1, 30.0)
        samples.append((time.perf_counter() - t0) * 1000)
        assert len(claimed) == 1 and claimed[0].id == run_id, "claim did not return the pending run"
        await store.complete_run(run_id, claimed[0].generation, {})
    return samples


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = scratch_dir("bench-claim-")
    path = tmp / "history.db"
    url = f"sqlite:///{path}" + (f"?synchronous={args.sync}" if args.sync else "")
    store = SqliteStore(url)
    await store.connect()
    await store.migrate()
    await store.close()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    have = 0
    for size in sizes:
        fill_seconds = fill(path, have, size - have)
        have = size
        store = SqliteStore(url)
        await store.connect()
        try:  # closed on any error too: its reader thread would keep the process from exiting
            query_us, plan = time_query(path, await candidate_sql(store), args.repeats)
            await time_claims(store, 20)  # warm-up: caches, statement cache
            samples = await time_claims(store, args.repeats)
        finally:
            await store.close()
        results.append(
            {
                "history": size,
                "fill_seconds": round(fill_seconds, 2),
                "claim_ms_median": median(samples),
                "claim_ms_p90": percentile(samples, 0.9),
                "candidate_query_us_median": query_us,
                "candidate_query_plan": plan,
            }
        )
    return {"sizes": results, "repeats": args.repeats}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--sync", default=None, help="synchronous URL option (default: the store's, NORMAL)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(asyncio.run(main(parse_args())))
