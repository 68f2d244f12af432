"""Execution (durably_sched.execution): the executor's outcomes, the deadline, the producer's two
modes and hand-off, the lease service, and the service base, on a clock the tests move.

With a ``ManualClock`` no lease, timeout or back-off here waits real seconds: time moves when the
test says so, and what falls due has happened when ``advance`` returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from durably_sched import Retry, Step, define_job
from durably_sched.cancel import CancelToken
from durably_sched.clock import ManualClock, SystemClock
from durably_sched.errors import DatabaseUnavailableError, RunTimeoutError, StepCancelled, StepTimeoutError
from durably_sched.execution.deadline import Deadline
from durably_sched.execution.outcome import Cancelled, Failed, LeaseLost, Released, decide
from durably_sched.execution.service import Service
from durably_sched.store.base import RunRecord
from tests.backends import Backend
from tests.helpers import durably_factory, until


@pytest.fixture
def db_url(backend: Backend) -> str:
    return backend.url


@pytest.fixture
async def make(db_url: str) -> AsyncIterator[Callable[..., Any]]:
    async with durably_factory(db_url, stale_threshold=30.0, heartbeat_interval=5.0) as factory:
        yield factory


# -- the clock ------------------------------------------------------------------------


async def test_a_manual_clock_fires_timers_in_time_order_only_when_moved() -> None:
    clock = ManualClock()
    fired: list[str] = []
    clock.call_later(5, lambda: fired.append("5s"))
    clock.call_later(1, lambda: fired.append("1s"))
    dropped = clock.call_later(2, lambda: fired.append("2s"))
    dropped.cancel()
    start = clock.now()
    await clock.advance(0.5)
    assert fired == []
    await clock.advance(10)
    assert fired == ["1s", "5s"]
    assert clock.monotonic() == 10.5 and (clock.now() - start).total_seconds() == 10.5
    with pytest.raises(ValueError, match="does not go back"):
        await clock.advance(-1)


async def test_a_clock_wait_ends_when_the_event_is_set_or_its_time_is_up() -> None:
    clock = ManualClock()
    event = asyncio.Event()
    waiting = asyncio.create_task(clock.wait(event, 30))
    await clock.advance(29)
    assert not waiting.done()
    await clock.advance(1)
    assert await waiting is False
    waiting = asyncio.create_task(clock.wait(event, 30))
    await asyncio.sleep(0)
    event.set()
    assert await waiting is True
    assert await SystemClock().wait(event, 0) is True


# -- the deadline ------------------------------------------------------------------------


async def test_a_deadline_sets_the_token_first_then_cancels_with_timeout_error() -> None:
    clock = ManualClock()
    token = CancelToken()
    seen: list[str | None] = []

    async def body() -> None:
        deadline = Deadline(60, token, clock)
        try:
            async with deadline:
                await asyncio.Event().wait()  # never set: only the deadline ends this
        finally:
            seen.append(token.reason)
            assert deadline.fired

    task = asyncio.create_task(body())
    await clock.advance(59.9)
    assert not task.done()
    await clock.advance(0.1)
    with pytest.raises(TimeoutError):
        await task
    assert seen == ["timeout"]


async def test_a_deadline_not_reached_changes_nothing() -> None:
    clock = ManualClock()
    token = CancelToken()
    deadline = Deadline(60, token, clock)
    async with deadline:
        await asyncio.sleep(0)
    await clock.advance(120)  # its timer was dropped at the block's end
    assert not deadline.fired and not token.cancelled and clock.pending == 0


# -- the one decision ------------------------------------------------------------------------


def _run(**changes: Any) -> RunRecord:
    from datetime import UTC, datetime

    values: dict[str, Any] = {
        "id": "r1",
        "job_name": "j",
        "status": "running",
        "input": {},
        "output": None,
        "error": None,
        "failed_step_name": None,
        "idempotency_key": None,
        "concurrency_key": None,
        "labels": {},
        "generation": 1,
        "worker_id": "w",
        "lease_expires_at": None,
        "progress": None,
        "step_count": 0,
        "attempt": 1,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "started_at": None,
        "completed_at": None,
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    values.update(changes)
    return RunRecord(**values)


async def _noop(step: Step, payload: dict[str, Any]) -> None:
    return None


def test_the_outcome_of_a_stopped_run_follows_the_reason_it_stopped() -> None:
    job = define_job(name="j", run=_noop)
    run = _run()
    assert decide(StepCancelled("stopping"), job, run, lost=False, timed_out=False) == Released()
    assert decide(StepCancelled("lease-lost"), job, run, lost=True, timed_out=False) == LeaseLost()
    assert decide(StepCancelled("cancelled"), job, run, lost=False, timed_out=False) == Cancelled()
    store_failed = decide(DatabaseUnavailableError("db down"), job, run, lost=False, timed_out=False)
    assert isinstance(store_failed, Released) and store_failed.store_failed


def test_a_timeout_fails_the_attempt_with_run_timeout_error_and_the_policy_decides_the_retry() -> None:
    policy = Retry(max_attempts=3, backoff=1.0, multiplier=2.0, jitter=0)
    job = define_job(name="j", run=_noop, timeout=5, retry=policy)
    first = decide(StepCancelled("timeout"), job, _run(), lost=False, timed_out=True)
    assert isinstance(first, Failed) and isinstance(first.error, RunTimeoutError)
    assert (first.failures, first.retry_in) == (1, 1.0)
    second = decide(TimeoutError(), job, _run(failed_attempts=1), lost=False, timed_out=True)
    assert isinstance(second, Failed) and isinstance(second.error.__cause__, TimeoutError)
    assert (second.failures, second.retry_in) == (2, 2.0)
    last = decide(ValueError("bad"), job, _run(failed_attempts=2), lost=False, timed_out=False)
    assert isinstance(last, Failed) and isinstance(last.error, ValueError) and last.retry_in is None


# -- timeouts on a moved clock ------------------------------------------------------------------------


async def test_a_run_timeout_fails_the_run_when_the_clock_passes_it(make: Any) -> None:
    clock = ManualClock()
    reached = asyncio.Event()
    reasons: list[str | None] = []

    def stuck(token: CancelToken) -> None:
        reached.set()
        token.wait(30)  # a sync step: told to stop, it stops
        reasons.append(token.reason)

    async def job_fn(step: Step, payload: dict[str, Any]) -> None:
        await step.run("stuck", stuck)

    durably = await make(define_job(name="slow", run=job_fn, timeout=60), clock=clock)
    run = await durably.jobs.slow.trigger({})
    await until(reached.is_set, 10, "the step started")
    await clock.advance(59)
    assert (await durably.get_run(run.id)).status == "running"
    await clock.advance(1)
    final = await durably.wait_for_run(run.id, timeout=10)
    assert (final.status, final.failed_step_name) == ("failed", "stuck")
    assert final.error is not None and "did not finish within 60s" in final.error
    await until(lambda: reasons, 10, "the step saw its token")
    assert reasons == ["timeout"]


async def test_a_step_timeout_fails_the_step_when_the_clock_passes_it(make: Any) -> None:
    clock = ManualClock()
    reached = asyncio.Event()

    async def job_fn(step: Step, payload: dict[str, Any]) -> dict[str, str]:
        try:
            await step.run("wait", lambda: reached.set() or asyncio.Event().wait(), timeout=120)
        except StepTimeoutError as exc:
            return {"gave up on": exc.step_name}
        return {"finished": "wait"}

    durably = await make(define_job(name="st", run=job_fn), clock=clock)
    run = await durably.jobs.st.trigger({})
    await until(reached.is_set, 10, "the step started")
    await clock.advance(119)
    assert (await durably.get_run(run.id)).status == "running"
    await clock.advance(1)
    final = await durably.wait_for_run(run.id, timeout=10)
    assert (final.status, final.output) == ("completed", {"gave up on": "wait"})


# -- leases on a moved clock ------------------------------------------------------------------------


async def test_leases_are_renewed_at_each_heartbeat_of_the_clock(make: Any) -> None:
    clock = ManualClock()
    release = asyncio.Event()

    async def job_fn(step: Step, payload: dict[str, Any]) -> None:
        await step.run("hold", release.wait)

    durably = await make(define_job(name="hold", run=job_fn), clock=clock)
    renewals: list[str] = []
    durably.on("run:lease-renewed", lambda e: renewals.append(e.run_id))
    run = await durably.jobs.hold.trigger({})
    await until(lambda: run.id in durably.worker.active, 10, "claimed")
    await clock.advance(4.9)
    assert renewals == []
    await clock.advance(0.1)
    await until(lambda: renewals == [run.id], 10, "the first renewal")
    await clock.advance(5)
    await until(lambda: renewals == [run.id, run.id], 10, "the second renewal")
    release.set()
    assert (await durably.wait_for_run(run.id, timeout=10)).status == "completed"


async def test_a_lease_found_lost_at_a_heartbeat_stops_the_run_and_writes_nothing_more(make: Any) -> None:
    clock = ManualClock()
    reached = asyncio.Event()
    reasons: list[str | None] = []
    calls: list[int] = []

    def long(token: CancelToken) -> str:
        # The new claim may start the step again before the first holder's thread has seen its
        # token (the worker claims as soon as the clock moves): count the calls, not the reasons.
        calls.append(1)
        if len(calls) > 1:
            return "second holder"
        reached.set()
        token.wait(30)
        reasons.append(token.reason)
        return "late"

    async def job_fn(step: Step, payload: dict[str, Any]) -> dict[str, str]:
        return {"step": await step.run("long", long)}

    durably = await make(define_job(name="lose", run=job_fn), clock=clock)
    run = await durably.jobs.lose.trigger({})
    await until(reached.is_set, 10, "the step started")
    held = await durably.get_run(run.id)
    # The claim's generation is over (as when another worker took the expired lease): the run is
    # pending again and claimed anew, here, under the next generation.
    assert await durably.store.release_run(run.id, held.generation) == "ok"
    await clock.advance(5)  # the heartbeat finds the first claim's lease lost
    await until(lambda: durably.worker.lease_losses == 1, 10, "the lease loss")
    await until(lambda: reasons, 10, "the step saw its token")
    assert reasons == ["lease-lost"]
    final = await durably.wait_for_run(run.id, timeout=10)
    # The first holder's late result was never written: the step ran again under the new claim.
    assert (final.status, final.output, final.generation) == ("completed", {"step": "second holder"}, 2)


# -- the producer's two modes and the hand-off ----------------------------------------------------------


async def test_until_idle_is_the_claim_loop_returning_when_nothing_is_claimable(make: Any) -> None:
    order: list[int] = []

    async def job_fn(step: Step, payload: dict[str, Any]) -> None:
        order.append(await step.run("n", lambda: payload["n"]))

    durably = await make(define_job(name="idle", run=job_fn), start=False, max_concurrent_runs=2)
    for n in range(5):
        await durably.jobs.idle.trigger({"n": n}, concurrency_key="one-at-a-time")
    done = await durably.process_until_idle()
    assert [r.status for r in done] == ["completed"] * 5
    assert order == [0, 1, 2, 3, 4]  # each finished run let the next of its key go, in this call
    assert await durably.process_until_idle() == []


async def test_a_run_created_already_claimed_is_handed_to_the_worker_without_a_claim(make: Any) -> None:
    async def job_fn(step: Step, payload: dict[str, Any]) -> dict[str, int]:
        return {"v": await step.run("v", lambda: 7)}

    durably = await make(define_job(name="here", run=job_fn), polling_interval=60.0)
    claims = 0
    claim = durably.store.claim

    async def counting(*args: Any, **kwargs: Any) -> list[RunRecord]:
        nonlocal claims
        claims += 1
        return await claim(*args, **kwargs)

    await until(lambda: durably.worker.last_claim_at > 0, 10, "the first claim")
    durably.store.claim = counting  # type: ignore[method-assign]
    result = await durably.jobs.here.trigger_and_wait({}, timeout=10)
    assert result.output == {"v": 7}
    assert durably.worker.free_slots() == 1  # the slot held for the hand-off is free again
    if type(durably.store).__name__ == "PostgresStore":  # it inserts the run claimed by this worker
        assert claims == 0
        assert (await durably.get_run(result.id)).worker_id == durably.worker.worker_id


# -- the service base ------------------------------------------------------------------------


class _Flaky(Service):
    def __init__(self, clock: ManualClock, fail: int) -> None:
        super().__init__("flaky", interval=10.0, clock=clock, backoff_first=1.0, backoff_max=4.0)
        self.fail = fail
        self.passes = 0

    async def run_once(self) -> None:
        self.passes += 1
        if self.passes <= self.fail:
            raise RuntimeError(f"failure {self.passes}")


async def test_a_failing_service_is_logged_and_restarted_with_backoff_never_silently_dead(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    service = _Flaky(clock, fail=4)
    with caplog.at_level(logging.ERROR, logger="durably_sched.service"):
        service.start()
        await clock.advance(0)
        assert (service.passes, service.failures) == (1, 1)
        for wait, passes in ((1, 2), (2, 3), (4, 4), (4, 5)):  # doubling, capped at backoff_max
            await clock.advance(wait - 0.01)
            assert service.passes == passes - 1
            await clock.advance(0.01)
            assert service.passes == passes
    assert service.running and service.failures == 0 and service.restarts == 4
    assert any("flaky failed (again in 1.0s): failure 1" in r.getMessage() for r in caplog.records)
    await clock.advance(10)  # healthy again: the interval, not the back-off
    assert service.passes == 6
    await service.stop()
    assert not service.running
    await clock.advance(100)
    assert service.passes == 6


async def test_the_orphan_watch_runs_on_the_service_base(make: Any) -> None:
    from durably_sched.ops.orphans import OrphanedJobsWatch

    durably = await make(define_job(name="has", run=_noop), start=False)
    await durably.store.create_runs([])
    clock = ManualClock()
    checks: list[dict[str, int]] = []
    watch = OrphanedJobsWatch(durably, interval=30, first_after=10, clock=clock)
    check = watch.check

    async def counted() -> dict[str, int]:
        checks.append(await check())
        return checks[-1]

    watch.check = counted  # type: ignore[method-assign]
    watch.start()
    await clock.advance(9.9)
    assert checks == []
    await clock.advance(0.1)
    await until(lambda: len(checks) == 1, 10, "the first check")
    await clock.advance(30)
    await until(lambda: len(checks) == 2, 10, "the second check")
    await watch.stop()
