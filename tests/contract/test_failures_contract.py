"""The store contract for failures (issue 12), on every backend: tracebacks, retry state, the worker
registry and what the worker and CLI read from it.

Each test states what the worker, the facade or an operator relies on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from datetime import timedelta

from durably_sched.store.base import NewRun, Store, WorkerInfo
from durably_sched.store.rows import TRACEBACK_LIMIT
from tests.backends import Backend
from tests.contract.test_store_contract import JOB, checkpoint, claim_one, create, log_line, new_run, now


def worker_info(
    worker_id: str = "w1", *, host_key: str | None = "host|boot|ns", jobs: tuple[str, ...] = (JOB,)
) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="host",
        host_key=host_key,
        pid=4242,
        process_start="123",
        version="test",
        jobs=jobs,
        concurrency=4,
        lease_seconds=30.0,
    )


async def test_a_failed_run_keeps_its_traceback_bounded_and_counts_the_failure(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    long = "Traceback (most recent call last):\n" + "  frame\n" * 5000 + "ValueError: bad\n"
    assert await store.fail_run(run.id, run.generation, "ValueError: bad", "s", traceback=long) == "ok"
    failed = await store.get_run(run.id)
    assert failed is not None and failed.traceback is not None
    assert failed.status == "failed" and failed.failed_attempts == 1
    assert len(failed.traceback) <= TRACEBACK_LIMIT + 100
    assert failed.traceback.endswith("ValueError: bad\n")  # the innermost end is what is kept
    assert "characters of the traceback cut" in failed.traceback


async def test_retry_later_makes_the_run_pending_but_not_claimable_before_its_time(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    assert await store.checkpoint(checkpoint(run, "first")) == "ok"
    result = await store.retry_later(
        run.id, run.generation, "OSError: flaky", "second", 1.0, [log_line("retrying")], traceback="tb"
    )
    assert result == "ok"
    waiting = await store.get_run(run.id)
    assert waiting is not None
    assert (waiting.status, waiting.error, waiting.failed_step_name, waiting.traceback) == (
        "pending",
        "OSError: flaky",
        "second",
        "tb",
    )
    assert waiting.failed_attempts == 1 and waiting.lease_expires_at is None
    assert waiting.not_before is not None and waiting.not_before > now()
    assert waiting.step_count == 1  # completed steps are kept for the next attempt
    assert [lg.message for lg in await store.get_logs(run.id)] == ["retrying"]
    assert await store.claim("w2", [JOB], 5, 30) == []  # its backoff has not passed
    deadline = time.monotonic() + 10
    while not (claimed := await store.claim("w2", [JOB], 5, 30)):
        assert time.monotonic() < deadline, "the run never became claimable after its backoff"
        await asyncio.sleep(0.05)
    [again] = claimed
    assert again.id == run.id and again.generation == run.generation + 1
    assert again.not_before is None and again.failed_attempts == 1 and again.attempt == 2
    assert again.previous_worker_id == "w1"


async def test_retry_later_and_fail_are_fenced(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    assert await store.retry_later(run.id, run.generation + 1, "E: x", None, 0) == "lost"
    assert await store.fail_run(run.id, run.generation + 1, "E: x", None, traceback="tb") == "lost"
    unchanged = await store.get_run(run.id)
    assert unchanged is not None and unchanged.status == "running" and unchanged.failed_attempts == 0


async def test_a_run_waiting_for_its_backoff_keeps_its_place_in_its_key_but_not_for_others(
    store: Store,
) -> None:
    first = await create(store, ckey="k")
    second = await create(store, ckey="k")
    other = await create(store, ckey="other")
    free = await create(store)
    [held] = await store.claim("w1", [JOB], 1, 30)
    assert held.id == first.id
    assert await store.retry_later(held.id, held.generation, "E: x", None, 60) == "ok"
    claimed = {r.id for r in await store.claim("w2", [JOB], 10, 30)}
    # "one at a time, in order": the newer run of key k waits behind the one in backoff.
    assert claimed == {other.id, free.id}
    blocker = await store.queue_blocker(second.id)
    assert blocker is not None and blocker.id == first.id
    assert await store.queue_blocker(free.id) is None


async def test_a_manual_retry_gives_a_fresh_budget(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    assert await store.retry_later(run.id, run.generation, "E: 1", None, 0) == "ok"
    again = await claim_one(store)
    assert await store.fail_run(again.id, again.generation, "E: 2", None, traceback="tb") == "ok"
    failed = await store.get_run(run.id)
    assert failed is not None and failed.failed_attempts == 2
    retried = await store.retry_run(run.id)
    assert retried is not None
    assert (retried.status, retried.failed_attempts, retried.not_before, retried.traceback) == (
        "pending",
        0,
        None,
        None,
    )


async def test_retry_and_timeout_overrides_are_stored_with_the_run(store: Store) -> None:
    policy = {"max_attempts": 5, "backoff": 30.0, "max_backoff": None, "multiplier": 2.0, "jitter": 0.0,
              "retry_on": ["builtins.Exception"], "give_up_on": []}  # fmt: skip
    [(record, _)] = await store.create_runs(
        [NewRun(id=str(uuid.uuid4()), job_name=JOB, input={}, retry_policy=policy, timeout=7200.0)]
    )
    read = await store.get_run(record.id)
    assert read is not None and read.retry_policy == policy and read.timeout == 7200.0
    plain = await create(store)
    assert (plain.retry_policy, plain.timeout, plain.failed_attempts, plain.not_before) == (
        None,
        None,
        0,
        None,
    )


async def test_claim_names_the_previous_holder(backend: Backend, store: Store) -> None:
    fresh = await create(store)
    [first] = await store.claim("w1", [JOB], 1, 30)
    assert first.id == fresh.id and first.previous_worker_id is None and first.worker_id == "w1"
    await backend.expire_lease(fresh.id)
    [taken] = await store.claim("w2", [JOB], 1, 30)
    assert taken.previous_worker_id == "w1" and taken.worker_id == "w2"


async def test_the_registry_keeps_workers_until_they_deregister(store: Store) -> None:
    await store.register_worker(worker_info("w1"))
    await store.register_worker(worker_info("w2", host_key=None, jobs=("a", "b")))
    workers = {w.id: w for w in await store.list_workers()}
    assert set(workers) == {"w1", "w2"}
    w1 = workers["w1"]
    assert (w1.host, w1.host_key, w1.pid, w1.process_start, w1.jobs) == (
        "host",
        "host|boot|ns",
        4242,
        "123",
        (JOB,),
    )
    assert (w1.concurrency, w1.lease_seconds, w1.runs_held, w1.state) == (4, 30.0, 0, "live")
    assert workers["w2"].jobs == ("a", "b") and workers["w2"].host_key is None
    assert w1.heartbeat_age < timedelta(seconds=5)
    assert await store.heartbeat_worker("w1", 3) is True
    assert await store.heartbeat_worker("missing", 0) is False  # it must register again
    assert {w.id: w.runs_held for w in await store.list_workers()}["w1"] == 3
    await store.deregister_worker("w1")
    assert [w.id for w in await store.list_workers()] == ["w2"]


async def test_lease_renewal_carries_the_worker_heartbeat(store: Store) -> None:
    await store.register_worker(worker_info("w1"))
    before = {w.id: w for w in await store.list_workers()}["w1"]
    await create(store)
    run = await claim_one(store)
    await asyncio.sleep(0.02)
    assert await store.renew_leases([(run.id, run.generation)], 30, worker=("w1", 1)) == {run.id: "ok"}
    after = {w.id: w for w in await store.list_workers()}["w1"]
    assert after.runs_held == 1 and after.heartbeat_at > before.heartbeat_at
    assert await store.renew_leases([], 30, worker=("w1", 0)) == {}
    assert {w.id: w for w in await store.list_workers()}["w1"].runs_held == 0


async def test_taking_over_a_gone_worker_makes_its_runs_claimable_at_once(store: Store) -> None:
    await store.register_worker(worker_info("dead"))
    await store.register_worker(worker_info("alive"))
    await create(store)
    await create(store)
    held = await store.claim("dead", [JOB], 2, 600)
    assert len(held) == 2
    assert await store.claim("alive", [JOB], 5, 30) == []  # live leases
    workers = {w.id: w for w in await store.list_workers()}
    assert workers["dead"].leased == tuple(r.id for r in held) and workers["alive"].leased == ()
    taken = await store.take_over_worker("dead", "alive")
    assert sorted(taken) == sorted(r.id for r in held)
    workers = {w.id: w for w in await store.list_workers()}
    assert workers["dead"].state == "gone" and workers["dead"].gone_by == "alive"
    assert workers["alive"].state == "live"
    assert workers["dead"].leased == ()  # what it holds now: nothing (its heartbeat count lags)
    claimed = await store.claim("alive", [JOB], 5, 30)
    assert sorted(r.id for r in claimed) == sorted(taken)
    workers = {w.id: w for w in await store.list_workers()}
    assert sorted(workers["alive"].leased) == sorted(taken) and workers["dead"].leased == ()
    assert {r.previous_worker_id for r in claimed} == {"dead"}
    # The dead worker's generation is fenced off.
    stale = held[0]
    assert await store.checkpoint(checkpoint(stale, "late")) == "lost"
    assert await store.take_over_worker("dead", "alive") == []  # idempotent


async def test_a_stale_registry_row_is_stale_and_old_rows_are_purged(store: Store) -> None:
    await store.register_worker(dataclasses.replace(worker_info("w1"), lease_seconds=0.05))
    await asyncio.sleep(0.2)
    [row] = await store.list_workers()
    assert row.state == "stale" and not row.alive
    assert await store.purge_workers(now() - timedelta(hours=1)) == 0
    assert await store.purge_workers(now() + timedelta(seconds=1)) == 1
    assert await store.list_workers() == []


async def test_pending_counts_per_job(store: Store) -> None:
    await store.create_runs([new_run("a"), new_run("a"), new_run("b")])
    await create(store)
    run = await claim_one(store)
    assert run.job_name == JOB
    assert await store.pending_counts() == {"a": 2, "b": 1}
