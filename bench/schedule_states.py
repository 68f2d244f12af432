"""What the schedule states (pause, failure counts) cost: ``python -m bench.schedule_states``.

Three figures, on SQLite (a fresh file, WAL, synchronous=NORMAL) and on PostgreSQL (a fresh database
on ``--postgres``, skipped when unreachable):

* **finishing a run**: the statement that marks a run completed or failed (as complete_run and
  fail_run send it, one commit each), for runs of a schedule and runs of none, with the trigger that
  keeps ``schedule_states`` (migration 0002) and with it dropped, in alternating rounds. The
  difference is what counting failures in the database costs each finished scheduled run; runs of
  no schedule skip the trigger in its WHEN clause.
* **the per-tick read**: ``get_schedule_states(attention_only=True)`` with 1,000 schedules of which
  10 are paused and 5 failing (what every scheduler reads once per tick), next to the read of all
  rows it avoids.
* **the per-scrape read**: ``last_run_times()`` with 1,000 schedules and 20 runs each.

Prints one JSON object per figure (medians of the rounds). About a minute on the 2-core test machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from durably_sched.store import open_store
from durably_sched.store.base import NewRun

from ._pg import default_url, fresh_database, unreachable
from ._util import scratch_dir

SCHEDULES = 1000
FINISH_RUNS = 5000
PG_FINISH_RUNS = 1500
ROUNDS = 7


async def _timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """Median seconds of one call."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


FINISH_SQL = (
    "UPDATE runs SET status = {p1}, completed_at = {p2}, updated_at = {p2} "
    "WHERE id = {p3} AND generation = 1 AND status = 'running' RETURNING status"
)


def _sqlite_finish(
    path: Path, trigger: bool, scheduled: bool, trigger_name: str = "runs_schedule_finished"
) -> float:
    """Microseconds per finishing UPDATE (one transaction each), on a migrated SQLite file;
    without ``trigger``, the trigger ``trigger_name`` is dropped first."""
    from durably_sched.store._common import load_migrations
    from durably_sched.store.sqlite import _split_sql

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for _, sql in load_migrations("sqlite"):
            for statement in _split_sql(sql):
                conn.execute(statement)
        if not trigger:
            conn.execute(f"DROP TRIGGER {trigger_name}")
        conn.executemany(
            "INSERT INTO runs (id, job_name, status, input, labels, schedule_name, generation, created_at, "
            "updated_at) VALUES (?, 'j', 'running', '{}', '{}', ?, 1, 0, 0)",
            [(str(i), f"s{i % 10}" if scheduled else None) for i in range(FINISH_RUNS)],
        )
        sql = FINISH_SQL.format(p1="?", p2="?", p3="?")
        start = time.perf_counter()
        for i in range(FINISH_RUNS):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql, ("failed" if i % 3 == 0 else "completed", i, i, str(i))).fetchone()
            conn.execute("COMMIT")
        return (time.perf_counter() - start) / FINISH_RUNS * 1e6
    finally:
        conn.close()


async def _pg_finish(
    url: str, trigger: bool, scheduled: bool, trigger_name: str = "runs_schedule_finished"
) -> float:
    """Microseconds per finishing UPDATE (autocommit), on a freshly migrated PostgreSQL database;
    without ``trigger``, the trigger ``trigger_name`` is dropped first."""
    import asyncpg

    from durably_sched.store._common import load_migrations

    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            for _, sql in load_migrations("postgres"):
                await conn.execute(sql)
            if not trigger:
                await conn.execute(f"DROP TRIGGER {trigger_name} ON runs")
        await conn.executemany(
            "INSERT INTO runs (id, job_name, status, input, labels, schedule_name, generation) "
            "VALUES ($1, 'j', 'running', '{}', '{}', $2, 1)",
            [(str(i), f"s{i % 10}" if scheduled else None) for i in range(PG_FINISH_RUNS)],
        )
        sql = FINISH_SQL.format(p1="$1", p2="now()", p3="$2")
        start = time.perf_counter()
        for i in range(PG_FINISH_RUNS):
            await conn.fetchval(sql, "failed" if i % 3 == 0 else "completed", str(i))
        return (time.perf_counter() - start) / PG_FINISH_RUNS * 1e6
    finally:
        await conn.close()


