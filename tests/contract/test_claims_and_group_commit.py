"""Claims that do not care about the backlog, claims of several runs at once, and checkpoints of
concurrent runs that share commits -- on both backends.

* With 10^5 runs pending, a claim reads the few runs it takes through the ``runs_active`` index,
  in creation order, without scanning or sorting the backlog (PostgreSQL: the executed plan's
  row counts; SQLite: the plan, and the virtual machine's work, the same at 10^3 and 10^5).
* Separate processes claiming several runs per claim at the same time never get the same run, and
  a concurrency key still lets only its oldest run out.
* Checkpoints and completions written at the same time (PostgreSQL sends them as one statement)
  are each fenced on their own run: a stale generation loses its own write only; a scheduled
  run's completion keeps its schedule's state (failures reset, last success) in the same write.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from durably_sched.store.base import RunRecord, Store
from tests.backends import Backend
from tests.helpers import until

from .test_store_contract import JOB, checkpoint, claim_one, create, create_many, log_line, new_run

BACKLOG = 100_000


async def _fill_pending(backend: Backend, count: int, start: int = 0) -> None:
    """``count`` pending runs of JOB, older than any the test creates through the store, in one
    set-based statement."""
    if backend.name == "sqlite":
        conn = sqlite3.connect(backend.path)  # type: ignore[attr-defined]
        try:
            with conn:
                conn.execute(
                    "WITH RECURSIVE g(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM g WHERE n < ?) "
                    "INSERT INTO runs (id, job_name, status, input, created_at, updated_at) "
                    "SELECT 'backlog-' || n, ?, 'pending', '{}', 0, 0 FROM g",
                    (start, start + count - 1, JOB),
                )
        finally:
            conn.close()
        return
    conn = await backend.admin()  # type: ignore[attr-defined]
    await conn.execute(
        "INSERT INTO runs (id, job_name, status, input) "
        "SELECT 'backlog-' || g, $3, 'pending', '{}' FROM generate_series($1::int, $2::int) g",
        start,
        start + count - 1,
        JOB,
    )
    await conn.execute("ANALYZE runs")


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


async def test_a_claim_reads_only_what_it_takes_of_a_backlog_of_100k(backend: Backend, store: Store) -> None:
    if backend.name == "sqlite":
        await _sqlite_claim_work_is_flat(backend, store)
        return
    from durably_sched.store._pg_sql import CLAIM_ONE_STATEMENT

    await _fill_pending(backend, BACKLOG)
    conn = await backend.admin()  # type: ignore[attr-defined]
    tr = conn.transaction()
    await tr.start()
    try:  # the plan as executed (it claims: rolled back after)
        sql = CLAIM_ONE_STATEMENT.format(only="", limit=10)
        rows = await conn.fetch("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, [JOB], "w", 30.0)
    finally:
        await tr.rollback()
    nodes = _nodes(json.loads(rows[0][0])[0]["Plan"])
    scans = [n for n in nodes if n.get("Relation Name") == "runs"]
    assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), scans
    assert not [n for n in nodes if n["Node Type"] == "Sort"], nodes
    candidates = [n for n in scans if n.get("Index Name") == "runs_active"]
    assert candidates, scans
    assert all(n["Actual Rows"] * n["Actual Loops"] <= 10 for n in candidates), candidates
    claimed = await store.claim("w", [JOB], 10, 30)
    assert [r.id for r in claimed] == [f"backlog-{i}" for i in range(10)]  # the oldest, in order
    await _batches_read_runs_by_id(conn, claimed)


async def _batches_read_runs_by_id(conn: Any, claimed: list[RunRecord]) -> None:
    """The group-commit statements find each run by its id (never a walk of the held runs)."""
    from durably_sched.store._pg_sql import CHECKPOINT_BATCH, COMPLETE_BATCH

    ids, gens = [r.id for r in claimed], [r.generation for r in claimed]
    at = [datetime.now(UTC)] * len(ids)
    no_logs: list[list[Any]] = [[], [], [], [], [], []]
    for sql, args in (
        (
            CHECKPOINT_BATCH,
            [ids, gens, ["s"] * len(ids), [0] * len(ids), ["1"] * len(ids), at, at, [], *no_logs],
        ),
        (COMPLETE_BATCH, [ids, gens, ["1"] * len(ids), *no_logs]),
    ):
        rows = await conn.fetch("EXPLAIN (FORMAT JSON) " + sql, *args)
        nodes = _nodes(json.loads(rows[0][0])[0]["Plan"])
        scans = [n for n in nodes if n.get("Relation Name") == "runs" and "Scan" in n["Node Type"]]
        assert scans, sql
        for scan in scans:
            assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan
            assert ".id = " in scan.get("Index Cond", "") or "(id = " in scan.get("Index Cond", ""), scan


async def _sqlite_claim_work_is_flat(backend: Backend, store: Store) -> None:
    writer: sqlite3.Connection = store.writer.connection  # type: ignore[attr-defined]
    ticks = 0

    def tick() -> int:
        nonlocal ticks
        ticks += 1
        return 0

    async def claim_work(first: int) -> int:
        nonlocal ticks
        ticks = 0
        statements: list[str] = []
        writer.set_progress_handler(tick, 50)  # one tick per 50 virtual machine instructions
        writer.set_trace_callback(statements.append)
        try:
            claimed = await store.claim("w", [JOB], 10, 30)
        finally:
            writer.set_progress_handler(None, 0)
            writer.set_trace_callback(None)
        assert [r.id for r in claimed] == [f"backlog-{i}" for i in range(first, first + 10)]
        reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        check = sqlite3.connect(backend.path)  # type: ignore[attr-defined]
        try:
            for sql in reads:
                plan = " | ".join(str(row[-1]) for row in check.execute(f"EXPLAIN QUERY PLAN {sql}"))
                assert "runs_active" in plan and "TEMP B-TREE" not in plan, plan
        finally:
            check.close()
        return ticks

    await _fill_pending(backend, 1_000)
    small = await claim_work(0)
    await _fill_pending(backend, BACKLOG - 1_000, start=1_000)
    large = await claim_work(10)
    # The same work whatever the backlog (a scan of the backlog would be ~100x more).
    assert large <= small * 1.5 + 20, (small, large)


CLAIMER = textwrap.dedent(
    """
    import asyncio, json, sys
    from durably_sched.store import open_store

    async def main(url, name):
        store = open_store(url)
        await store.connect()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        claimed, empty = [], 0
        while empty < 3:
            batch = await store.claim(name, ["job"], 4, 60)
            empty = 0 if batch else empty + 1
            claimed.extend(r.id for r in batch)
        print(json.dumps(claimed), flush=True)
        await store.close()

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_processes_claiming_several_at_once_never_share_a_run_and_keys_hold(
    backend: Backend, store: Store
) -> None:
    keyed: dict[str, list[RunRecord]] = {}
    plain: list[RunRecord] = []
    for i in range(80):  # interleaved: keyed runs are among the candidates of every claim
        if i % 3 == 0:
            key = f"k{i % 5}"
            [(run, _)] = await store.create_runs([new_run(ckey=key)])
            keyed.setdefault(key, []).append(run)
        else:
            plain.append(await create(store))
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLAIMER,
            backend.url,
            f"proc{n}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line.strip() == b"ready", line
        for proc in procs:  # all connected: start them together
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        outputs = [await asyncio.wait_for(proc.communicate(), 60) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    claimed: list[str] = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        claimed.extend(json.loads(out.decode().strip().splitlines()[-1]))
    assert len(claimed) == len(set(claimed))  # never the same run twice
    # Every run without a key, and of each key only its oldest run (the others wait for it).
    expected = {r.id for r in plain} | {runs[0].id for runs in keyed.values()}
    assert set(claimed) == expected


async def test_concurrent_checkpoints_are_each_fenced_on_their_own_run(
    backend: Backend, store: Store
) -> None:
    await create_many(store, 12)
    runs = await store.claim("w1", [JOB], 12, 30)
    assert len(runs) == 12
    # One run changed hands: its old holder's checkpoint must be refused, and only it.
    stale = runs[5]
    await backend.expire_lease(stale.id)
    fresh = await claim_one(store, "w2")
    assert fresh.id == stale.id and fresh.generation == stale.generation + 1
    cps = [
        checkpoint(run, "s", logs=[log_line(f"line of {run.id}", "s")] if i % 2 else ())
        for i, run in enumerate(runs)
    ]
    results = await asyncio.gather(*(store.checkpoint(cp) for cp in cps))
    assert results == ["lost" if run.id == stale.id else "ok" for run in runs]
    if backend.name == "postgres":  # the eleven that waited for the first went as one statement
        assert store._checkpoints.batches == 1  # type: ignore[attr-defined]
    for i, run in enumerate(runs):
        record = await store.get_run(run.id)
        steps = await store.get_steps(run.id)
        logs = await store.get_logs(run.id)
        if run.id == stale.id:
            assert record is not None and record.step_count == 0 and steps == [] and logs == []
            continue
        assert record is not None and record.step_count == 1
        assert [(s.name, s.output_json) for s in steps] == [("s", cps[i].output_json)]
        assert [lg.message for lg in logs] == ([f"line of {run.id}"] if i % 2 else [])
    # The next step of each run goes on as usual (the step counter counted each once).
    more = await asyncio.gather(*(store.checkpoint(checkpoint(r, "t", 1)) for r in runs if r.id != stale.id))
    assert set(more) == {"ok"}
    assert uuid.UUID(runs[0].id)  # ids made by the store's callers, untouched


async def test_concurrent_completions_are_each_fenced_and_keep_schedule_states(
    backend: Backend, store: Store
) -> None:
    labels = {"schedule": "nightly"}
    await store.create_runs([new_run(labels=labels) for _ in range(10)])
    runs = await store.claim("w1", [JOB], 10, 30)
    # The schedule has a failure on record; a completion resets the count.
    assert await store.fail_run(runs[0].id, runs[0].generation, "boom", None) == "ok"
    state = await store.get_schedule_state("nightly")
    assert state is not None and state.consecutive_failures == 1
    stale = runs[4]
    await backend.expire_lease(stale.id)
    assert (await claim_one(store, "w2")).id == stale.id
    rest = runs[1:]
    results = await asyncio.gather(
        *(
            store.complete_run(r.id, r.generation, {"i": i}, [log_line(f"done {i}")] if i % 2 else ())
            for i, r in enumerate(rest)
        )
    )
    assert results == ["lost" if r.id == stale.id else "ok" for r in rest]
    if backend.name == "postgres":  # the eight that waited for the first went as one statement
        assert store._completions.batches == 1  # type: ignore[attr-defined]
    for i, r in enumerate(rest):
        record = await store.get_run(r.id)
        assert record is not None
        logs = [lg.message for lg in await store.get_logs(r.id)]
        if r.id == stale.id:
            assert record.status == "running" and record.output is None and logs == []
        else:
            assert record.status == "completed" and record.output == {"i": i}
            assert logs == ([f"done {i}"] if i % 2 else [])
    state = await store.get_schedule_state("nightly")
    assert state is not None and state.consecutive_failures == 0
    newest = max(
        record.completed_at
        for record in [await store.get_run(r.id) for r in rest if r.id != stale.id]
        if record is not None and record.completed_at is not None
    )
    assert state.last_success_at == newest


async def test_after_a_burst_of_scheduled_runs_a_claim_still_reads_only_what_it_takes(
    backend: Backend, store: Store
) -> None:
    """A minute's burst of scheduled runs (each keyed by its schedule, as `overlap: queue` makes
    them) on a table the planner last saw small: the store refreshes the statistics itself, so
    the claim keeps walking runs_active in order instead of reading and sorting the whole burst
    (store/_pg_statistics.py)."""
    if backend.name == "sqlite":
        pytest.skip("SQLite plans by its fixed rules; PostgreSQL plans by statistics")
    from durably_sched.store._pg_sql import CLAIM_ONE_STATEMENT
    from durably_sched.store._pg_statistics import BURST
    from durably_sched.store.base import Fire

    conn = await backend.admin()  # type: ignore[attr-defined]
    await conn.execute("ANALYZE runs")  # what the planner knows: an empty table
    at = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    fires = [
        Fire(
            schedule=f"s{i}",
            fire_time=at,
            run=new_run(
                key=f"schedule:s{i}:2030-01-01T12:00:00Z", ckey=f"schedule:s{i}", labels={"schedule": f"s{i}"}
            ),
        )
        for i in range(BURST * 4)
    ]
    results = await store.fire_many(fires)
    assert [r.outcome for r in results] == ["triggered"] * len(fires)

    async def plan() -> list[dict[str, Any]]:
        tr = conn.transaction()
        await tr.start()
        try:
            sql = CLAIM_ONE_STATEMENT.format(only="", limit=4)
            rows = await conn.fetch("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, [JOB], "w", 30.0)
        finally:
            await tr.rollback()
        return _nodes(json.loads(rows[0][0])[0]["Plan"])

    async def walks_in_order() -> bool:
        nodes = await plan()
        scans = [
            n
            for n in nodes
            # the candidates' scan (not the key check's, nor the update's by primary key)
            if n.get("Relation Name") == "runs"
            and "Scan" in n["Node Type"]
            and n.get("Index Name") not in ("runs_concurrency_active", "runs_pkey")
        ]
        return not [n for n in nodes if n["Node Type"] == "Sort"] and all(
            n.get("Index Name") == "runs_active" and n["Actual Rows"] * n["Actual Loops"] <= 4 for n in scans
        )

    await until(walks_in_order, 20, "the claim to walk runs_active after the burst")
    claimed = await store.claim("w", [JOB], 4, 30)
    assert [r.concurrency_key for r in claimed] == [f"schedule:s{i}" for i in range(4)]
