"""Sync step functions (``step.run(name, lambda: ...)``): what job authors rely on.

A sync function never runs on the event loop's thread, so a slow one stalls neither other runs,
nor heartbeats, nor the scheduler; it sees the caller's context variables as with
``asyncio.to_thread``; cancellation, lease loss and graceful stop work while one is in flight.
The step-thread pool itself (hand-off, limit, cancelled waiters, closed loops) is tested directly.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from durably_sched import Durably, RunFailedError, Step, define_job
from durably_sched._step_threads import POOL, SYNC_WAIT, StepThreadPool, SyncSteps, busy_threads
from durably_sched.store.sqlite import SqliteStore
from tests.helpers import durably_factory, until

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sync.db'}"


@pytest.fixture
async def make(db_url: str) -> AsyncIterator[Callable[..., Any]]:
    async with durably_factory(db_url, stale_threshold=2.0) as factory:
        yield factory


# -- through Step.run ------------------------------------------------------------------------------


async def test_sync_steps_run_off_the_loop_thread_fast_and_slow_alike(make: Any) -> None:
    """Quick functions (picked up by the short wait) and slow ones (awaited) behave the same."""
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def quick(i: int) -> int:
        seen.append(threading.get_ident())
        return i

    def slow(i: int) -> int:
        seen.append(threading.get_ident())
        time.sleep(SYNC_WAIT * 20)  # well past the synchronous wait: the awaited path
        return -i

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        values = []
        for i in range(30):
            values.append(await step.run(f"q{i}", lambda i=i: quick(i)))
            if i % 10 == 9:
                values.append(await step.run(f"s{i}", lambda i=i: slow(i)))
        return {"values": values}

    durably = await make(define_job(name="mixed", run=fn))
    result = await durably.jobs.mixed.trigger_and_wait({}, timeout=30)
    expected: list[int] = []
    for i in range(30):
        expected.append(i)
        if i % 10 == 9:
            expected.append(-i)
    assert result.output == {"values": expected}
    assert len(seen) == 33 and loop_thread not in seen
    assert [s.name for s in await durably.get_steps(result.id)][:3] == ["q0", "q1", "q2"]


async def test_a_sleeping_sync_step_stalls_neither_other_runs_nor_heartbeats(make: Any) -> None:
    sleeping = threading.Event()
    woke = threading.Event()

    async def sleeper(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        def nap() -> str:
            sleeping.set()
            time.sleep(2.0)
            woke.set()
            return "rested"

        return {"v": await step.run("nap", nap)}

    async def busy(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        total = 0
        for i in range(40):
            total += await step.run(f"sync{i}", lambda i=i: i)
            await step.progress(i + 1, 40)
        return {"total": total}

    durably = await make(
        define_job(name="sleeper", run=sleeper), define_job(name="busy", run=busy), max_concurrent_runs=2
    )
    slow = await durably.jobs.sleeper.trigger({})
    await until(sleeping.is_set, 10, "the sync step to start sleeping")
    lease_before = (await durably.get_run(slow.id)).lease_expires_at
    # While the step sleeps, the loop is free: a run of 40 sync steps completes ...
    result = await durably.jobs.busy.trigger_and_wait({}, timeout=30)
    assert result.output == {"total": sum(range(40))}
    # ... and the heartbeat (every 0.2 s) renews the sleeping run's lease.
    await until(lambda: _lease_moved(durably, slow.id, lease_before), 10, "the lease to be renewed")
    assert not woke.is_set(), "the other run and the heartbeat had to wait for the sleeping step"
    done = await durably.wait_for_run(slow.id, timeout=30)
    assert done.status == "completed" and done.output == {"v": "rested"}


async def _lease_moved(durably: Durably, run_id: str, before: Any) -> bool:
    lease = (await durably.get_run(run_id)).lease_expires_at
    return lease is not None and before is not None and lease > before


async def test_sync_steps_see_the_callers_context_variables_but_cannot_change_them(make: Any) -> None:
    seen: list[str] = []

    def read_and_set() -> str:
        seen.append(request_id.get())
        request_id.set("set-in-step")
        return request_id.get()

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        request_id.set("job-" + payload["n"])
        inside = await step.run("a", read_and_set)
        time.sleep(0)  # noqa: ASYNC251 -- nothing to wait for; keeps the two steps apart
        again = await step.run("b", read_and_set)
        return {"inside": inside, "again": again, "after": request_id.get()}

    durably = await make(define_job(name="ctx", run=fn))
    result = await durably.jobs.ctx.trigger_and_wait({"n": "1"}, timeout=10)
    assert result.output == {"inside": "set-in-step", "again": "set-in-step", "after": "job-1"}
    assert seen == ["job-1", "job-1"]  # each step starts from the job's context, not the last step's


async def test_a_sync_step_writes_logs_that_are_stored_and_emitted_on_the_loop_thread(make: Any) -> None:
    """``step.log`` inside a plain ``def`` step (on a step thread): the lines are stored with the
    step that wrote them and their ``log:write`` events reach listeners on the loop's thread."""
    loop_thread = threading.get_ident()
    emitted: list[tuple[str, str | None, int]] = []

    def slow_report(step: Step) -> int:
        time.sleep(SYNC_WAIT * 20)  # the awaited path
        step.log.info("slow line", n=2)
        return 2

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("quick", lambda: step.log.info("quick line", n=1))
        await step.run("slow", lambda: slow_report(step))
        return {}

    durably = await make(define_job(name="logs_in_threads", run=fn))
    durably.on("log:write", lambda e: emitted.append((e.message, e.step_name, threading.get_ident())))
    run = await durably.jobs.logs_in_threads.trigger_and_wait({}, timeout=10)
    logs = await durably.get_logs(run.id)
    assert [(entry.message, entry.step_name, entry.data) for entry in logs] == [
        ("quick line", "quick", {"n": 1}),
        ("slow line", "slow", {"n": 2}),
    ]
    assert emitted == [("quick line", "quick", loop_thread), ("slow line", "slow", loop_thread)]


