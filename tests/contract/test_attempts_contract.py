"""The store contract for attempts (issue 25), on every backend: each execution of a run that ended
is kept with its number, start and end, worker, outcome and, for a failure, the error, the failed
step and the traceback; recorded in the write that ended it, deleted with its run.

Each test states what `runs show`, the API, the dashboard or `trigger --wait` relies on.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from durably_sched.store.base import Store
from durably_sched.store.rows import TRACEBACK_LIMIT
from tests.backends import Backend
from tests.contract.test_store_contract import JOB, checkpoint, claim_one, create, now


async def test_a_run_retried_four_times_keeps_every_failure_and_its_completion(store: Store) -> None:
    await create(store)
    errors = [f"OSError: try {n}" for n in range(1, 5)]
    for n, error in enumerate(errors, start=1):
        run = await claim_one(store, worker=f"w{n}")
        if n == 1:
            assert await store.checkpoint(checkpoint(run, "fetch")) == "ok"
        step = "render" if n % 2 else None
        trace = f"Traceback\n{error}\n"
        assert await store.retry_later(run.id, run.generation, error, step, 0.0, traceback=trace) == "ok"
    run = await claim_one(store, worker="w5")
    assert await store.complete_run(run.id, run.generation, {"ok": True}) == "ok"
    attempts = await store.get_attempts(run.id)
    assert [a.attempt for a in attempts] == [1, 2, 3, 4, 5]
    assert [a.outcome for a in attempts] == ["failed"] * 4 + ["completed"]
    assert [a.error for a in attempts] == [*errors, None]
    assert [a.failed_step_name for a in attempts] == ["render", None, "render", None, None]
    assert [a.traceback for a in attempts] == [f"Traceback\n{e}\n" for e in errors] + [None]
    assert [a.worker_id for a in attempts] == ["w1", "w2", "w3", "w4", "w5"]
    assert [a.failed_attempts for a in attempts] == [1, 2, 3, 4, 4]  # failed try 1, 2, 3, 4 of the budget
    final = await store.get_run(run.id)
    assert final is not None and final.error is None  # the run itself keeps only its outcome
    for a in attempts:
        assert a.run_id == run.id
        assert a.started_at is not None and a.started_at.tzinfo is not None
        assert a.started_at <= a.ended_at and a.duration is not None
    for earlier, later in itertools.pairwise(attempts):
        assert later.started_at is not None and earlier.ended_at <= later.started_at
    assert final.completed_at is not None and abs(attempts[-1].ended_at - final.completed_at) < timedelta(
        seconds=1
    )
    # `after`: only the attempts a follower has not seen yet
    assert [a.attempt for a in await store.get_attempts(run.id, after=3)] == [4, 5]


async def test_a_failure_for_good_keeps_the_bounded_traceback(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    long = "Traceback (most recent call last):\n" + "  frame\n" * 5000 + "ValueError: bad\n"
    assert await store.fail_run(run.id, run.generation, "ValueError: bad", "s", traceback=long) == "ok"
    [attempt] = await store.get_attempts(run.id)
    assert (attempt.outcome, attempt.error, attempt.failed_step_name) == ("failed", "ValueError: bad", "s")
    assert attempt.traceback is not None and len(attempt.traceback) <= TRACEBACK_LIMIT + 100
    assert attempt.traceback.endswith("ValueError: bad\n")


async def test_a_release_a_cancel_and_a_lost_lease_are_attempts_too(backend: Backend, store: Store) -> None:
    await create(store)
    first = await claim_one(store, worker="stopping")
    assert await store.release_run(first.id, first.generation) == "ok"  # a graceful stop
    second = await claim_one(store, worker="dead", lease=30.0)
    await backend.expire_lease(second.id)  # its holder stopped renewing
    expired_at = now()
    third = await claim_one(store, worker="taker")  # this claim records the lost lease
    assert third.id == first.id and third.attempt == 3
    # the dead holder's writes are fenced off: nothing it tries records or changes an attempt
    assert await store.fail_run(second.id, second.generation, "late", None) == "lost"
    assert await store.complete_run(second.id, second.generation, None) == "lost"
    cancelled = await store.cancel_run(third.id)
    assert cancelled is not None and cancelled.status == "cancelled"
    attempts = await store.get_attempts(first.id)
    assert [(a.attempt, a.outcome, a.worker_id) for a in attempts] == [
        (1, "released", "stopping"),
        (2, "lease_lost", "dead"),
        (3, "cancelled", "taker"),
    ]
    assert all(a.error is None and a.traceback is None for a in attempts)
    lost = attempts[1]
    assert lost.ended_at <= expired_at  # when its lease ran out, not when it was noticed
    assert third.attempt == 3


async def test_writes_that_end_no_attempt_record_none(store: Store) -> None:
    pending = await create(store)
    await store.cancel_run(pending.id)  # cancelled before any claim: no execution
    assert await store.get_attempts(pending.id) == []
    await create(store)
    run = await claim_one(store)
    assert await store.checkpoint(checkpoint(run, "one")) == "ok"
    assert await store.renew_leases([(run.id, run.generation)], 30) == {run.id: "ok"}
    assert await store.append_logs(run.id, run.generation, []) == "ok"
    assert await store.get_attempts(run.id) == []  # still running: nothing ended
    assert await store.get_attempts("no-such-run") == []


async def test_an_operator_retry_keeps_earlier_attempts_and_numbers_on(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    assert await store.fail_run(run.id, run.generation, "KeyError: 'x'", None) == "ok"
    await store.retry_run(run.id)
    again = await claim_one(store, worker="w2")
    assert again.failed_attempts == 0  # a fresh retry budget ...
    assert await store.complete_run(again.id, again.generation, 1) == "ok"
    attempts = await store.get_attempts(run.id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "failed"), (2, "completed")]  # ... same history
    assert [a.failed_attempts for a in attempts] == [1, 0]


async def test_a_runs_attempts_go_with_it_on_delete_and_purge(backend: Backend, store: Store) -> None:
    keep, deleted, purged = [await create(store) for _ in range(3)]
    for _ in range(3):
        run = await claim_one(store)
        assert await store.fail_run(run.id, run.generation, "boom", None) == "ok"
    assert all([await store.get_attempts(r.id) for r in (keep, deleted, purged)])
    assert await store.delete_run(deleted.id)
    old = datetime.now(UTC) - timedelta(days=30)
    await backend.set_completed_at(purged.id, old)
    assert await store.purge_runs(datetime.now(UTC) - timedelta(days=7)) == 1
    assert await store.get_attempts(deleted.id) == []
    assert await store.get_attempts(purged.id) == []
    assert [a.outcome for a in await store.get_attempts(keep.id)] == ["failed"]


async def test_a_claim_of_several_runs_records_each_lost_lease(backend: Backend, store: Store) -> None:
    runs = [await create(store) for _ in range(3)]
    held = await store.claim("dead", [JOB], 3, 30)
    assert {r.id for r in held} == {r.id for r in runs}
    for r in runs:
        await backend.expire_lease(r.id)
    taken = await store.claim("taker", [JOB], 3, 30)
    assert len(taken) == 3
    for r in runs:
        [attempt] = await store.get_attempts(r.id)
        assert (attempt.attempt, attempt.outcome, attempt.worker_id) == (1, "lease_lost", "dead")
