"""``Store.fire_many``: many fire times in one transaction, each decided as ``fire`` decides one
(the fire sequence of store/rules.py: deduplicate, record a run-less outcome, skip while a run of
the schedule is active, else insert), on both backends."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from datetime import datetime

import pytest

from durably_sched.errors import InvalidArgumentError
from durably_sched.store.base import Fire, RunQuery, Store
from tests.backends import Backend, PostgresBackend, SqliteBackend
from tests.contract.test_store_contract import claim_one, fire, new_run, slot


async def test_a_batch_decides_each_fire_time_in_order(store: Store) -> None:
    results = await store.fire_many(
        [
            fire("s", 0),
            fire("s", 1, skip_if_active=True),  # the run of slot 0, created just before, is pending
            fire("s", 0),  # the same slot again, in the same batch
            fire("s", 2, run=False, outcome_without_run="missed"),
            fire("t", 1, skip_if_active=True),  # another schedule's runs do not count
        ]
    )
    assert [r.outcome for r in results] == ["triggered", "skipped", "deduplicated", "missed", "triggered"]
    first, _, again, _, other = results
    assert first.run is not None and again.run is not None and again.run.id == first.run.id
    assert other.run is not None and other.run.labels == {"schedule": "t"}
    assert [(r.fire_time, r.outcome) for r in await store.list_fire_records("s")] == [
        (slot(2), "missed"),
        (slot(1), "skipped"),
        (slot(0), "triggered"),
    ]
    assert await store.get_cursors() == {"s": slot(2), "t": slot(1)}
    assert len(await store.list_runs(RunQuery())) == 2
    # Later batches see what earlier ones decided.
    held = await claim_one(store)
    assert held.id == first.run.id
    assert [r.outcome for r in await store.fire_many([fire("s", 3, skip_if_active=True), fire("s", 1)])] == [
        "skipped",
        "deduplicated",
    ]
    assert await store.fire_many([]) == []


async def test_the_runs_a_batch_returns_are_the_runs_as_stored(store: Store) -> None:
    # PostgreSQL returns only ids and creation times of the runs it inserts and builds their records
    # from the values sent (rows.new_run_record): every field must still read back the same.
    made = fire("s", 0)
    assert made.run is not None
    run = dataclasses.replace(
        made.run,
        input={"a": [1, 2.5, None], "b": {"c": "é"}},
        concurrency_key="schedule:s",
        labels={"schedule": "s", "scheduled_for": "x"},
        retry_policy={"attempts": 3},
        timeout=12.5,
        schedule_version=7,
    )
    [result] = await store.fire_many([dataclasses.replace(made, run=run)])
    [(created, disposition)] = await store.create_runs([new_run(labels={"k": "v"}, input={"n": [1]})])
    assert result.outcome == "triggered" and disposition == "created"
    for returned in (result.run, created):
        assert returned is not None
        assert returned == await store.get_run(returned.id)


async def test_a_batch_is_atomic(store: Store) -> None:
    naive = Fire(schedule="s", fire_time=datetime(2030, 1, 1, 12, 5), run=None)
    with pytest.raises(InvalidArgumentError, match="naive datetime"):
        await store.fire_many([fire("s", 0), fire("s", 1, run=False), naive])
    assert await store.list_fire_records("s") == []
    assert await store.get_cursors() == {}
    assert await store.list_runs(RunQuery()) == []


async def test_concurrent_batches_over_the_same_schedules_fire_each_slot_once(
    backend: Backend, store: Store
) -> None:
    stores = [store] + [await backend.open_store(migrate=False) for _ in range(3)]
    schedules = ["a", "b", "c"]

    def batch(seed: int) -> list[Fire]:
        order = schedules[:]
        random.Random(seed).shuffle(order)  # batches lock their schedules in any order they list them
        return [fire(name, minute) for minute in range(4) for name in order]

    results = await asyncio.gather(*(s.fire_many(batch(i)) for i, s in enumerate(stores)))
    outcomes = Counter(r.outcome for batch_results in results for r in batch_results)
    assert outcomes == {"triggered": 12, "deduplicated": 36}
    run_of: dict[tuple[str, str], set[str]] = {}
    for batch_results, fires in zip(results, (batch(i) for i in range(len(stores))), strict=True):
        for result, planned in zip(batch_results, fires, strict=True):
            assert result.run is not None
            run_of.setdefault((planned.schedule, planned.fire_time.isoformat()), set()).add(result.run.id)
    assert len(run_of) == 12 and all(len(ids) == 1 for ids in run_of.values())
    for name in schedules:
        assert len(await store.list_runs(RunQuery(schedule=name))) == 4
        assert (await store.get_cursors())[name] == slot(3)


async def test_a_tick_of_many_schedules_is_one_batch_and_a_second_scheduler_writes_nothing(
    backend: Backend, store: Store
) -> None:
    """The scheduler's batch: 300 schedules' fire times in one call; a second scheduler that fires
    the same batch (an overlap of owners) gets every fire time deduplicated to the same run and
    writes no row (PostgreSQL: no row has a new version)."""
    names = [f"s{i:03d}" for i in range(300)]
    batch = [fire(name, 1) for name in names] + [fire(name, 2, run=False) for name in names[:10]]
    results = await store.fire_many(batch)
    assert Counter(r.outcome for r in results) == {"triggered": 300, "missed": 10}
    assert len(await store.list_runs(RunQuery(limit=1000))) == 300
    cursors = await store.get_cursors()
    assert cursors == {name: slot(2) if name in names[:10] else slot(1) for name in names}
    versions = await _row_versions(backend)
    other = await backend.open_store(migrate=False)
    again = await other.fire_many([fire(name, 1) for name in names])
    assert {r.outcome for r in again} == {"deduplicated"}
    assert [r.run.id for r in again if r.run] == [r.run.id for r in results[:300] if r.run]
    assert await _row_versions(backend) == versions
    assert await store.get_cursors() == cursors


async def _row_versions(backend: Backend) -> object:
    """PostgreSQL: the transaction that wrote each row of the fire sequence's tables (xmin), so a
    write of an unchanged value shows; SQLite: the rows themselves."""
    tables = ("schedule_cursors", "fire_records", "runs", "run_labels")
    if isinstance(backend, PostgresBackend):
        conn = await backend.admin()
        return [sorted(r[0] for r in await conn.fetch(f"SELECT xmin::text FROM {t}")) for t in tables]
    assert isinstance(backend, SqliteBackend)
    return [sorted(map(tuple, backend._execute(f"SELECT * FROM {t}"))) for t in tables]
