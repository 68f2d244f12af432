"""Run lists for the HTTP API and dashboard, on every backend: filters, paging, capped totals, the
run feed's poll, and labels kept in step with runs (created, deleted, purged, migrated).

What users rely on: a page shows exactly the runs that match, newest first; walking the pages with
``next`` visits every matching run once; the total says how many (or "at least 10,000"); a label
filter finds runs made before the upgrade that added the labels index.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from durably_sched.store._common import SCHEMA_VERSION
from durably_sched.store.base import NewRun, RunQuery, RunRecord, Store
from tests.backends import Backend, PostgresBackend, SqliteBackend

from .test_store_contract import checkpoint, claim_one, create


async def make(store: Store, job: str, n: int = 1, **labels: str) -> list[RunRecord]:
    runs = [NewRun(id=str(uuid.uuid4()), job_name=job, input={}, labels=dict(labels)) for _ in range(n)]
    return [record for record, _ in await store.create_runs(runs)]


async def all_pages(store: Store, query: RunQuery) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.list_runs_page(RunQuery(**{**_fields(query), "cursor": cursor}))
        ids += [r.id for r in page.runs]
        assert len(page.runs) <= query.limit
        if page.next_cursor is None:
            return ids
        assert len(page.runs) == query.limit  # a page is short only when it is the last
        cursor = page.next_cursor


def _fields(query: RunQuery) -> dict[str, object]:
    return {name: getattr(query, name) for name in RunQuery.__dataclass_fields__}


async def test_filters_combine_and_pages_cover_every_match_once(store: Store) -> None:
    a = await make(store, "a", 7, team="ops")
    b = await make(store, "b", 5, team="data")
    c = await make(store, "c", 3, team="ops", tier="gold")
    await store.cancel_run(a[0].id)
    await store.cancel_run(b[1].id)
    newest_first = [r.id for r in reversed(a + b + c)]

    everything = await all_pages(store, RunQuery(limit=4))
    assert everything == newest_first

    jobs = await all_pages(store, RunQuery(job_names=("a", "c"), limit=3))
    assert jobs == [i for i in newest_first if i in {r.id for r in a + c}]

    cancelled = await all_pages(store, RunQuery(statuses=("cancelled",), job_names=("a", "b"), limit=1))
    assert cancelled == [b[1].id, a[0].id]

    pending_ab = await all_pages(
        store, RunQuery(statuses=("pending", "running"), job_names=("a", "b"), limit=2)
    )
    assert pending_ab == [i for i in newest_first if i in {r.id for r in a[1:] + b[:1] + b[2:]}]

    ops = await all_pages(store, RunQuery(labels={"team": "ops"}, limit=2))
    assert ops == [i for i in newest_first if i in {r.id for r in a + c}]
    gold_ops = await all_pages(store, RunQuery(labels={"team": "ops", "tier": "gold"}, limit=2))
    assert gold_ops == [r.id for r in reversed(c)]
    assert await all_pages(store, RunQuery(labels={"team": "ops"}, statuses=("cancelled",))) == [a[0].id]
    assert await all_pages(store, RunQuery(labels={"team": "nobody"})) == []

    # job_name (the old single filter) and job_names together: both must hold.
    assert await all_pages(store, RunQuery(job_name="a", job_names=("b",))) == []
    assert len(await all_pages(store, RunQuery(job_name="a", job_names=("a", "b")))) == 7


async def test_schedule_and_time_bounds(backend: Backend, store: Store) -> None:
    old = await make(store, "a", 3, schedule="nightly")
    await asyncio.sleep(0.02)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.02)
    new = await make(store, "a", 2, schedule="nightly")
    other = await make(store, "a", 1, schedule="hourly")
    assert all(r.created_at < middle for r in old) and all(r.created_at >= middle for r in new)

    after = await all_pages(store, RunQuery(created_after=middle, limit=2))
    assert after == [r.id for r in reversed(new + other)]
    before = await all_pages(store, RunQuery(before_created=middle, limit=2))
    assert before == [r.id for r in reversed(old)]
    scheduled_after = await all_pages(store, RunQuery(schedule="nightly", created_after=middle))
    assert scheduled_after == [r.id for r in reversed(new)]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await all_pages(store, RunQuery(created_after=future)) == []
    assert await store.count_runs(RunQuery(created_after=future)) == (0, False)
    window = RunQuery(created_after=old[0].created_at, before_created=new[0].created_at)
    assert await all_pages(store, window) == [r.id for r in reversed(old)]


async def test_counts_are_exact_up_to_the_cap(store: Store) -> None:
    await make(store, "a", 12, team="ops")
    await make(store, "b", 3)
    assert await store.count_runs(RunQuery()) == (15, False)
    assert await store.count_runs(RunQuery(job_names=("a", "b"), statuses=("pending",))) == (15, False)
    assert await store.count_runs(RunQuery(labels={"team": "ops"})) == (12, False)
    assert await store.count_runs(RunQuery(), cap=10) == (10, True)
    assert await store.count_runs(RunQuery(job_names=("a", "b")), cap=14) == (14, True)
    assert await store.count_runs(RunQuery(job_names=("a", "b")), cap=15) == (15, False)
    assert await store.count_runs(RunQuery(job_name="a", job_names=("b",))) == (0, False)


async def test_a_bad_cursor_is_refused(store: Store) -> None:
    await make(store, "a", 2)
    for bad in ("abc", "-1", "1e5", "9" * 30, ""):
        with pytest.raises(ValueError, match="invalid cursor"):
            await store.list_runs_page(RunQuery(cursor=bad))


async def test_labels_go_with_their_runs(backend: Backend, store: Store) -> None:
    kept = await make(store, "a", 2, team="ops")
    gone = await make(store, "a", 2, team="ops")
    assert await store.delete_run(gone[0].id)
    await store.cancel_run(gone[1].id)
    await backend.set_completed_at(gone[1].id, datetime(2020, 1, 1, tzinfo=UTC))
    assert await store.purge_runs(datetime(2021, 1, 1, tzinfo=UTC)) == 1
    assert await all_pages(store, RunQuery(labels={"team": "ops"})) == [r.id for r in reversed(kept)]
    assert await store.count_runs(RunQuery(labels={"team": "ops"})) == (2, False)
    # An idempotent second trigger does not add the labels twice.
    key = NewRun(id=str(uuid.uuid4()), job_name="a", input={}, idempotency_key="k", labels={"team": "ops"})
    again = NewRun(id=str(uuid.uuid4()), job_name="a", input={}, idempotency_key="k", labels={"team": "ops"})
    await store.create_runs([key])
    [(_, disposition)] = await store.create_runs([again])
    assert disposition == "idempotent"
    assert await store.count_runs(RunQuery(labels={"team": "ops"})) == (3, False)


async def _label_rows(backend: Backend, key: str) -> int:
    if isinstance(backend, SqliteBackend):
        return int(backend._execute("SELECT count(*) FROM run_labels WHERE key = ?", (key,))[0][0])
    assert isinstance(backend, PostgresBackend)
    return int(await (await backend.admin()).fetchval("SELECT count(*) FROM run_labels WHERE key = $1", key))


async def test_the_schedule_label_is_the_schedule_column(backend: Backend, store: Store) -> None:
    """A scheduled run's ``schedule`` label has no rows in the labels index (schema v15: a burst of
    fire times writes two index entries less per run); a filter on it finds the same runs as the
    schedule filter, combines with the other filters, and finds a run triggered by hand with that
    label as well."""
    nightly = await make(store, "a", 3, schedule="nightly", team="ops")
    hourly = await make(store, "a", 2, schedule="hourly")
    by_hand = await make(store, "b", 1, schedule="nightly")
    others = await make(store, "a", 2, team="ops")
    assert await _label_rows(backend, "schedule") == 0
    assert await _label_rows(backend, "team") == 5
    expected = [r.id for r in reversed(nightly + by_hand)]
    assert await all_pages(store, RunQuery(labels={"schedule": "nightly"}, limit=2)) == expected
    assert await all_pages(store, RunQuery(schedule="nightly", limit=2)) == expected
    assert await store.count_runs(RunQuery(labels={"schedule": "nightly"})) == (4, False)
    both = RunQuery(labels={"schedule": "nightly", "team": "ops"}, limit=2)
    assert await all_pages(store, both) == [r.id for r in reversed(nightly)]
    assert await store.count_runs(both) == (3, False)
    assert await all_pages(store, RunQuery(labels={"schedule": "nightly"}, job_name="b")) == [by_hand[0].id]
    assert await all_pages(store, RunQuery(labels={"schedule": "hourly"}, schedule="hourly")) == [
        r.id for r in reversed(hourly)
    ]
    # The label and the schedule filter disagree: nothing can match.
    assert await all_pages(store, RunQuery(labels={"schedule": "nightly"}, schedule="hourly")) == []
    assert await store.count_runs(RunQuery(labels={"schedule": "nightly"}, schedule="hourly")) == (0, False)
    ops = [r.id for r in reversed(nightly + others)]
    assert await all_pages(store, RunQuery(labels={"team": "ops"})) == ops
    # The record still carries the label.
    record = await store.get_run(nightly[0].id)
    assert record is not None and record.labels == {"schedule": "nightly", "team": "ops"}


async def test_get_runs_by_id(store: Store) -> None:
    runs = await make(store, "a", 3)
    found = await store.get_runs_by_id([runs[0].id, runs[2].id, "missing"])
    assert set(found) == {runs[0].id, runs[2].id}
    assert found[runs[2].id] == runs[2]
    assert await store.get_runs_by_id([]) == {}


async def test_poll_run_changes_sees_new_active_and_finished_runs(backend: Backend, store: Store) -> None:
    await make(store, "a", 2)
    start = await store.poll_run_changes(None, None)
    assert start.created == [] and start.finished == [] and len(start.active) == 2
    new = await make(store, "job", 3)
    since = datetime.now(UTC) - timedelta(seconds=5)
    changes = await store.poll_run_changes(start.last_seq, since)
    assert [r.id for r in changes.created] == [r.id for r in new]
    assert {r.id for r in changes.active} >= {r.id for r in new}
    assert changes.finished == []
    running = await claim_one(store)
    assert (await store.checkpoint(checkpoint(running, "s", 0))) == "ok"
    assert (await store.complete_run(running.id, running.generation, {"ok": True})) == "ok"
    later = await store.poll_run_changes(changes.last_seq, since)
    assert later.created == [] and later.last_seq == changes.last_seq
    assert [r.id for r in later.finished] == [running.id]
    assert later.finished[0].status == "completed" and later.finished[0].step_count == 1
    assert running.id not in {r.id for r in later.active}
    assert len((await store.poll_run_changes(None, None, active_limit=2)).active) == 2


async def test_an_old_database_gets_its_labels_indexed_on_upgrade(backend: Backend) -> None:
    """A database made by the previous release (schema 1) keeps every run, and label filters find
    the runs it already had."""
    store = backend.new_store()
    await store.connect()
    await _migrate_to_version_1(backend, store)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    await _insert_v1_runs(backend, ids)
    assert await store.migrate() == SCHEMA_VERSION
    assert await all_pages(store, RunQuery(labels={"schedule": "nightly"})) == [ids[2], ids[0]]
    assert await store.count_runs(RunQuery(labels={"team": "ops"})) == (3, False)
    assert await create(store, labels={"team": "ops"})
    assert await store.count_runs(RunQuery(labels={"team": "ops"})) == (4, False)


async def _migrate_to_version_1(backend: Backend, store: Store) -> None:
    from durably_sched.store._common import load_migrations

    first = load_migrations("sqlite" if isinstance(backend, SqliteBackend) else "postgres")[0][1]
    if isinstance(backend, SqliteBackend):
        import sqlite3

        conn = sqlite3.connect(backend.path)
        conn.executescript(first)
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
        conn.close()
        return
    assert isinstance(backend, PostgresBackend)
    import asyncpg

    conn = await asyncpg.connect(backend.database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{backend.schema}"')
        await conn.execute(f'SET search_path TO "{backend.schema}"')
        await conn.execute(first)
        await conn.execute("CREATE TABLE durably_meta (key text PRIMARY KEY, value text NOT NULL)")
        await conn.execute("INSERT INTO durably_meta VALUES ('schema_version', '1')")
    finally:
        await conn.close()


async def _insert_v1_runs(backend: Backend, ids: list[str]) -> None:
    labels = [
        '{"schedule": "nightly", "team": "ops"}',
        '{"team": "ops"}',
        '{"team": "ops", "schedule": "nightly"}',
    ]
    if isinstance(backend, SqliteBackend):
        for run_id, text in zip(ids, labels, strict=True):
            backend._execute(
                "INSERT INTO runs (id, job_name, status, input, labels, created_at, updated_at) "
                "VALUES (?, 'job', 'pending', '{}', ?, 1, 1)",
                (run_id, text),
            )
        return
    assert isinstance(backend, PostgresBackend)
    conn = await backend.admin()
    for run_id, text in zip(ids, labels, strict=True):
        await conn.execute(
            "INSERT INTO runs (id, job_name, status, input, labels) VALUES ($1, 'job', 'pending', '{}', $2)",
            run_id,
            text,
        )
