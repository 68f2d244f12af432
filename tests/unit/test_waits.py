"""Durable waits in one process, on both backends (issue 24): a sleeping, event-waiting or
child-waiting run holds no slot and no lease, resumes where it waited without re-running a
completed step, and surfaces timeouts and child failures in the job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from durably_sched import Retry, Step, define_job
from durably_sched.errors import ChildRunFailedError, EventTimeoutError, InvalidArgumentError
from tests.backends import Backend
from tests.helpers import durably_factory, until


@pytest.fixture
async def make(backend: Backend) -> AsyncIterator[Callable[..., Any]]:
    async with durably_factory(backend.url, polling_interval=0.05) as factory:
        yield factory


async def status_of(durably: Any, run_id: str) -> str:
    return str((await durably.get_run(run_id)).status)


async def test_a_sleep_releases_the_run_and_resumes_after_it_without_rerunning_steps(make: Any) -> None:
    calls: list[str] = []

    async def napper(step: Step, _: Any) -> dict[str, Any]:
        await step.run("before", lambda: calls.append("before"))
        await step.sleep("nap", 1.5)  # long enough to be seen waiting on a slow, shared machine
        await step.run("after", lambda: calls.append("after"))
        return {"attempt": step.attempt}

    job = define_job(name="napper", run=napper)
    durably = await make(job, max_concurrent_runs=1)
    run = await durably.trigger("napper")
    await until(lambda: status_of(durably, run.id), what="run started")
    await until(lambda: _is(durably, run.id, "waiting"), what="run waiting")
    record = await durably.get_run(run.id)
    assert record.worker_id is None and record.lease_expires_at is None
    assert record.waiting_for["kind"] == "sleep" and record.waiting_for["until"] is not None
    assert durably.worker.free_slots() == 1  # the sleeper holds no slot
    await until(lambda: _is(durably, run.id, "completed"), what="run completed")
    done = await durably.get_run(run.id)
    assert calls == ["before", "after"] and done.output == {"attempt": 2}
    attempts = await durably.get_attempts(run.id)
    assert [a.outcome for a in attempts] == ["suspended", "completed"]
    steps = [s.name for s in await durably.get_steps(run.id)]
    assert steps == ["before", "nap", "after"]


async def test_sleep_until_a_past_time_returns_at_once(make: Any) -> None:
    async def job_fn(step: Step, _: Any) -> dict[str, str]:
        await step.sleep_until("past", datetime.now(UTC) - timedelta(seconds=1))
        return {"done": "yes"}

    durably = await make(define_job(name="past", run=job_fn))
    result = await durably.jobs.past.trigger_and_wait(timeout=10)
    assert result.output == {"done": "yes"}


async def _is(durably: Any, run_id: str, status: str) -> bool:
    return await status_of(durably, run_id) == status


async def test_an_event_wakes_the_waiting_run_with_its_data(make: Any) -> None:
    async def approval(step: Step, _: Any) -> Any:
        await step.run("report", lambda: "sent")
        decision = await step.wait_for_event("approval", "approve:2026-12-06", timeout="1h")
        return {"decision": decision}

    durably = await make(define_job(name="approval", run=approval))
    run = await durably.trigger("approval")
    await until(lambda: _is(durably, run.id, "waiting"), what="run waiting")
    record = await durably.get_run(run.id)
    assert record.waiting_for["kind"] == "event" and record.waiting_for["key"] == "approve:2026-12-06"
    assert await durably.send_event("approve:other") == 0
    assert await durably.send_event("approve:2026-12-06", {"ok": True}) == 1
    await until(lambda: _is(durably, run.id, "completed"), what="run completed")
    assert (await durably.get_run(run.id)).output == {"decision": {"ok": True}}
    assert await durably.send_event("approve:2026-12-06", {"ok": False}) == 0  # received once


async def test_an_event_timeout_is_a_step_failure_and_a_retried_wait_starts_over(make: Any) -> None:
    seen: list[str] = []

    async def waiter(step: Step, _: Any) -> Any:
        try:
            return await step.wait_for_event("approval", "never", timeout=0.3)
        except EventTimeoutError as exc:
            seen.append(f"{step.attempt}:{exc.key}")
            raise

    job = define_job(name="waiter", run=waiter, retry=Retry(max_attempts=2, backoff=0.05, jitter=0))
    durably = await make(job)
    run = await durably.trigger("waiter")
    await until(lambda: _is(durably, run.id, "failed"), timeout=10, what="run failed")
    record = await durably.get_run(run.id)
    assert record.failed_attempts == 2 and "EventTimeoutError" in (record.error or "")
    assert record.failed_step_name == "approval"
    # each try waited again (suspended) before timing out: suspend, fail, suspend, fail
    outcomes = [a.outcome for a in await durably.get_attempts(run.id)]
    assert outcomes == ["suspended", "failed", "suspended", "failed"]
    assert len(seen) == 2


async def test_children_complete_under_a_parent_with_one_slot_and_are_gathered(make: Any) -> None:
    started: list[int] = []

    async def child(step: Step, payload: Any) -> dict[str, int]:
        started.append(payload["n"])
        return {"square": await step.run("square", lambda: payload["n"] ** 2)}

    async def parent(step: Step, _: Any) -> Any:
        results = await asyncio.gather(*(step.run_job(f"child-{n}", "child", {"n": n}) for n in range(3)))
        return {"sum": sum(r["square"] for r in results)}

    durably = await make(define_job(name="child", run=child), define_job(name="parent", run=parent))
    run = await durably.trigger("parent")
    await until(lambda: _is(durably, run.id, "completed"), timeout=15, what="parent completed")
    assert (await durably.get_run(run.id)).output == {"sum": 0 + 1 + 4}
    children = await durably.list_children(run.id)
    assert sorted(c.input["n"] for c in children) == [0, 1, 2] and sorted(started) == [0, 1, 2]
    assert all(c.parent_run_id == run.id and c.status == "completed" for c in children)
    # the three children were waited for together: one suspend, then the completing attempt
    assert [a.outcome for a in await durably.get_attempts(run.id)] == ["suspended", "completed"]


async def test_a_failed_child_raises_child_run_failed_in_the_parent(make: Any) -> None:
    async def bad(step: Step, _: Any) -> dict[str, str]:
        raise RuntimeError("child broke")

    async def parent(step: Step, _: Any) -> Any:
        try:
            return await step.run_job("kid", "bad")
        except ChildRunFailedError as exc:
            return {"child_error": exc.error, "status": exc.status}

    durably = await make(define_job(name="bad", run=bad), define_job(name="parent", run=parent))
    result = await durably.jobs.parent.trigger_and_wait(timeout=15)
    assert result.output["status"] == "failed" and "child broke" in result.output["child_error"]


async def test_a_cancelled_parent_cancels_its_waiting_children(make: Any) -> None:
    async def sleeper(step: Step, _: Any) -> dict[str, str]:
        await step.sleep("long", "1h")
        return {}

    async def parent(step: Step, _: Any) -> Any:
        return await step.run_job("kid", "sleeper")

    durably = await make(define_job(name="sleeper", run=sleeper), define_job(name="parent", run=parent))
    run = await durably.trigger("parent")

    async def child_sleeping() -> bool:
        kids = await durably.list_children(run.id)
        return bool(kids) and kids[0].status == "waiting"

    await until(child_sleeping, timeout=10, what="child sleeping")
    await until(lambda: _is(durably, run.id, "waiting"), what="parent waiting")
    assert (await durably.get_run(run.id)).waiting_for["children"] == 1
    await durably.cancel(run.id)
    [kid] = await durably.list_children(run.id)
    assert kid.status == "cancelled"


async def test_event_input_is_checked(make: Any) -> None:
    durably = await make()
    with pytest.raises(InvalidArgumentError, match="event key"):
        await durably.send_event("")
    with pytest.raises(InvalidArgumentError, match="event data"):
        await durably.send_event("k", {"bad": object()})


async def test_retention_purges_events_with_the_runs_cutoff(make: Any) -> None:
    from durably_sched.clock import ManualClock
    from durably_sched.ops.retention import Retention

    durably = await make()
    assert await durably.send_event("nobody-waits", {"n": 1}) == 0
    kept = Retention(durably, timedelta(hours=1), lambda: None)
    assert (await kept.run_once()).events == 0
    later = ManualClock(datetime.now(UTC) + timedelta(hours=2))  # the same retention, two hours on
    purged = Retention(durably, timedelta(hours=1), lambda: None, clock=later)
    assert (await purged.run_once()).events == 1


async def test_a_lease_renewal_racing_a_suspend_is_not_a_lost_lease(make: Any) -> None:
    from durably_sched.execution.leases import ActiveRun
    from durably_sched.store.base import NewRun
    from durably_sched.store.records import WaitState
    from durably_sched.store.waits import NewWait

    durably = await make(start=False)
    worker, store = durably.worker, durably.store
    await store.create_runs([NewRun(id=f"r{n}", job_name="j", input={}) for n in range(2)])
    runs = await store.claim(worker.worker_id, ["j"], 2, 30.0)
    tasks = []
    for run in runs:  # both stop being "running" (one waits); the renewal finds neither running
        await store.suspend_run(run.id, run.generation, NewWait("sleep", "nap", seconds=60))
        ctx = worker.context(run)
        task = asyncio.get_running_loop().create_task(asyncio.sleep(60))
        worker.active[run.id] = ActiveRun(ctx, task)
        tasks.append(task)
    worker.active[runs[0].id].ctx.suspended_on = WaitState(kind="sleep", step="nap")  # the one that waits
    await worker.leases.beat()
    assert not tasks[0].cancelled() and worker.lease_losses == 1  # only the other one counts as lost
    await asyncio.sleep(0)
    assert tasks[1].cancelled()
    tasks[0].cancel()
    worker.active.clear()
