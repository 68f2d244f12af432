"""The SQLite store's hot queries stay on indexes however much history the runs table holds.

What users rely on: a worker's claim, the concurrency-key check, ``runs list`` filters and purge cost
the same with a million finished runs as with a thousand (bench/claim_history.py measures it).

The statements checked are the ones the store really runs: a trace callback on the store's writer and
reader connections records every statement while a claim, list_runs, purge and a fire execute, and
each is then given to EXPLAIN QUERY PLAN on the same database file. (sqlite3 hands the trace callback
the statement with its parameters filled in; the indexes' partial WHERE clauses test only literals
written in the SQL and ``IS NOT NULL``, which ``=`` implies, so filling in values changes no index
choice here.)
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from durably_sched.store.base import Fire, NewRun, RunQuery
from durably_sched.store.sqlite import SqliteStore

RUNS_ACCESS = re.compile(r"^(SCAN|SEARCH) (?:runs|r|c)\b(.*)$")  # runs, or its aliases in list queries
ACTIVE_ONLY_INDEXES = ("runs_active", "runs_concurrency_active", "runs_schedule_active")
HISTORY = 3000


@dataclass
class Traced:
    store: SqliteStore
    path: Path
    statements: list[str]

    def matching(self, pattern: str) -> list[str]:
        found = [s for s in self.statements if re.search(pattern, s, re.S)]
        if not found:  # not an AssertionError: the xfail markers below expect only those
            raise LookupError(f"no statement matching {pattern!r} was run; the store's SQL changed shape?")
        return found

    def plan(self, sql: str) -> list[str]:
        """The lines of ``EXPLAIN QUERY PLAN sql`` on the store's database."""
        conn = sqlite3.connect(self.path)
        try:
            return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        finally:
            conn.close()

    def runs_access(self, sql: str) -> list[str]:
        """How the plan of ``sql`` reads the runs table: the SCAN/SEARCH lines about ``runs``."""
        details = self.plan(sql)
        return [d for d in details if RUNS_ACCESS.match(d)] + [d for d in details if "TEMP B-TREE" in d]


def seed_history(path: Path, count: int) -> None:
    """Finished runs of the job the tests claim, as an old database would hold them."""
    base = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    rows = []
    for i in range(count):
        schedule = f"nightly-{i % 7}" if i % 2 else None
        status = ("completed", "failed", "cancelled")[i % 3]
        rows.append(
            (
                str(uuid.UUID(int=i + 1)),
                "report",
                status,
                json.dumps({"schedule": schedule} if schedule else {}),
                schedule,
                base + i,
                base + i + 1,
                base + i + 2,
                base + i + 2,
            )
        )
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO runs (id, job_name, status, input, labels, schedule_name, generation, created_at, "
            "started_at, completed_at, updated_at) VALUES (?, ?, ?, '{}', ?, ?, 1, ?, ?, ?, ?)",
            rows,
        )
    conn.close()


@pytest.fixture
async def traced(tmp_path: Path) -> AsyncIterator[Traced]:
    path = tmp_path / "plans.db"
    store = SqliteStore(f"sqlite:///{path}")
    await store.connect()
    await store.migrate()
    seed_history(path, HISTORY)
    statements: list[str] = []
    # The store's own connections: every statement it prepares passes through these callbacks.
    assert store.writer.connection is not None
    store.writer.connection.set_trace_callback(statements.append)
    await store._reader.set_trace_callback(statements.append)  # type: ignore[union-attr]
    try:
        yield Traced(store, path, statements)
    finally:
        await store.close()


