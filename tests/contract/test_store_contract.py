"""The store contract (durably_sched/store/base.py), written once, run against every backend.

Each test states what a user (or the worker, scheduler and CLI built on the store) relies on.
Concurrency tests use several store instances -- separate connections, and separate processes --
on one database, because that is how several workers share work.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from durably_sched.errors import SchemaVersionError
from durably_sched.store._common import SCHEMA_VERSION, newer_schema_message
from durably_sched.store.base import (
    Checkpoint,
    Fire,
    NewLog,
    NewRun,
    Progress,
    RunQuery,
    RunRecord,
    Store,
)
from tests.backends import Backend

JOB = "job"


def new_run(
    job: str = JOB,
    *,
    key: str | None = None,
    ckey: str | None = None,
    labels: dict[str, str] | None = None,
    input: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> NewRun:
    return NewRun(
        id=run_id or str(uuid.uuid4()),
        job_name=job,
        input={"n": 1} if input is None else input,
        idempotency_key=key,
        concurrency_key=ckey,
        labels=labels or {},
    )


async def create(store: Store, **options: Any) -> RunRecord:
    [(record, disposition)] = await store.create_runs([new_run(**options)])
    assert disposition == "created"
    return record


async def create_many(store: Store, n: int, **options: Any) -> list[RunRecord]:
    return [record for record, _ in await store.create_runs([new_run(**options) for _ in range(n)])]


async def claim_one(store: Store, worker: str = "w1", lease: float = 30.0) -> RunRecord:
    [run] = await store.claim(worker, [JOB], 1, lease)
    return run


def log_line(message: str, step: str | None = None, level: str = "info") -> NewLog:
    return NewLog(level=level, message=message, step_name=step, data={"m": message}, created_at=now())


def now() -> datetime:
    return datetime.now(UTC)


def checkpoint(
    run: RunRecord, name: str, index: int = 0, *, generation: int | None = None, **kw: Any
) -> Checkpoint:
    started = now()
    return Checkpoint(
        run_id=run.id,
        generation=run.generation if generation is None else generation,
        index=index,
        name=name,
        output_json=kw.pop("output_json", json.dumps({"step": name})),
        started_at=started,
        completed_at=started + timedelta(milliseconds=5),
        **kw,
    )


def is_utc(value: datetime | None) -> bool:
    return value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def slot(minute: int) -> datetime:
    return datetime(2030, 1, 1, 12, minute, tzinfo=UTC)


def fire(schedule: str, minute: int, *, run: bool = True, **options: Any) -> Fire:
    when = slot(minute)
    new = None
    if run:
        key = f"schedule:{schedule}:{when.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        new = new_run(key=key, labels={"schedule": schedule})
    return Fire(schedule=schedule, fire_time=when, run=new, **options)


# -- schema and lifecycle ----------------------------------------------------------------------------


async def test_migrate_twice_is_a_no_op_that_keeps_data(store: Store) -> None:
    run = await create(store)
    assert await store.migrate() == SCHEMA_VERSION
    await store.check_schema()
    assert (await store.get_run(run.id)) == run


async def test_check_schema_on_an_unmigrated_database_raises_until_migrated(backend: Backend) -> None:
    fresh = await backend.open_store(backend.fresh_url(), migrate=False)
    with pytest.raises(SchemaVersionError, match="older"):
        await fresh.check_schema()
    assert await fresh.migrate() == SCHEMA_VERSION
    await fresh.check_schema()


async def test_a_newer_schema_version_is_refused(backend: Backend, store: Store) -> None:
    await backend.set_schema_version(SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError) as raised:
        await store.check_schema()
    assert str(raised.value) == newer_schema_message(SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError, match="newer"):
        await store.migrate()


async def test_two_stores_migrating_at_once_both_succeed(backend: Backend) -> None:
    url = backend.fresh_url()
    first = await backend.open_store(url, migrate=False)
    second = await backend.open_store(url, migrate=False)
    assert list(await asyncio.gather(first.migrate(), second.migrate())) == [SCHEMA_VERSION] * 2
    await first.check_schema()
    await create(second)


async def test_ping(store: Store) -> None:
    await store.ping()


# -- creating runs ---------------------------------------------------------------------------------


async def test_a_new_run_is_pending_with_what_was_given(store: Store) -> None:
    labels = {"schedule": "nightly", "team": "data"}
    [(run, disposition)] = await store.create_runs(
        [new_run(key="k1", ckey="c1", labels=labels, input={"file": "a.png", "size": 3})]
    )
    assert disposition == "created"
    assert (run.job_name, run.status, run.input, run.labels) == (
        JOB,
        "pending",
        {"file": "a.png", "size": 3},
        labels,
    )
    assert (run.idempotency_key, run.concurrency_key) == ("k1", "c1")
    assert (run.generation, run.attempt, run.step_count) == (0, 0, 0)
    assert (run.output, run.error, run.failed_step_name, run.worker_id) == (None, None, None, None)
    assert (run.lease_expires_at, run.progress, run.started_at, run.completed_at) == (None, None, None, None)
    assert is_utc(run.created_at) and is_utc(run.updated_at)
    assert abs((run.created_at - now()).total_seconds()) < 5
    assert await store.get_run(run.id) == run


async def test_json_values_come_back_exactly(store: Store) -> None:
    value = {
        "z": 1,
        "a": [1, 2.5, None, True, "ünïcödé ✓"],
        "nested": {"b": {"c": []}, "a": {}},
        "nul": "a\u0000b",
        "big": 2**62,
        "small": 1e-7,
        "neg": -0.125,
    }
    run = await create(store, input=value, labels={"b": "2", "a": "1"})
    for record in (run, await store.get_run(run.id)):
        assert record is not None
        assert record.input == value
        assert list(record.input) == list(value)  # key order survives, as on SQLite
        assert list(record.labels) == ["b", "a"]


async def test_same_idempotency_key_returns_the_existing_run(store: Store) -> None:
    first = await create(store, key="once", input={"v": 1})
    [(again, disposition)] = await store.create_runs([new_run(key="once", input={"v": 2})])
    assert disposition == "idempotent"
    assert again == first
    assert again.input == {"v": 1}
    assert len(await store.list_runs(RunQuery())) == 1


async def test_idempotency_keys_are_per_job_and_null_never_collides(store: Store) -> None:
    a = await create(store, job="a", key="same")
    b = await create(store, job="b", key="same")
    assert a.id != b.id
    unkeyed = await store.create_runs([new_run(), new_run()])
    assert [d for _, d in unkeyed] == ["created", "created"]
    assert len(await store.list_runs(RunQuery())) == 4


async def test_a_batch_keeps_its_order_and_resolves_duplicates_inside_it(store: Store) -> None:
    batch = [new_run(input={"i": i}, key="dup" if i in (1, 3) else None) for i in range(5)]
    created = await store.create_runs(batch)
    assert [d for _, d in created] == ["created", "created", "created", "idempotent", "created"]
    assert created[3][0].id == created[1][0].id == batch[1].id
    claimed = await store.claim("w", [JOB], 10, 30)
    assert [r.input["i"] for r in claimed] == [0, 1, 2, 4]  # creation order


async def test_reusing_a_run_id_returns_that_run(store: Store) -> None:
    run = await create(store, run_id="fixed-id", input={"v": 1})
    [(again, disposition)] = await store.create_runs([new_run(run_id="fixed-id", input={"v": 2})])
    assert (again, disposition) == (run, "idempotent")


async def test_concurrent_creates_with_one_key_make_one_run(backend: Backend, store: Store) -> None:
    stores = [store] + [await backend.open_store(migrate=False) for _ in range(4)]
    results = await asyncio.gather(*(s.create_runs([new_run(key="race")]) for s in stores))
    dispositions = sorted(d for [(_, d)] in results)
    assert dispositions == ["created"] + ["idempotent"] * 4
    assert len({r.id for [(r, _)] in results}) == 1


# -- queries -------------------------------------------------------------------------------------------


async def test_get_run_and_statuses(store: Store) -> None:
    a = await create(store)
    b = await create(store)
    await store.cancel_run(b.id)
    assert await store.get_run("missing") is None
    assert await store.get_run_statuses([a.id, b.id, "missing"]) == {a.id: "pending", b.id: "cancelled"}
    assert await store.get_run_statuses([]) == {}


async def test_list_runs_filters_newest_first(store: Store) -> None:
    nightly = [await create(store, labels={"schedule": "nightly"}) for _ in range(3)]
    other = await create(store, job="other")
    hourly = await create(store, labels={"schedule": "hourly"})
    running = await claim_one(store)  # the oldest run of JOB: nightly[0]
    assert running.id == nightly[0].id

    everything = await store.list_runs(RunQuery())
    assert [r.id for r in everything] == [hourly.id, other.id, *(r.id for r in reversed(nightly))]
    assert [r.id for r in await store.list_runs(RunQuery(limit=2))] == [hourly.id, other.id]
    assert [r.id for r in await store.list_runs(RunQuery(statuses=["running"]))] == [nightly[0].id]
    assert {r.id for r in await store.list_runs(RunQuery(statuses=["running", "pending"]))} == {
        r.id for r in everything
    }
    assert [r.id for r in await store.list_runs(RunQuery(job_name="other"))] == [other.id]
    assert [r.id for r in await store.list_runs(RunQuery(schedule="nightly"))] == [
        r.id for r in reversed(nightly)
    ]
    assert await store.list_runs(RunQuery(schedule="nightly", statuses=["completed"])) == []
    cut = nightly[2].created_at
    older = await store.list_runs(RunQuery(before_created=cut))
    assert [r.id for r in older] == [r.id for r in everything if r.created_at < cut]


async def test_find_run_ids_by_prefix(store: Store) -> None:
    """Short ids (`runs show 33fc6f80`): every id starting with the prefix, in id order, up to the
    limit; a prefix is matched literally and case-sensitively (no LIKE wildcards)."""
    ids = ["33fc6f80-aaaa", "33fc6f80-bbbb", "33fc6f9a-cccc", "33FC6F80-dddd", "33fc6f8", "3%_x", "3a_y"]
    await store.create_runs([new_run(run_id=i) for i in ids])
    assert await store.find_run_ids("33fc6f80", 10) == ["33fc6f80-aaaa", "33fc6f80-bbbb"]
    assert await store.find_run_ids("33fc6f80", 1) == ["33fc6f80-aaaa"]
    assert await store.find_run_ids("33fc6f", 10) == [
        "33fc6f8",
        "33fc6f80-aaaa",
        "33fc6f80-bbbb",
        "33fc6f9a-cccc",
    ]
    assert await store.find_run_ids("33FC6F", 10) == ["33FC6F80-dddd"]
    assert await store.find_run_ids("33fc6f80-bbbb", 10) == ["33fc6f80-bbbb"]  # a whole id
    assert await store.find_run_ids("3%", 10) == ["3%_x"]
    assert await store.find_run_ids("3_", 10) == []
    assert await store.find_run_ids("nothing", 10) == []
    assert await store.find_run_ids("\U0010ffff", 10) == []  # no upper bound: reads to the end


async def test_count_runs_by_status(store: Store) -> None:
    await create_many(store, 3)
    await create(store, job="other")
    await claim_one(store)
    assert await store.count_runs_by_status() == {
        (JOB, "pending"): 2,
        (JOB, "running"): 1,
        ("other", "pending"): 1,
    }


# -- claims ------------------------------------------------------------------------------------------


async def test_claim_takes_runs_in_creation_order_and_marks_them_running(store: Store) -> None:
    runs = await create_many(store, 5)
    before = now()
    claimed = await store.claim("worker-a", [JOB], 3, 30)
    assert [r.id for r in claimed] == [r.id for r in runs[:3]]
    for run in claimed:
        assert (run.status, run.generation, run.attempt, run.worker_id) == ("running", 1, 1, "worker-a")
        assert run.lease_expires_at is not None and is_utc(run.lease_expires_at)
        assert timedelta(seconds=25) < run.lease_expires_at - before < timedelta(seconds=35)
        assert is_utc(run.started_at)
        assert await store.get_run(run.id) == run
    assert [r.id for r in await store.claim("worker-b", [JOB], 10, 30)] == [r.id for r in runs[3:]]
    assert await store.claim("worker-b", [JOB], 10, 30) == []


async def test_claim_only_takes_runs_of_the_given_jobs(store: Store) -> None:
    mine = await create(store, job="mine")
    await create(store, job="unregistered")
    assert [r.id for r in await store.claim("w", ["mine", "absent"], 10, 30)] == [mine.id]
    assert await store.claim("w", ["mine"], 10, 30) == []
    assert await store.claim("w", [], 10, 30) == []
    await create(store, job="mine")
    assert await store.claim("w", ["mine"], 0, 30) == []


async def test_claim_with_run_ids_takes_only_those(store: Store) -> None:
    runs = await create_many(store, 3)
    claimed = await store.claim("w", [JOB], 10, 30, run_ids=[runs[2].id])
    assert [r.id for r in claimed] == [runs[2].id]
    assert await store.claim("w", [JOB], 10, 30, run_ids=[]) == []
    assert await store.claim("w", [JOB], 10, 30, run_ids=[runs[2].id]) == []


async def test_keyed_and_unkeyed_runs_are_claimed_together_oldest_first(store: Store) -> None:
    keyed = await create(store, ckey="K")
    plain = await create(store)
    keyed_later = await create(store, ckey="K")
    plain_later = await create(store)
    assert [r.id for r in await store.claim("w", [JOB], 1, 30)] == [keyed.id]
    assert [r.id for r in await store.claim("w", [JOB], 10, 30)] == [plain.id, plain_later.id]
    assert keyed_later.id not in [r.id for r in await store.claim("w", [JOB], 10, 30)]


def assert_freshly_claimed(run: RunRecord, worker: str, before: datetime) -> None:
    assert (run.status, run.generation, run.attempt, run.worker_id) == ("running", 1, 1, worker)
    assert run.lease_expires_at is not None and is_utc(run.lease_expires_at)
    assert timedelta(seconds=25) < run.lease_expires_at - before < timedelta(seconds=35)
    assert is_utc(run.started_at) and run.previous_worker_id is None


async def test_create_and_claim_leaves_a_run_claimed_or_claimable(backend: Backend, store: Store) -> None:
    """A trigger of a process whose worker has a free slot may get its run already claimed (one
    write on PostgreSQL); either way the run ends up exactly as create + claim would leave it."""
    before = now()
    run, disposition = await store.create_and_claim(new_run(labels={"team": "ops"}), "w", [JOB], 30)
    assert disposition == "created"
    if backend.name == "postgres":
        assert run.status == "running"
    if run.status == "pending":  # a backend that does not claim in the insert
        run = await claim_one(store, "w")
    assert_freshly_claimed(run, "w", before)
    assert await store.get_run(run.id) == run
    assert await store.claim("w2", [JOB], 10, 30) == []
    # The holder's writes are fenced on the claimed generation, like after any claim.
    assert await store.checkpoint(checkpoint(run, "s1")) == "ok"
    assert await store.checkpoint(checkpoint(run, "s2", 1, generation=run.generation + 1)) == "lost"
    assert await store.complete_run(run.id, run.generation, {"done": True}) == "ok"
    [listed] = await store.list_runs(RunQuery(labels={"team": "ops"}))
    assert (listed.id, listed.status, listed.step_count) == (run.id, "completed", 1)


async def test_create_and_claim_lets_older_waiting_runs_go_first(store: Store) -> None:
    older = await create(store)
    await create(store, job="other")  # not one of the worker's jobs: no reason to wait
    run, _ = await store.create_and_claim(new_run(), "w", [JOB], 30)
    assert run.status == "pending"
    assert [r.id for r in await store.claim("w", [JOB], 10, 30)] == [older.id, run.id]
    mine, _ = await store.create_and_claim(new_run(), "w", [JOB], 30)
    if mine.status == "running":
        assert_freshly_claimed(mine, "w", now() - timedelta(seconds=1))


async def test_create_and_claim_never_claims_keyed_coalescing_or_existing_runs(store: Store) -> None:
    keyed, _ = await store.create_and_claim(new_run(ckey="K"), "w", [JOB], 30)
    coalescing = NewRun(id=str(uuid.uuid4()), job_name="j2", input={}, concurrency_key="C", coalesce=True)
    joined, _ = await store.create_and_claim(coalescing, "w", ["j2"], 30)
    assert (keyed.status, joined.status) == ("pending", "pending")
    await store.claim("w", [JOB, "j2"], 10, 30)
    first, _ = await store.create_and_claim(new_run(key="idem"), "w", [JOB], 30)
    if first.status == "pending":
        [first] = await store.claim("w", [JOB], 10, 30)
    again, disposition = await store.create_and_claim(new_run(key="idem"), "w2", [JOB], 30)
    assert disposition == "idempotent"
    assert (again.id, again.generation, again.worker_id) == (first.id, 1, "w")


async def test_a_live_lease_is_not_reclaimed_an_expired_one_is(backend: Backend, store: Store) -> None:
    run = await create(store)
    first = await claim_one(store, "w1")
    assert await store.claim("w2", [JOB], 10, 30) == []
    await backend.expire_lease(run.id)
    second = await claim_one(store, "w2")
    assert second.id == run.id
    assert (second.generation, second.attempt, second.worker_id) == (2, 2, "w2")
    assert second.started_at == first.started_at  # the run started once; it was resumed
    # The first holder is fenced off from now on.
    assert await store.checkpoint(checkpoint(first, "late")) == "lost"


async def test_released_runs_are_pending_again_and_claimable_at_once(store: Store) -> None:
    await create(store)
    held = await claim_one(store, "w1")
    assert await store.release_run(held.id, held.generation) == "ok"
    released = await store.get_run(held.id)
    assert released is not None
    assert (released.status, released.lease_expires_at, released.worker_id) == ("pending", None, None)
    again = await claim_one(store, "w2")
    assert (again.id, again.generation) == (held.id, held.generation + 1)
    assert await store.release_run(held.id, held.generation) == "lost"


# -- concurrency keys ------------------------------------------------------------------------------


async def test_one_run_per_concurrency_key_in_creation_order(store: Store) -> None:
    a1, b1, a2, free, a3 = [await create(store, ckey=k) for k in ("A", "B", "A", None, "A")]
    first = await store.claim("w", [JOB], 10, 30)
    assert [r.id for r in first] == [a1.id, b1.id, free.id]
    assert await store.claim("w", [JOB], 10, 30) == []
    assert await store.complete_run(a1.id, first[0].generation, None) == "ok"
    assert [r.id for r in await store.claim("w", [JOB], 10, 30)] == [a2.id]
    assert await store.claim("w", [JOB], 10, 30) == []
    assert a3.concurrency_key == "A"


async def test_an_older_retried_run_of_a_key_goes_first(store: Store) -> None:
    old = await create(store, ckey="K")
    held = await claim_one(store)
    assert await store.fail_run(old.id, held.generation, "boom", None) == "ok"
    newer = await create(store, ckey="K")
    newest = await create(store, ckey="K")
    running = await claim_one(store)
    assert running.id == newer.id

    await store.retry_run(old.id)  # older than the running one: waits for it, then goes first
    assert await store.claim("w", [JOB], 10, 30) == []
    assert await store.complete_run(newer.id, running.generation, None) == "ok"
    assert [r.id for r in await store.claim("w", [JOB], 10, 30)] == [old.id]
    assert newest.id not in {r.id for r in await store.list_runs(RunQuery(statuses=["running"]))}


async def test_an_expired_keyed_run_is_resumed_before_newer_runs_of_its_key(
    backend: Backend, store: Store
) -> None:
    first = await create(store, ckey="K")
    await create(store, ckey="K")
    await claim_one(store, "w1")
    await backend.expire_lease(first.id)
    resumed = await store.claim("w2", [JOB], 10, 30)
    assert [(r.id, r.generation) for r in resumed] == [(first.id, 2)]


async def test_a_cancelled_run_no_longer_holds_its_key(store: Store) -> None:
    first = await create(store, ckey="K")
    second = await create(store, ckey="K")
    await claim_one(store)
    await store.cancel_run(first.id)
    assert [r.id for r in await store.claim("w", [JOB], 10, 30)] == [second.id]


@pytest.mark.parametrize("blocked", [3, 100])
async def test_runs_without_a_key_are_never_held_back_by_blocked_keyed_runs(
    request: pytest.FixtureRequest, backend: Backend, store: Store, blocked: int
) -> None:
    await store.create_runs([new_run(ckey="K") for _ in range(blocked + 1)])
    free = await create(store)
    keyed = await claim_one(store, "w1")
    assert keyed.concurrency_key == "K"
    assert [r.id for r in await store.claim("w2", [JOB], 1, 30)] == [free.id]


# -- fenced writes --------------------------------------------------------------------------------


async def test_checkpoint_stores_the_step_counts_it_and_writes_its_logs(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    cp = checkpoint(
        run, "fetch", 0, output_json='{"b": 1, "a": [1.50, "x"]}', logs=[log_line("one", "fetch")]
    )
    assert await store.checkpoint(cp) == "ok"
    assert await store.checkpoint(checkpoint(run, "store", 1, logs=[log_line("two", "store")])) == "ok"
    steps = await store.get_steps(run.id)
    assert [(s.name, s.index) for s in steps] == [("fetch", 0), ("store", 1)]
    assert steps[0].output_json == '{"b": 1, "a": [1.50, "x"]}'  # the text exactly as given
    assert abs(steps[0].started_at - cp.started_at) < timedelta(milliseconds=1)
    assert abs(steps[0].duration - 0.005) < 0.002
    assert all(is_utc(s.started_at) and is_utc(s.completed_at) for s in steps)
    record = await store.get_run(run.id)
    assert record is not None and record.step_count == 2
    assert [(lg.message, lg.step_name) for lg in await store.get_logs(run.id)] == [
        ("one", "fetch"),
        ("two", "store"),
    ]


async def test_writes_with_a_stale_generation_are_lost_and_change_nothing(
    backend: Backend, store: Store
) -> None:
    await create(store)
    stale = await claim_one(store, "w1")
    await backend.expire_lease(stale.id)
    fresh = await claim_one(store, "w2")
    assert fresh.generation == stale.generation + 1
    before = await store.get_run(fresh.id)
    g = stale.generation
    assert await store.checkpoint(checkpoint(stale, "s", logs=[log_line("x")])) == "lost"
    assert await store.set_progress(fresh.id, g, Progress(5, 10, "half"), [log_line("x")]) == "lost"
    assert await store.append_logs(fresh.id, g, [log_line("x")]) == "lost"
    assert await store.complete_run(fresh.id, g, {"out": 1}, [log_line("x")]) == "lost"
    assert await store.fail_run(fresh.id, g, "boom", "s", [log_line("x")]) == "lost"
    assert await store.release_run(fresh.id, g) == "lost"
    assert await store.renew_leases([(fresh.id, g)], 60) == {fresh.id: "lost"}
    assert await store.get_run(fresh.id) == before
    assert await store.get_steps(fresh.id) == []
    assert await store.get_logs(fresh.id) == []


async def test_a_step_is_written_once(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    assert await store.checkpoint(checkpoint(run, "s", output_json="1")) == "ok"
    assert await store.checkpoint(checkpoint(run, "s", output_json="2", logs=[log_line("x")])) == "lost"
    assert [s.output_json for s in await store.get_steps(run.id)] == ["1"]
    assert await store.get_logs(run.id) == []
    record = await store.get_run(run.id)
    assert record is not None and record.step_count == 1


async def test_after_cancel_a_checkpoint_is_stored_but_says_cancelled(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    await store.cancel_run(run.id)
    assert await store.checkpoint(checkpoint(run, "last", logs=[log_line("x")])) == "cancelled"
    assert [s.name for s in await store.get_steps(run.id)] == ["last"]
    assert [lg.message for lg in await store.get_logs(run.id)] == ["x"]
    assert await store.set_progress(run.id, run.generation, Progress(1)) == "cancelled"
    assert await store.append_logs(run.id, run.generation, [log_line("y")]) == "cancelled"
    assert await store.renew_leases([(run.id, run.generation)], 60) == {run.id: "cancelled"}


async def test_complete_after_cancel_is_lost_and_the_run_stays_cancelled(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    await store.cancel_run(run.id)
    assert await store.complete_run(run.id, run.generation, {"x": 1}) == "lost"
    assert await store.fail_run(run.id, run.generation, "boom", None) == "lost"
    assert await store.release_run(run.id, run.generation) == "lost"
    record = await store.get_run(run.id)
    assert record is not None and (record.status, record.output, record.error) == ("cancelled", None, None)


async def test_progress_and_logs_are_stored(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    assert await store.set_progress(run.id, run.generation, Progress(3, 10, "three"), [log_line("p")]) == "ok"
    assert (
        await store.append_logs(run.id, run.generation, [log_line("a"), log_line("b", "s", "warn")]) == "ok"
    )
    record = await store.get_run(run.id)
    assert record is not None and record.progress == Progress(3, 10, "three")
    assert await store.set_progress(run.id, run.generation, Progress(4)) == "ok"
    record = await store.get_run(run.id)
    assert record is not None and record.progress == Progress(4, None, None)
    logs = await store.get_logs(run.id)
    assert [(lg.message, lg.step_name, lg.level, lg.data) for lg in logs] == [
        ("p", None, "info", {"m": "p"}),
        ("a", None, "info", {"m": "a"}),
        ("b", "s", "warn", {"m": "b"}),
    ]
    assert all(lg.run_id == run.id and is_utc(lg.created_at) for lg in logs)


async def test_complete_and_fail_finish_the_run(store: Store) -> None:
    await create_many(store, 2)
    a, b = await store.claim("w", [JOB], 2, 30)
    assert await store.complete_run(a.id, a.generation, {"url": "x"}, [log_line("done")]) == "ok"
    assert await store.fail_run(b.id, b.generation, "ValueError: bad", "resize", [log_line("oops")]) == "ok"
    done, failed = await store.get_run(a.id), await store.get_run(b.id)
    assert done is not None and failed is not None
    assert (done.status, done.output, done.lease_expires_at) == ("completed", {"url": "x"}, None)
    assert is_utc(done.completed_at)
    assert (failed.status, failed.error, failed.failed_step_name) == ("failed", "ValueError: bad", "resize")
    assert failed.lease_expires_at is None and is_utc(failed.completed_at)
    assert await store.complete_run(a.id, a.generation, {"url": "y"}) == "lost"
    assert [lg.message for lg in await store.get_logs(a.id)] == ["done"]
    assert [lg.message for lg in await store.get_logs(b.id)] == ["oops"]


async def test_complete_with_a_null_output(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    assert await store.complete_run(run.id, run.generation, None) == "ok"
    record = await store.get_run(run.id)
    assert record is not None and (record.status, record.output) == ("completed", None)


async def test_nul_characters_in_errors_and_messages_do_not_break_writes(store: Store) -> None:
    """A failure that cannot be recorded would be retried forever. (PostgreSQL text cannot hold
    NUL: there it reads back as U+FFFD; SQLite keeps it.)"""
    await create(store)
    run = await claim_one(store)
    assert await store.set_progress(run.id, run.generation, Progress(1, 2, "half\x00way")) == "ok"
    assert await store.append_logs(run.id, run.generation, [log_line("a\x00b")]) == "ok"
    assert await store.fail_run(run.id, run.generation, "ValueError: \x00", None) == "ok"
    record = await store.get_run(run.id)
    assert record is not None and record.status == "failed"
    assert record.error is not None and record.error.replace("\ufffd", "\x00") == "ValueError: \x00"
    assert record.progress is not None and record.progress.message in ("half\x00way", "half\ufffdway")
    [line] = await store.get_logs(run.id)
    assert line.message in ("a\x00b", "a\ufffdb") and line.data == {"m": "a\x00b"}


async def test_renew_leases_reports_each_run(store: Store) -> None:
    await create_many(store, 3)
    held, done, cancelled = await store.claim("w", [JOB], 3, 5)
    await store.complete_run(done.id, done.generation, None)
    await store.cancel_run(cancelled.id)
    leases = [(held.id, held.generation), (done.id, done.generation), (cancelled.id, cancelled.generation)]
    result = await store.renew_leases([*leases, ("missing", 1)], 120)
    assert result == {held.id: "ok", done.id: "lost", cancelled.id: "cancelled", "missing": "lost"}
    renewed, still = await store.get_run(held.id), await store.get_run(cancelled.id)
    assert renewed is not None and renewed.lease_expires_at is not None and held.lease_expires_at is not None
    assert renewed.lease_expires_at - held.lease_expires_at > timedelta(seconds=100)
    assert still is not None and still.lease_expires_at == cancelled.lease_expires_at  # not extended
    assert await store.renew_leases([], 30) == {}


# -- operator actions ------------------------------------------------------------------------------


async def test_cancel_rules(store: Store) -> None:
    pending = await create(store)
    cancelled = await store.cancel_run(pending.id)
    assert cancelled is not None and cancelled.status == "cancelled" and is_utc(cancelled.completed_at)
    await create(store)
    running = await claim_one(store)
    after = await store.cancel_run(running.id)
    assert after is not None and after.status == "cancelled"
    await create(store)
    done = await claim_one(store)
    await store.complete_run(done.id, done.generation, 1)
    unchanged = await store.cancel_run(done.id)
    assert unchanged is not None and unchanged.status == "completed"
    assert await store.cancel_run("missing") is None


async def test_retry_keeps_completed_steps_and_resumes_with_a_new_generation(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    await store.checkpoint(checkpoint(run, "first"))
    await store.fail_run(run.id, run.generation, "boom", "second")
    retried = await store.retry_run(run.id)
    assert retried is not None
    assert (retried.status, retried.error, retried.failed_step_name, retried.completed_at) == (
        "pending",
        None,
        None,
        None,
    )
    assert (retried.step_count, retried.lease_expires_at, retried.worker_id) == (1, None, None)
    assert [s.name for s in await store.get_steps(run.id)] == ["first"]
    again = await claim_one(store)
    assert (again.id, again.generation, again.attempt) == (run.id, run.generation + 1, 2)
    # Only failed and cancelled runs go back to pending.
    unchanged = await store.retry_run(run.id)
    assert unchanged is not None and unchanged.status == "running"
    await store.complete_run(again.id, again.generation, None)
    unchanged = await store.retry_run(run.id)
    assert unchanged is not None and unchanged.status == "completed"
    assert await store.retry_run("missing") is None
    cancelled = await create(store)
    await store.cancel_run(cancelled.id)
    back = await store.retry_run(cancelled.id)
    assert back is not None and back.status == "pending"


async def test_delete_removes_a_run_with_its_steps_and_logs_but_never_a_running_one(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    await store.checkpoint(checkpoint(run, "s", logs=[log_line("x")]))
    assert await store.delete_run(run.id) is False
    assert (await store.get_run(run.id)) is not None
    await store.cancel_run(run.id)
    assert await store.delete_run(run.id) is True
    assert await store.get_run(run.id) is None
    assert await store.get_steps(run.id) == []
    assert await store.get_logs(run.id) == []
    assert await store.delete_run(run.id) is False
    pending = await create(store)
    assert await store.delete_run(pending.id) is True


async def test_purge_removes_only_finished_runs_completed_before_the_cutoff_in_batches(
    backend: Backend, store: Store
) -> None:
    old = [await create(store) for _ in range(5)]
    claimed = await store.claim("w", [JOB], 5, 30)
    for run in claimed:
        await store.checkpoint(checkpoint(run, "s", logs=[log_line("x")]))
        await store.complete_run(run.id, run.generation, None)
    cutoff = now() - timedelta(hours=1)
    for run in old:
        await backend.set_completed_at(run.id, cutoff - timedelta(days=1))
    recent = await create(store)
    held = await claim_one(store)
    await store.fail_run(recent.id, held.generation, "boom", None)  # finished, but after the cutoff
    first, pending = await create(store), await create(store)
    running = await claim_one(store)
    assert running.id == first.id

    assert await store.purge_runs(cutoff, batch_size=2) == 2
    assert await store.purge_runs(cutoff, batch_size=2) == 2
    assert await store.purge_runs(cutoff, batch_size=2) == 1
    assert await store.purge_runs(cutoff, batch_size=2) == 0
    left = {r.id for r in await store.list_runs(RunQuery())}
    assert left == {recent.id, pending.id, running.id}
    for run in old:
        assert await store.get_steps(run.id) == []
        assert await store.get_logs(run.id) == []
    # Pending and running runs are never purged, however old the cutoff.
    assert await store.purge_runs(now() + timedelta(days=1)) == 1
    assert {r.id for r in await store.list_runs(RunQuery())} == {pending.id, running.id}


async def test_get_logs_pages_by_id(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    await store.append_logs(run.id, run.generation, [log_line(f"m{i}") for i in range(7)])
    first = await store.get_logs(run.id, limit=3)
    assert [lg.message for lg in first] == ["m0", "m1", "m2"]
    ids = [lg.id for lg in first]
    assert ids == sorted(ids)
    rest = await store.get_logs(run.id, after_id=ids[-1], limit=100)
    assert [lg.message for lg in rest] == ["m3", "m4", "m5", "m6"]
    assert await store.get_logs(run.id, after_id=rest[-1].id) == []
    assert await store.get_logs("missing") == []


# -- schedules ------------------------------------------------------------------------------------


async def test_a_fire_time_triggers_once_then_deduplicates_to_the_same_run(store: Store) -> None:
    first = await store.fire(fire("nightly", 0))
    assert first.outcome == "triggered" and first.run is not None
    assert first.run.labels == {"schedule": "nightly"}
    again = await store.fire(fire("nightly", 0))  # a new run id, the same slot
    assert again.outcome == "deduplicated"
    assert again.run is not None and again.run.id == first.run.id
    assert len(await store.list_runs(RunQuery(schedule="nightly"))) == 1
    [record] = await store.list_fire_records("nightly")
    assert (record.fire_time, record.outcome, record.run_id) == (slot(0), "triggered", first.run.id)
    assert is_utc(record.fire_time) and is_utc(record.recorded_at)


async def test_the_cursor_only_moves_forward(store: Store) -> None:
    await store.fire(fire("s", 10))
    await store.fire(fire("s", 5))  # a late fire of an earlier slot
    assert await store.get_cursors() == {"s": slot(10)}
    await store.fire(fire("s", 20, advance_cursor=False))  # manual slot trigger / backfill
    assert await store.get_cursors() == {"s": slot(10)}
    assert await store.advance_cursor("s", slot(1)) == slot(10)
    assert await store.advance_cursor("s", slot(30)) == slot(30)
    assert await store.advance_cursor("new", slot(3)) == slot(3)
    cursors = await store.get_cursors()
    assert cursors == {"s": slot(30), "new": slot(3)}
    assert all(is_utc(v) for v in cursors.values())


async def test_skip_if_active_skips_while_a_run_of_the_schedule_is_pending_or_running(store: Store) -> None:
    first = await store.fire(fire("s", 0))
    assert first.run is not None
    skipped = await store.fire(fire("s", 1, skip_if_active=True))
    assert (skipped.outcome, skipped.run) == ("skipped", None)
    held = await claim_one(store)
    assert (await store.fire(fire("s", 2, skip_if_active=True))).outcome == "skipped"
    await store.complete_run(held.id, held.generation, None)
    triggered = await store.fire(fire("s", 3, skip_if_active=True))
    assert triggered.outcome == "triggered"
    # Another schedule's runs do not count.
    assert (await store.fire(fire("other", 3, skip_if_active=True))).outcome == "triggered"
    outcomes = [(r.fire_time, r.outcome) for r in await store.list_fire_records("s")]
    assert outcomes == [
        (slot(3), "triggered"),
        (slot(2), "skipped"),
        (slot(1), "skipped"),
        (slot(0), "triggered"),
    ]
    # The slot is decided: firing it again is deduplicated, not re-evaluated.
    assert (await store.fire(fire("s", 1))).outcome == "deduplicated"


async def test_fire_times_without_a_run_are_recorded(store: Store) -> None:
    missed = await store.fire(fire("s", 0, run=False, outcome_without_run="missed"))
    disabled = await store.fire(fire("s", 1, run=False, outcome_without_run="disabled"))
    assert (missed.outcome, missed.run, disabled.outcome, disabled.run) == ("missed", None, "disabled", None)
    assert [(r.outcome, r.run_id) for r in await store.list_fire_records("s")] == [
        ("disabled", None),
        ("missed", None),
    ]
    assert await store.get_cursors() == {"s": slot(1)}
    assert await store.list_runs(RunQuery()) == []
    again = await store.fire(fire("s", 0))
    assert (again.outcome, again.run) == ("deduplicated", None)


async def test_a_fire_record_prevents_recreating_a_purged_run(store: Store) -> None:
    first = await store.fire(fire("s", 0))
    assert first.run is not None
    run = await claim_one(store)
    await store.complete_run(run.id, run.generation, None)
    assert await store.purge_runs(now() + timedelta(minutes=1)) == 1
    again = await store.fire(fire("s", 0))
    assert (again.outcome, again.run) == ("deduplicated", None)
    assert await store.list_runs(RunQuery()) == []


async def test_a_fire_whose_run_key_exists_points_at_that_run(store: Store) -> None:
    planned = fire("s", 0)
    assert planned.run is not None
    existing = await create(store, key=planned.run.idempotency_key, labels={"schedule": "s"})
    result = await store.fire(planned)
    assert result.outcome == "deduplicated" and result.run is not None and result.run.id == existing.id
    [record] = await store.list_fire_records("s")
    assert (record.outcome, record.run_id) == ("deduplicated", existing.id)


async def test_fire_records_newest_first_with_paging_and_last_per_schedule(store: Store) -> None:
    for minute in (3, 1, 4, 2):
        await store.fire(fire("a", minute))
    await store.fire(fire("b", 7, run=False))
    assert [r.fire_time for r in await store.list_fire_records("a")] == [slot(4), slot(3), slot(2), slot(1)]
    assert [r.fire_time for r in await store.list_fire_records("a", limit=2)] == [slot(4), slot(3)]
    assert [r.fire_time for r in await store.list_fire_records("a", limit=2, before=slot(3))] == [
        slot(2),
        slot(1),
    ]
    assert await store.list_fire_records("none") == []
    last = await store.last_fire_records()
    assert {k: (v.fire_time, v.outcome) for k, v in last.items()} == {
        "a": (slot(4), "triggered"),
        "b": (slot(7), "missed"),
    }
    # Of some schedules only (a page of a schedule list): the same records, one read.
    some = await store.last_fire_records(["b", "none", "b"])
    assert {k: (v.fire_time, v.outcome) for k, v in some.items()} == {"b": (slot(7), "missed")}
    assert await store.last_fire_records([]) == {}


async def test_purge_fire_records_by_fire_time_in_batches(store: Store) -> None:
    for minute in range(5):
        await store.fire(fire("s", minute, run=False))
    assert await store.purge_fire_records(slot(3), batch_size=2) == 2
    assert await store.purge_fire_records(slot(3), batch_size=2) == 1
    assert await store.purge_fire_records(slot(3), batch_size=2) == 0
    assert [r.fire_time for r in await store.list_fire_records("s")] == [slot(4), slot(3)]


async def test_concurrent_fires_of_one_slot_trigger_exactly_once(backend: Backend, store: Store) -> None:
    stores = [store] + [await backend.open_store(migrate=False) for _ in range(5)]
    for minute in range(3):
        results = await asyncio.gather(*(s.fire(fire("race", minute)) for s in stores))
        outcomes = sorted(r.outcome for r in results)
        assert outcomes == ["deduplicated"] * 5 + ["triggered"]
        assert len({r.run.id for r in results if r.run is not None}) == 1
        assert all(r.run is not None for r in results)
    assert len(await store.list_runs(RunQuery(schedule="race"))) == 3


# -- concurrency: several instances, several processes ------------------------------------------------


async def test_concurrent_claimers_take_each_run_exactly_once(backend: Backend, store: Store) -> None:
    runs = await create_many(store, 120)
    claimers = [store] + [await backend.open_store(migrate=False) for _ in range(5)]

    async def drain(claimer: Store, name: str) -> list[str]:
        got: list[str] = []
        empty = 0
        while empty < 2:
            batch = await claimer.claim(name, [JOB], 4, 30)
            empty = 0 if batch else empty + 1
            got.extend(r.id for r in batch)
        return got

    results = await asyncio.gather(*(drain(c, f"w{i}") for i, c in enumerate(claimers)))
    claimed = [run_id for got in results for run_id in got]
    assert sorted(claimed) == sorted(r.id for r in runs)  # every run once, none twice
    assert sum(1 for got in results if got) >= 2  # the work really was shared


async def test_concurrency_key_stays_exclusive_under_racing_claimers_and_retries(
    backend: Backend, store: Store
) -> None:
    """8 claimers race every round while an operator retries an older failed run of the key.

    Under READ COMMITTED a naive claim lets two claimers each see a different run of the key as
    "first" (one sees the retried older run, the other does not) and both win.
    """
    await store.create_runs([new_run(ckey="K") for _ in range(60)])
    claimers = [await backend.open_store(migrate=False) for _ in range(8)]
    failed: list[str] = []
    holder: RunRecord | None = None
    rounds, wins = 50, 0
    for round_no in range(rounds):

        async def operator() -> None:
            if failed:
                await store.retry_run(failed.pop(0))

        *claims, _ = await asyncio.gather(
            *(c.claim(f"w{i}", [JOB], 2, 30) for i, c in enumerate(claimers)), operator()
        )
        won = [run for batch in claims if batch for run in batch]
        assert len(won) <= 1, f"round {round_no}: {len(won)} runs of one key claimed at once"
        live = await backend.live_running("K")
        assert len(live) <= 1, f"round {round_no}: {live} all hold live leases"
        if won:
            assert holder is None, f"round {round_no}: claimed while {holder} still held the key"
            holder = won[0]
            wins += 1
        if holder is not None:
            # Finish the holder before the next round: fail every other one, to be retried later.
            if round_no % 2:
                assert await store.fail_run(holder.id, holder.generation, "boom", None) == "ok"
                failed.append(holder.id)
            else:
                assert await store.complete_run(holder.id, holder.generation, None) == "ok"
            holder = None
    # A claim may lose a round to a retry that committed under it (correctly), but work goes on.
    assert wins > rounds // 2


CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from datetime import datetime, timezone
    from durably_sched.store import open_store
    from durably_sched.store.base import Fire, NewRun

    async def main(url, name, run_id):
        store = open_store(url)
        await store.connect()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        claimed, empty = [], 0
        while empty < 2:
            batch = await store.claim(name, ["job"], 3, 60)
            empty = 0 if batch else empty + 1
            claimed.extend(r.id for r in batch)
        when = datetime(2030, 1, 1, tzinfo=timezone.utc)
        new = NewRun(id=run_id, job_name="other", input={}, idempotency_key="schedule:p:slot",
                     labels={"schedule": "p"})
        result = await store.fire(Fire(schedule="p", fire_time=when, run=new))
        print(json.dumps({"claimed": claimed, "fire": result.outcome,
                          "run": result.run.id if result.run else None}), flush=True)
        await store.close()

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_separate_processes_claim_each_run_once_and_fire_a_slot_once(
    backend: Backend, store: Store
) -> None:
    runs = await create_many(store, 90)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            backend.url,
            f"proc{n}",
            f"fire-run-{n}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(4)
    ]
    try:
        for proc in procs:  # all connected: then start them together
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line.strip() == b"ready", line
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        outputs = [await asyncio.wait_for(proc.communicate(), 60) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    claimed = [run_id for r in results for run_id in r["claimed"]]
    assert sorted(claimed) == sorted(r.id for r in runs)
    assert sorted(r["fire"] for r in results) == ["deduplicated"] * 3 + ["triggered"]
    assert len({r["run"] for r in results}) == 1
    assert len(await store.list_runs(RunQuery(job_name="other"))) == 1


# -- the claim stays cheap as history grows -----------------------------------------------------------


async def test_the_claim_query_reads_active_runs_through_an_index(
    request: pytest.FixtureRequest, backend: Backend, store: Store
) -> None:
    """20k finished runs and a few pending ones: the claim must not scan the history."""
    if backend.name == "sqlite":
        await _explain_sqlite_claim(backend, store)
    else:
        await _explain_postgres_claim(backend, store)


async def _explain_postgres_claim(backend: Backend, store: Store) -> None:
    from durably_sched.store._pg_sql import (
        CLAIM_CANDIDATES,
        CLAIM_ONE_STATEMENT,
        CLAIM_UPDATE,
        INSERT_CLAIMED,
    )

    conn = await backend.admin()  # type: ignore[attr-defined]
    await conn.execute(
        "INSERT INTO runs (id, job_name, status, input, concurrency_key, completed_at) "
        "SELECT 'old-' || g, 'job', 'completed', '{}', CASE WHEN g % 3 = 0 THEN 'k' || g % 7 END, now() "
        "FROM generate_series(1, 20000) g"
    )
    pending = await store.create_runs([new_run(ckey="k1" if i % 2 else None) for i in range(4)])
    await conn.execute("ANALYZE runs")
    plans: list[str] = []
    async with conn.transaction():
        for mode in ("force_custom_plan", "force_generic_plan"):
            await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
            for name, sql, args in (
                ("candidates", CLAIM_CANDIDATES.format(only="", limit=10), "(ARRAY['job'])"),
                ("update", CLAIM_UPDATE, "(ARRAY[1, 2]::bigint[], 'w', 30.0)"),
                ("one_statement", CLAIM_ONE_STATEMENT.format(only="", limit=10), "(ARRAY['job'], 'w', 30.0)"),
                # the trigger that claims its own run checks for waiting runs first
                (
                    "insert_claimed",
                    INSERT_CLAIMED,
                    "('new', 'job', '{}', NULL, '{}', NULL, NULL, NULL, 'w', 30.0, ARRAY['job'])",
                ),
            ):
                await conn.execute(f"PREPARE {name} AS {sql}")
                rows = await conn.fetch(f"EXPLAIN EXECUTE {name}{args}")
                await conn.execute(f"DEALLOCATE {name}")
                plan = "\n".join(r[0] for r in rows)
                plans.append(plan)
                assert "Seq Scan on runs" not in plan, plan
                if name != "insert_claimed":
                    assert "runs_active" in plan, plan
    claimed = await store.claim("w", [JOB], 10, 30)
    assert [r.id for r in claimed] == [pending[0][0].id, pending[1][0].id, pending[2][0].id]


async def _explain_sqlite_claim(backend: Backend, store: Store) -> None:
    import sqlite3

    path = backend.path  # type: ignore[attr-defined]
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO runs (id, job_name, status, input, concurrency_key, created_at, "
                "completed_at, updated_at) VALUES (?, 'job', 'completed', '{}', ?, 0, 0, 0)",
                [(f"old-{i}", f"k{i % 7}" if i % 3 == 0 else None) for i in range(20000)],
            )
    finally:
        conn.close()
    pending = await store.create_runs([new_run(ckey="k1" if i % 2 else None) for i in range(4)])
    # Capture the statements the claim really runs, then ask SQLite how it runs them.
    statements: list[str] = []
    writer = store.writer.connection  # type: ignore[attr-defined]
    writer.set_trace_callback(statements.append)
    claimed = await store.claim("w", [JOB], 10, 30)
    writer.set_trace_callback(None)
    assert [r.id for r in claimed] == [pending[0][0].id, pending[1][0].id, pending[2][0].id]
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "FROM runs" in s]
    assert reads, statements
    conn = sqlite3.connect(path)
    try:
        for sql in reads:
            plan = " | ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "SCAN runs" not in plan.replace("SCAN runs USING", "INDEXED"), plan
            assert "runs_active" in plan or "runs_concurrency_active" in plan, plan
    finally:
        conn.close()