async def test_sync_step_errors_fail_the_run_with_the_step_named(make: Any) -> None:
    def quick_fail() -> None:
        raise ValueError("quick failure")

    def slow_fail() -> None:
        time.sleep(SYNC_WAIT * 20)
        raise KeyError("slow failure")

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("ok", lambda: 1)
        await step.run("bad", quick_fail if payload["quick"] else slow_fail)
        return {}

    durably = await make(define_job(name="fails", run=fn))
    for quick, message in ((True, "ValueError: quick failure"), (False, "KeyError: 'slow failure'")):
        with pytest.raises(RunFailedError) as failure:
            await durably.jobs.fails.trigger_and_wait({"quick": quick}, timeout=10)
        assert failure.value.failed_step_name == "bad"
        assert message in str(failure.value.error)
        assert [s.name for s in await durably.get_steps(failure.value.run_id)] == ["ok"]


async def test_cancel_while_a_sync_step_runs_keeps_its_result_and_starts_nothing_more(make: Any) -> None:
    entered = threading.Event()
    proceed = threading.Event()
    calls: list[str] = []

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        def first() -> str:
            calls.append("first")
            entered.set()
            assert proceed.wait(10)
            return "one"

        await step.run("first", first)
        await step.run("second", lambda: calls.append("second"))
        return {}

    durably = await make(define_job(name="c", run=fn))
    run = await durably.jobs.c.trigger({})
    await until(entered.is_set)
    assert (await durably.cancel(run.id)).status == "cancelled"
    proceed.set()
    await until(lambda: not durably.worker.active, 10, "the cancelled run to stop")
    assert (await durably.get_run(run.id)).status == "cancelled"
    assert calls == ["first"]
    assert [s.name for s in await durably.get_steps(run.id)] == ["first"]


async def test_lease_loss_during_a_sync_step_stops_the_run_at_once_and_writes_nothing(
    make: Any, db_url: str
) -> None:
    entered = threading.Event()
    proceed = threading.Event()

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        def blocked() -> str:
            entered.set()
            assert proceed.wait(20)
            return "stale"

        await step.run("only", blocked)
        return {"by": "stale"}

    durably = await make(define_job(name="fence", run=fn), heartbeat_interval=0.1, stale_threshold=30)
    run = await durably.jobs.fence.trigger({})
    await until(entered.is_set)
    thief = SqliteStore(db_url)
    await thief.connect()
    try:
        await thief._write(
            lambda c: c.execute("UPDATE runs SET lease_expires_at = 0 WHERE id = ?", (run.id,))
        )
        (claimed,) = await thief.claim("thief", ["fence"], 1, 60)
        # The heartbeat finds the lease lost and cancels the run's task while the thread still
        # sleeps in the step: the slot is free before the function returns.
        await until(lambda: not durably.worker.active, 10, "the run to stop after losing its lease")
        assert not proceed.is_set() and durably.worker.lease_losses == 1
        proceed.set()
        await until(lambda: not busy_threads(), 10, "the step thread to finish")
        record = await thief.get_run(run.id)
        assert record is not None and record.worker_id == "thief" and record.generation == claimed.generation
        assert await thief.get_steps(run.id) == [] and record.output is None
    finally:
        await thief.close()


async def test_graceful_stop_releases_a_run_whose_sync_step_outlasts_the_grace(make: Any) -> None:
    entered = threading.Event()
    proceed = threading.Event()

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("quick", lambda: 1)

        def long() -> int:
            entered.set()
            assert proceed.wait(20)
            return 2

        await step.run("long", long)
        return {}

    durably = await make(define_job(name="long", run=fn), stale_threshold=60, heartbeat_interval=1)
    run = await durably.jobs.long.trigger({})
    await until(entered.is_set)
    t0 = time.monotonic()
    await durably.stop(grace=0.2)
    assert time.monotonic() - t0 < 5
    record = await durably.get_run(run.id)
    assert record.status == "pending" and record.lease_expires_at is None
    assert [s.name for s in await durably.get_steps(run.id)] == ["quick"]
    # The function is still running on its thread: that is what serve reports at exit.
    lingering = busy_threads()
    assert len(lingering) == 1 and lingering[0].name.startswith("durably-step-")
    proceed.set()
    await until(lambda: not busy_threads(), 10, "the abandoned step to return")
    assert [s.name for s in await durably.get_steps(run.id)] == ["quick"]  # its result is dropped