async def exercise(t: Traced) -> None:
    """A claim (with keyed runs, so the key check runs), the list filters, a purge and a fire."""
    store = t.store
    await store.create_runs(
        [
            NewRun(id=str(uuid.uuid4()), job_name="report", input={}),
            NewRun(
                id=str(uuid.uuid4()),
                job_name="report",
                input={},
                concurrency_key="tenant-1",
                labels={"schedule": "nightly-1"},
            ),
            NewRun(id=str(uuid.uuid4()), job_name="report", input={}, concurrency_key="tenant-1"),
        ]
    )
    claimed = await store.claim("worker-1", ["report", "other"], 10, 30.0)
    assert len(claimed) == 2, "the second run of key tenant-1 must wait for the first"
    await store.list_runs(RunQuery(statuses=("failed",)))
    await store.list_runs(RunQuery(job_name="report"))
    await store.list_runs(RunQuery(schedule="nightly-3"))
    assert str(uuid.UUID(int=7)) in await store.find_run_ids(str(uuid.UUID(int=7))[:30], 11)
    await store.purge_runs(datetime(2024, 1, 1, tzinfo=UTC) + timedelta(milliseconds=HISTORY // 2), 100)
    await store.fire(
        Fire(
            schedule="nightly-1",
            fire_time=datetime(2031, 1, 1, tzinfo=UTC),
            run=NewRun(id=str(uuid.uuid4()), job_name="report", input={}, labels={"schedule": "nightly-1"}),
            skip_if_active=True,
        )
    )
    # Per tick and per metrics scrape: the paused and failing schedules, the newest run per schedule.
    await store.get_schedule_states(attention_only=True)
    await store.last_run_times()


def uses_index(access: list[str]) -> bool:
    """Every read of runs is an index search, or a scan of an index that holds only active runs."""
    reads = [a for a in access if RUNS_ACCESS.match(a)]
    return bool(reads) and all(
        re.match(r"SEARCH (runs|r|c) USING", a) is not None
        or any(f"INDEX {name}" in a for name in ACTIVE_ONLY_INDEXES)
        for a in reads
    )


RUNS = r"FROM runs (?:INDEXED BY \w+ |NOT INDEXED )?WHERE"
CLAIM = rf"^SELECT seq, concurrency_key, worker_id {RUNS} .*status IN \('pending', 'running'\)"
KEY_CHECK = rf"^SELECT 1 {RUNS} concurrency_key = "
LIST_BY = r"^SELECT r\.seq AS seq, r\.id, .* FROM runs AS r INDEXED BY \w+ WHERE r\.{} = "
PURGE = rf"^SELECT id {RUNS} status IN \('completed', 'failed', 'cancelled'\)"
SKIP_CHECK = rf"^SELECT 1 {RUNS} schedule_name = "
PREFIX = rf"^SELECT id {RUNS} id >= "


async def test_no_statement_reads_the_whole_runs_table(traced: Traced) -> None:
    await exercise(traced)
    checked = 0
    for sql in traced.statements:
        if not re.match(r"\s*(SELECT|UPDATE|DELETE|INSERT|WITH)\b", sql, re.I):
            continue
        for access in traced.runs_access(sql):
            assert not re.fullmatch(r"SCAN runs( USING (COVERING )?INDEX \w+)?", access) or any(
                f"INDEX {name}" in access for name in ACTIVE_ONLY_INDEXES
            ), f"full scan of runs in:\n{sql}\nplan: {access}"
            checked += 1
    assert checked >= 8


async def test_claim_and_concurrency_check_use_indexes(traced: Traced) -> None:
    await exercise(traced)
    for sql in traced.matching(CLAIM):
        assert uses_index(traced.runs_access(sql)), (sql, traced.runs_access(sql))
    for sql in traced.matching(KEY_CHECK):
        access = traced.runs_access(sql)
        assert any("runs_concurrency_active" in a for a in access), (sql, access)


@pytest.mark.parametrize(
    ("column", "index"),
    [("status", "runs_status"), ("job_name", "runs_job"), ("schedule_name", "runs_schedule")],
)
async def test_list_runs_filters_use_their_index(traced: Traced, column: str, index: str) -> None:
    await exercise(traced)
    for sql in traced.matching(LIST_BY.format(column)):
        access = traced.runs_access(sql)
        assert uses_index(access) and any(f"INDEX {index} " in a for a in access), (sql, access)
        assert not any("TEMP B-TREE" in a for a in access), f"sorts every matching run: {access}"


async def test_purge_uses_an_index(traced: Traced) -> None:
    await exercise(traced)
    for sql in traced.matching(PURGE):
        assert uses_index(traced.runs_access(sql)), (sql, traced.runs_access(sql))


# The three below pin what makes the cost independent of history, which "uses an index" alone does
# not: an index on a column that finished runs share (job, status, schedule) is still an index, but
# the query then walks every finished run with that value.
async def test_claim_reads_only_active_runs(traced: Traced) -> None:
    await exercise(traced)
    for sql in traced.matching(CLAIM):
        access = traced.runs_access(sql)
        assert any("INDEX runs_active" in a for a in access), (sql, access)


async def test_purge_walks_finished_runs_in_completion_order(traced: Traced) -> None:
    await exercise(traced)
    for sql in traced.matching(PURGE):
        access = traced.runs_access(sql)
        assert any("INDEX runs_finished" in a for a in access), (sql, access)
        assert not any("TEMP B-TREE" in a for a in access), (sql, access)


async def test_skip_if_active_check_reads_only_active_runs(traced: Traced) -> None:
    await exercise(traced)
    for sql in traced.matching(SKIP_CHECK):
        access = traced.runs_access(sql)
        assert any("INDEX runs_schedule_active" in a for a in access), (sql, access)


async def test_a_run_id_prefix_is_a_range_of_the_id_index(traced: Traced) -> None:
    """`runs show 33fc6f80`: one search of the unique id index, never a scan, and no sort."""
    await exercise(traced)
    for sql in traced.matching(PREFIX):
        access = traced.runs_access(sql)
        assert access and all(a.startswith("SEARCH runs USING COVERING INDEX") for a in access), (sql, access)


# --- the run list of the HTTP API and dashboard: every filter, paging and the capped total ---------------

LIST_QUERIES = {
    "one status": RunQuery(statuses=("failed",)),
    "several jobs": RunQuery(job_names=("report", "other")),
    "jobs x statuses": RunQuery(job_names=("report", "other"), statuses=("failed", "completed")),
    "a label": RunQuery(labels={"schedule": "nightly-3"}),
    "two labels and a status": RunQuery(labels={"schedule": "nightly-3", "team": "a"}, statuses=("failed",)),
    "schedule and status": RunQuery(schedule="nightly-3", statuses=("failed",)),
    "created after": RunQuery(created_after=datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=2)),
    "created before, with a job": RunQuery(
        job_name="report", before_created=datetime(2025, 1, 1, tzinfo=UTC)
    ),
    "job, status, created after": RunQuery(
        job_name="report", statuses=("completed",), created_after=datetime(2024, 1, 1, tzinfo=UTC)
    ),
}
LIST_WALK = r"^SELECT (\* FROM \(SELECT \* FROM \(SELECT )?(r\.seq AS seq, r\.id|\(SELECT count\(\*\))"


def plan_rows(path: Path, sql: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    finally:
        conn.close()


@pytest.mark.parametrize("name", list(LIST_QUERIES))
async def test_run_list_pages_and_counts_walk_indexes_only(traced: Traced, name: str) -> None:
    """Every read of runs and run_labels in a page or a count is an index search (no scan of the
    table, whatever the history), and the only sorts are the merges of per-(job, status) walks,
    which hold at most limit + 1 rows each."""
    conn = sqlite3.connect(traced.path)
    with conn:
        conn.execute("DELETE FROM run_labels")  # seeded rows bypassed the store: index their labels
        conn.execute("INSERT INTO run_labels SELECT j.key, j.value, r.seq FROM runs r, json_each(r.labels) j")
    conn.close()
    query = LIST_QUERIES[name]
    page = await traced.store.list_runs_page(query)
    await traced.store.count_runs(query)
    statements = traced.matching(LIST_WALK)
    assert len(statements) == 2
    walks = len(query.job_names or [None]) * len(query.statuses or [None]) if not query.labels else 1
    for sql in statements:
        plan = plan_rows(traced.path, sql)
        reads = [d for d in plan if re.match(r"(SCAN|SEARCH) (r|l|x|c)\b", d)]
        assert reads and all(d.startswith("SEARCH") for d in reads), (name, sql, plan)
        sorts = [d for d in plan if "TEMP B-TREE" in d]
        assert len(sorts) <= (walks if walks > 1 else 0), (name, plan)
    assert len(page.runs) <= query.limit


@pytest.mark.parametrize(
    "query",
    [RunQuery(limit=20), RunQuery(limit=20, before_created=datetime(2025, 1, 1, tzinfo=UTC), cursor="2500")],
)
async def test_an_unfiltered_page_and_total_walk_the_primary_key_and_stop_early(
    traced: Traced, query: RunQuery
) -> None:
    """No filter (or only an upper time bound): the newest runs by primary key, stopping after the
    page (and the count after the cap); the only 'SCAN' is that ordered, limited walk. (An upper
    time bound alone skips the runs created after it: docs/design.md, "Run lists at any size".)"""
    page = await traced.store.list_runs_page(query)
    total, capped = await traced.store.count_runs(query, cap=1000)
    assert len(page.runs) == 20 and page.next_cursor is not None
    assert (total, capped) == (1000, True)
    for sql in traced.matching(LIST_WALK):
        assert re.search(r"ORDER BY r\.seq DESC LIMIT \d+(\) AS c0\))?$", sql), sql


LAST_RUN = r"^SELECT c.schedule, \(SELECT runs.created_at FROM runs WHERE runs.schedule_name = "
ATTENTION = r"^SELECT schedule, paused, .* FROM schedule_states WHERE paused = 1 OR consecutive_failures > 0"


async def test_the_newest_run_of_each_schedule_is_one_index_lookup(traced: Traced) -> None:
    """Metrics read it at every scrape: a walk back from the newest run, never the schedule's history."""
    await exercise(traced)
    for sql in traced.matching(LAST_RUN):
        access = traced.runs_access(sql)
        assert any("INDEX runs_schedule (schedule_name=?)" in a for a in access), (sql, access)
        assert not any("TEMP B-TREE" in a for a in access), (sql, access)


async def test_the_per_tick_state_read_uses_the_index_of_paused_and_failing_schedules(traced: Traced) -> None:
    await exercise(traced)
    [sql] = traced.matching(ATTENTION)
    details = traced.plan(sql)
    assert details == ["SCAN schedule_states USING INDEX schedule_states_attention"], details


COALESCE = rf"^SELECT id, job_name, .* {RUNS} concurrency_key = .* AND started_at IS NULL"


async def test_coalescing_looks_up_only_active_runs_of_its_key(traced: Traced) -> None:
    """A coalescing trigger's look-up of the run to join costs the same with any history."""
    import dataclasses

    base = NewRun(id="", job_name="report", input={}, concurrency_key="tenant-9", coalesce=True)
    first = await traced.store.create_runs([dataclasses.replace(base, id=str(uuid.uuid4()))])
    again = await traced.store.create_runs([dataclasses.replace(base, id=str(uuid.uuid4()))])
    assert [d for _, d in first + again] == ["created", "coalesced"]
    for sql in traced.matching(COALESCE):
        access = traced.runs_access(sql)
        assert any("INDEX runs_concurrency_active" in a for a in access), (sql, access)
        assert not any("TEMP B-TREE" in a for a in access), (sql, access)


STREAM_READ = r"^SELECT src, run_id, pos, name, .* FROM \(SELECT \* FROM \(SELECT 'e' AS src"


async def test_a_run_stream_read_finds_new_steps_by_their_index_without_sorting_the_run(
    traced: Traced,
) -> None:
    """A live stream reads a run's steps past the last one it sent, every tick: the read walks the
    steps_order index from there (schema v13), so its cost is the new steps, not the run's length."""
    from durably_sched.store.run_events import StreamPosition

    [run] = await traced.store.create_runs([NewRun(id=str(uuid.uuid4()), job_name="report", input={})])
    await traced.store.get_run_streams({run[0].id: StreamPosition(0, 3, 0)}, 50)
    [sql] = traced.matching(STREAM_READ)
    details = traced.plan(sql)
    by_index = "SEARCH steps USING INDEX steps_order (run_id=? AND idx>?)"
    assert any(d.startswith(by_index) for d in details), details
    assert not any("TEMP B-TREE" in d for d in details), details