async def _reads(url: str) -> dict[str, float]:
    store = open_store(url)
    await store.connect()
    await store.migrate()
    try:
        t0 = datetime(2030, 1, 1, tzinfo=UTC)
        job = "report"
        names = [f"s{i:04d}" for i in range(SCHEDULES)]
        for start in range(0, SCHEDULES, 100):
            await asyncio.gather(*(store.advance_cursor(n, t0) for n in names[start : start + 100]))
        # One finished run per schedule (a state row each: 5 failing), then 19 more runs each.
        await store.create_runs(
            [NewRun(id=str(uuid.uuid4()), job_name=job, input={}, labels={"schedule": n}) for n in names]
        )
        for _ in range(SCHEDULES):
            [held] = await store.claim("w", [job], 1, 30)
            if "s0010" <= held.labels["schedule"] < "s0015":
                await store.fail_run(held.id, held.generation, "x", None)
            else:
                await store.complete_run(held.id, held.generation, None)
        for start in range(0, SCHEDULES, 100):
            await store.create_runs(
                [
                    NewRun(id=str(uuid.uuid4()), job_name=job, input={}, labels={"schedule": n})
                    for n in names[start : start + 100]
                    for _ in range(19)
                ]
            )
        for i in range(10):
            await store.pause_schedule(f"s{i:04d}", reason="bench", by="bench")
        states = await store.get_schedule_states()
        attention = await store.get_schedule_states(attention_only=True)
        assert len(states) >= SCHEDULES - 50 and len(attention) <= 20, (len(states), len(attention))
        return {
            "state_rows": len(states),
            "attention_rows": len(attention),
            "tick_read_ms": await _timed(lambda: store.get_schedule_states(attention_only=True), 200) * 1e3,
            "full_read_ms": await _timed(store.get_schedule_states, 50) * 1e3,
            "last_run_times_ms": await _timed(store.last_run_times, 20) * 1e3,
        }
    finally:
        await store.close()


async def _finish_figures(name: str, measure: Callable[[bool, bool], Awaitable[float]]) -> None:
    results: dict[str, list[float]] = {}
    for _ in range(ROUNDS):  # alternate, so drifting load hits every variant alike
        for scheduled in (True, False):
            for trigger in (True, False):
                kind = "scheduled" if scheduled else "unscheduled"
                key = f"{kind}_{'with' if trigger else 'without'}_trigger"
                results.setdefault(key, []).append(await measure(trigger, scheduled))
    print(
        json.dumps(
            {
                "backend": name,
                "figure": "finishing a run: the UPDATE to completed/failed, one commit each, us",
                **{k: round(statistics.median(v), 1) for k, v in results.items()},
                "rounds": ROUNDS,
            }
        )
    )


async def _backend(
    name: str, make_url: Callable[[], Any], measure: Callable[[bool, bool], Awaitable[float]]
) -> None:
    await _finish_figures(name, measure)
    async with make_url() as url:
        figures = await _reads(url)
    print(json.dumps({"backend": name, "figure": "reads", **{k: round(v, 3) for k, v in figures.items()}}))


class _SqliteUrl:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def __aenter__(self) -> str:
        return f"sqlite:///{self.folder / f'{uuid.uuid4().hex[:8]}.db'}"

    async def __aexit__(self, *exc: object) -> None:
        return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=default_url(), help="a database URL on the PostgreSQL server")
    args = parser.parse_args()
    folder = scratch_dir("schedule-states")

    async def sqlite_finish(trigger: bool, scheduled: bool) -> float:
        return _sqlite_finish(folder / f"{uuid.uuid4().hex[:8]}.db", trigger, scheduled)

    await _backend("sqlite", lambda: _SqliteUrl(folder), sqlite_finish)
    problem = await unreachable(args.postgres)
    if problem is not None:
        print(json.dumps({"backend": "postgres", "skipped": problem}))
        return

    async def pg_finish(trigger: bool, scheduled: bool) -> float:
        async with fresh_database(args.postgres, "bench_states") as url:
            return await _pg_finish(url, trigger, scheduled)

    await _backend("postgres", lambda: fresh_database(args.postgres, "bench_states"), pg_finish)


if __name__ == "__main__":
    asyncio.run(main())