async def test_many_runs_of_sync_steps_at_once(make: Any) -> None:
    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        total = 0
        for i in range(20):
            total += await step.run(f"s{i}", lambda i=i: i * payload["k"])
        return {"total": total}

    durably = await make(define_job(name="par", run=fn), max_concurrent_runs=16)
    results = await asyncio.gather(
        *(durably.jobs.par.trigger_and_wait({"k": k}, timeout=60) for k in range(40))
    )
    assert [r.output for r in results] == [{"total": k * sum(range(20))} for k in range(40)]
    assert POOL.size <= POOL.max_threads


# -- the pool itself -------------------------------------------------------------------------------


async def test_pool_limits_threads_and_serves_waiters_in_call_order() -> None:
    pool = StepThreadPool(max_threads=2)
    gates = [threading.Event() for _ in range(4)]
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        assert gates[i].wait(10)
        return i * 10

    calls = []
    for i in range(4):
        calls.append(asyncio.ensure_future(pool.run(lambda i=i: work(i), 0)))
        await asyncio.sleep(0)  # the calls queue up in this order
    await until(lambda: len(started) == 2, 5, "two calls to start")
    await asyncio.sleep(0.05)
    assert sorted(started) == [0, 1] and pool.size == 2  # the third and fourth wait
    gates[1].set()
    await until(lambda: len(started) == 3)
    assert started[2] == 2  # the oldest waiter got the freed thread
    for gate in gates:
        gate.set()
    assert await asyncio.gather(*calls) == [0, 10, 20, 30]
    assert pool.size == 2


async def test_pool_cancelled_calls_return_at_once_and_their_thread_is_reused_after() -> None:
    pool = StepThreadPool(max_threads=1)
    release = threading.Event()
    finished = threading.Event()

    def blocked() -> str:
        assert release.wait(10)
        finished.set()
        return "late"

    first = asyncio.ensure_future(pool.run(blocked, 0))
    await until(lambda: pool.busy_threads(), 5, "the call to start")
    waiting = asyncio.ensure_future(pool.run(lambda: "never", 0))  # waits for the only thread
    await asyncio.sleep(0.02)
    first.cancel()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not finished.is_set()  # cancelled at once, the function still runs
    release.set()
    # The thread is reused only once the abandoned function has returned.
    assert await asyncio.wait_for(pool.run(lambda: "next"), 10) == "next"
    assert finished.is_set() and pool.size == 1


def test_pool_survives_a_loop_that_closed_while_a_call_ran() -> None:
    pool = StepThreadPool(max_threads=1)
    release = threading.Event()

    def blocked() -> int:
        assert release.wait(10)
        return 1

    async def abandon() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.run(blocked, 0), 0.05)

    asyncio.run(abandon())  # the loop is closed while the function still runs
    release.set()

    async def again() -> int:
        await until(lambda: not pool.busy_threads(), 5, "the abandoned call to finish")
        return await pool.run(lambda: 2)

    assert asyncio.run(again()) == 2
    assert pool.size == 1


async def test_pool_passes_exceptions_with_their_traceback() -> None:
    pool = StepThreadPool(max_threads=1)

    def inner() -> None:
        raise RuntimeError("from the step")

    for wait in (SYNC_WAIT, 0.0):
        with pytest.raises(RuntimeError, match="from the step") as info:
            await pool.run(inner, wait)
        assert info.traceback[-1].name == "inner"


async def test_sync_steps_wait_in_sync_only_while_the_functions_are_quick() -> None:
    runner = SyncSteps()
    assert runner.wait == SYNC_WAIT
    assert await runner.run(lambda: time.sleep(SYNC_WAIT * 5) or "slow") == "slow"
    assert runner.wait == 0.0  # the next call goes straight to awaiting
    assert await runner.run(lambda: "quick") == "quick"
    assert runner.wait == SYNC_WAIT
    with pytest.raises(ZeroDivisionError):
        await runner.run(lambda: 1 / 0)
    assert runner.wait == SYNC_WAIT


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_step_threads_of_its_own() -> None:
    assert asyncio.run(POOL.run(lambda: "parent")) == "parent"  # the pool has an idle thread now
    pid = os.fork()
    if pid == 0:  # the child: the parent's idle thread does not exist here
        code = 1
        try:
            code = 0 if asyncio.run(asyncio.wait_for(POOL.run(lambda: "child"), 10)) == "child" else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
