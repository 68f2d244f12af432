"""The facade's API beyond the core, on SQLite and PostgreSQL (every test takes the ``backend``
fixture through ``make``): coalescing triggers, ``wait_for_run`` callbacks, one-shot processing,
retention options, typed labels and the events added with them.

What users rely on is stated per test. Two Durably instances on one database stand for two
processes (each has its own connections and worker); real processes are in tests/system.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict

from durably_sched import (
    Durably,
    InputValidationError,
    InvalidArgumentError,
    InvalidStateError,
    LogRecord,
    Progress,
    Step,
    UnknownJobError,
    create_durably,
    define_job,
)
from durably_sched.events import EVENT_TYPES
from durably_sched.store.base import Fire, NewRun
from tests.backends import Backend
from tests.helpers import until


@pytest.fixture
async def make(backend: Backend) -> AsyncIterator[Callable[..., Any]]:
    made: list[Durably] = []

    async def factory(*jobs: Any, start: bool = True, **options: Any) -> Durably:
        options.setdefault("polling_interval", 0.05)
        options.setdefault("heartbeat_interval", 0.2)
        options.setdefault("stale_threshold", 5.0)
        durably = create_durably(backend.url, **options).register(list(jobs))
        await durably.migrate()
        if start:
            await durably.start()
        else:
            await durably.start(worker=False)
        made.append(durably)
        return durably

    yield factory
    for durably in made:
        await durably.close()


async def _ok(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    return {"i": payload.get("i")}


def job(name: str = "work", run: Any = _ok) -> Any:
    return define_job(name=name, run=run)


# -- coalescing ---------------------------------------------------------------------------------------


async def test_coalesce_skip_returns_the_pending_run_of_the_key_and_says_so(make: Any) -> None:
    durably = await make(job(), start=False)
    seen: list[Any] = []
    durably.on("run:trigger", seen.append)
    durably.on("run:coalesced", seen.append)
    first = await durably.jobs.work.trigger({"i": 1}, concurrency_key="sync:acme", coalesce="skip")
    again = await durably.jobs.work.trigger(
        {"i": 2}, concurrency_key="sync:acme", coalesce="skip", labels={"by": "webhook"}
    )
    by_name = await durably.trigger("work", {"i": 3}, concurrency_key="sync:acme", coalesce="skip")
    assert first.disposition == "created"
    assert (again.disposition, again.id) == ("coalesced", first.id)
    assert (by_name.disposition, by_name.id) == ("coalesced", first.id)
    assert again.record.input == {"i": 1}  # the run that will execute is the first one
    assert [r.id for r in await durably.get_runs()] == [first.id]
    assert [e.type for e in seen] == ["run:trigger", "run:coalesced", "run:coalesced"]
    coalesced = seen[1]
    assert coalesced.run_id == first.id and coalesced.job_name == "work"
    assert coalesced.skipped_input == {"i": 2} and coalesced.skipped_labels == {"by": "webhook"}
    # Once that run has executed, the next coalescing trigger makes a new one.
    [done] = await durably.process_until_idle()
    assert done.id == first.id and done.status == "completed"
    later = await durably.jobs.work.trigger({"i": 4}, concurrency_key="sync:acme", coalesce="skip")
    assert later.disposition == "created" and later.id != first.id


async def test_trigger_and_wait_with_coalesce_waits_for_the_joined_run(make: Any) -> None:
    durably = await make(job(), start=False)
    pending = await durably.jobs.work.trigger({"i": 1}, concurrency_key="k")
    waiting = asyncio.ensure_future(
        durably.jobs.work.trigger_and_wait({"i": 2}, concurrency_key="k", coalesce="skip", timeout=10)
    )
    await until(lambda: durably.waiters._waiters.get(pending.id), what="the waiter on the joined run")
    await durably.process_until_idle()
    result = await waiting
    assert (result.id, result.disposition, result.output) == (pending.id, "coalesced", {"i": 1})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"coalesce": "skip"}, r"coalesce='skip' needs a concurrency_key"),
        ({"coalesce": "merge", "concurrency_key": "k"}, r"coalesce: unknown mode 'merge'"),
        ({"coalesce": True, "concurrency_key": "k"}, r"coalesce: unknown mode True"),
    ],
)
async def test_bad_coalesce_arguments_are_one_clear_error_and_store_nothing(
    make: Any, options: dict[str, Any], message: str
) -> None:
    durably = await make(job(), start=False)
    with pytest.raises(InvalidArgumentError, match=message) as raised:
        await durably.jobs.work.trigger({}, **options)
    assert "\n" not in str(raised.value)
    assert isinstance(raised.value, ValueError)
    with pytest.raises(InvalidArgumentError, match=message):
        await durably.jobs.work.trigger_and_wait({}, timeout=1, **options)
    assert await durably.get_runs() == []


# -- wait_for_run with callbacks ----------------------------------------------------------------------


async def test_wait_for_run_reports_progress_and_logs_of_a_run_executing_elsewhere(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run executes in another instance; the waiter sees every log line stored after it began
    waiting (in order, once each, the last ones stored with the completion included) and every
    progress change, but nothing from before the call (no replay, as in the TypeScript library)."""
    gate_a, gate_b = asyncio.Event(), asyncio.Event()

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        step.log.info("before")
        await step.progress(1, 3, "one")
        await step.run("a", gate_a.wait)
        step.log.info("a", n=1)
        await step.progress(2, 3, "two")
        await step.run("b", gate_b.wait)
        step.log.warning("b")
        await step.progress(3, 3)
        step.log.info("last")  # stored with the completion
        return {"done": True}

    definition = define_job(name="reporting", run=fn)
    executor = await make(definition)
    waiter = await make(definition, start=False)
    run = await waiter.jobs.reporting.trigger({})
    await until(lambda: _has_log(waiter, run.id, "before"), what="the first log line")

    looked = asyncio.Event()
    original = waiter.store.last_log_id

    async def spy(run_id: str) -> int:
        value = await original(run_id)
        looked.set()
        return value

    monkeypatch.setattr(waiter.store, "last_log_id", spy)
    progress: list[Progress] = []
    logs: list[LogRecord] = []

    async def on_log(entry: LogRecord) -> None:  # coroutine callbacks are awaited
        logs.append(entry)

    waiting = asyncio.ensure_future(
        waiter.wait_for_run(run.id, timeout=30, on_progress=progress.append, on_log=on_log)
    )
    await looked.wait()
    gate_a.set()
    await until(lambda: [p.current for p in progress] == [2], timeout=10, what="progress 2")
    gate_b.set()
    record = await waiting
    assert record.status == "completed" and record.output == {"done": True}
    assert [(lg.level, lg.message) for lg in logs] == [("info", "a"), ("warning", "b"), ("info", "last")]
    assert logs[0].data == {"n": 1} and logs[0].step_name is None
    assert [lg.id for lg in logs] == sorted(lg.id for lg in logs)
    assert [(p.current, p.total, p.message) for p in progress] == [(2, 3, "two"), (3, 3, None)]
    assert executor.worker.active == {}


async def _has_log(durably: Durably, run_id: str, message: str) -> bool:
    return any(lg.message == message for lg in await durably.get_logs(run_id))


async def test_trigger_and_wait_callbacks_see_the_whole_run_executed_here(make: Any) -> None:
    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        for i in range(3):
            step.log.info(f"line {i}")
            await step.run(f"s{i}", lambda: None)
        await step.progress(3, 3, "done")
        return {"ok": True}

    durably = await make(define_job(name="here", run=fn))
    logs: list[str] = []
    progress: list[int] = []
    result = await durably.jobs.here.trigger_and_wait(
        {},
        timeout=10,
        on_log=lambda lg: logs.append(lg.message),
        on_progress=lambda p: progress.append(p.current),
    )
    assert result.output == {"ok": True} and result.disposition == "created"
    assert logs == ["line 0", "line 1", "line 2"]
    assert progress == [3]


async def test_wait_for_run_callbacks_time_out_and_their_errors_propagate(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    durably = await make(job(), start=False)
    run = await durably.jobs.work.trigger({})
    with pytest.raises(TimeoutError, match=f"run {run.id} did not finish within 0.3s"):
        await durably.wait_for_run(run.id, timeout=0.3, on_log=lambda lg: None)
    assert (await durably.get_run(run.id)).status == "pending"  # the run goes on

    gate = asyncio.Event()

    async def noisy(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("gate", gate.wait)
        step.log.info("hello")
        await step.run("s", lambda: None)
        return {}

    executor = await make(define_job(name="noisy", run=noisy))
    original = durably.store.last_log_id

    async def open_gate_once_waiting(run_id: str) -> int:
        value = await original(run_id)
        gate.set()
        return value

    monkeypatch.setattr(durably.store, "last_log_id", open_gate_once_waiting)

    def broken(entry: LogRecord) -> None:
        raise RuntimeError(f"callback saw {entry.message}")

    noisy_run = await executor.jobs.noisy.trigger({})
    with pytest.raises(RuntimeError, match="callback saw hello"):
        await durably.wait_for_run(noisy_run.id, timeout=10, on_log=broken)
    # A finished run returns at once, without callbacks (nothing happens from now on).
    final = await executor.wait_for_run(noisy_run.id, timeout=10)
    assert await durably.wait_for_run(noisy_run.id, on_log=broken) == final


# -- one-shot processing ------------------------------------------------------------------------------


async def test_process_until_idle_runs_what_is_claimable_here_and_nothing_else(
    make: Any, backend: Backend
) -> None:
    calls: list[str] = []

    async def record(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        calls.append(payload["name"])
        return {"name": payload["name"]}

    async def fail(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("first", lambda: 1)
        raise ValueError("bad data")

    a, b, bad = job("a", record), job("b", record), job("bad", fail)
    here = await make(a, b, bad, start=False)
    other = await make(a, job("only-elsewhere"), start=False)
    for name in ("a1", "a2", "a3"):
        await here.jobs.a.trigger({"name": name})
    for name in ("b1", "b2"):
        await here.jobs.b.trigger({"name": name})
    failing = await here.jobs.bad.trigger({})
    elsewhere = await other.trigger("only-elsewhere", {})
    # A run held by another worker under a live lease: not this call's work, not waited for.
    held_run = await here.jobs.a.trigger({"name": "held"})
    [held] = await other.store.claim("other-worker", ["a"], 1, 60.0, run_ids=[held_run.id])

    only_a = await here.process_until_idle(jobs=["a"])
    assert [r.labels for r in only_a] == [{}, {}, {}] and calls == ["a1", "a2", "a3"]
    assert [r.status for r in only_a] == ["completed"] * 3
    assert [r.output for r in only_a] == [{"name": n} for n in ("a1", "a2", "a3")]
    rest = await here.process_until_idle()
    assert calls == ["a1", "a2", "a3", "b1", "b2"]
    assert [r.job_name for r in rest] == ["b", "b", "bad"]
    assert rest[-1].id == failing.id and rest[-1].status == "failed"
    assert rest[-1].error == "ValueError: bad data" and rest[-1].failed_step_name is None
    assert await here.process_one() is None
    assert (await here.get_run(elsewhere.id)).status == "pending"
    assert (await here.get_run(held.id)).status == "running"


async def test_process_one_and_max_runs_stop_after_that_many(make: Any) -> None:
    durably = await make(job(), start=False, max_concurrent_runs=4)
    runs = [await durably.jobs.work.trigger({"i": i}) for i in range(5)]
    one = await durably.process_one()
    assert one is not None and one.id == runs[0].id and one.status == "completed"
    two = await durably.process_until_idle(max_runs=2)
    assert [r.id for r in two] == [runs[1].id, runs[2].id]
    assert [r.status for r in await durably.get_runs(status="pending")] == ["pending", "pending"]
    with pytest.raises(InvalidArgumentError, match="max_runs: expected a positive integer"):
        await durably.process_until_idle(max_runs=0)
    with pytest.raises(UnknownJobError, match="unknown job 'nope'"):
        await durably.process_until_idle(jobs=["nope"])
    with pytest.raises(InvalidArgumentError, match="jobs: expected a list"):
        await durably.process_until_idle(jobs="work")


async def test_one_shot_processing_registers_the_worker_and_a_clean_close_removes_it(
    make: Any, backend: Backend
) -> None:
    """`workers list` must not show a one-shot invocation that ended cleanly (live until its heartbeat
    goes stale, then "gone" and taken over: what a crash looks like)."""
    durably = await make(job(), start=False)
    await durably.jobs.work.trigger({"i": 1})
    assert len(await durably.process_until_idle()) == 1
    [me] = await durably.list_workers()
    assert me.id == durably.worker.worker_id and me.state == "live"
    await durably.close()
    observer = create_durably(backend.url)
    try:
        await observer.init()
        assert await observer.list_workers() == []
    finally:
        await observer.close()


async def test_process_until_idle_runs_up_to_the_concurrency_and_keyed_runs_in_order(make: Any) -> None:
    together = asyncio.Barrier(3)
    order: list[int] = []

    async def meet(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.wait_for(together.wait(), 10)  # only passes if three run at once
        return {}

    async def keyed(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        order.append(payload["i"])
        await step.run("s", lambda: None)
        return {}

    durably = await make(job("meet", meet), job("keyed", keyed), start=False, max_concurrent_runs=3)
    for _ in range(3):
        await durably.jobs.meet.trigger({})
    for i in range(4):
        await durably.jobs.keyed.trigger({"i": i}, concurrency_key="tenant")
    done = await durably.process_until_idle()
    assert [r.status for r in done] == ["completed"] * 7
    assert order == [0, 1, 2, 3]  # one at a time, each unblocking the next in the same call


async def test_process_until_idle_refuses_a_running_worker_loop(make: Any) -> None:
    durably = await make(job())
    with pytest.raises(InvalidStateError, match=r"worker loop is running.*start\(worker=False\)"):
        await durably.process_until_idle()


async def test_stop_ends_process_until_idle_and_releases_the_run_at_its_checkpoint(make: Any) -> None:
    entered = asyncio.Event()

    async def slow(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("quick", lambda: 1)
        entered.set()
        await step.run("long", lambda: asyncio.sleep(60))
        return {}

    durably = await make(job("slow", slow), start=False)
    run = await durably.jobs.slow.trigger({})
    processing = asyncio.ensure_future(durably.process_until_idle())
    await until(entered.is_set, timeout=10)
    await durably.stop(grace=0.2)
    claimed = await asyncio.wait_for(processing, 10)
    assert [r.id for r in claimed] == [run.id]
    record = await durably.get_run(run.id)
    assert record.status == "pending" and record.worker_id is None  # released: resumable at once
    assert [s.name for s in await durably.get_steps(run.id)] == ["quick"]


# -- retention options --------------------------------------------------------------------------------


async def test_retain_runs_purges_expired_runs_when_idle_and_in_the_background(
    make: Any, backend: Backend
) -> None:
    durably = await make(job(), start=False, retain_runs="1h")
    retention = durably.retention
    assert retention is not None and retention.older_than == dt.timedelta(hours=1)
    await until(lambda: retention.last_pass_at is not None, what="the pass start() began")
    old, recent = await durably.jobs.work.trigger({}), await durably.jobs.work.trigger({})
    await durably.process_until_idle()
    await backend.set_completed_at(old.id, dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    # Reaching idle runs a pass, unless one ended within the retention interval (the one start()
    # began ended just now): the old run survives this call ...
    await durably.process_until_idle()
    assert old.id in {r.id for r in await durably.get_runs()}
    retention.last_pass_at = None  # ... and goes once the interval has passed.
    await durably.jobs.work.trigger({})
    assert len(await durably.process_until_idle()) == 1
    left = {r.id for r in await durably.get_runs()}
    assert old.id not in left and recent.id in left
    # In the background from start(): a long-running instance purges without being asked.
    expired = await durably.jobs.work.trigger({})
    await durably.process_until_idle()
    await backend.set_completed_at(expired.id, dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    background = await make(job(), retain_runs=dt.timedelta(hours=1))
    assert background.retention is not None and background.retention.running
    await until(lambda: _gone(background, expired.id), timeout=10, what="the background purge")


async def _gone(durably: Durably, run_id: str) -> bool:
    return run_id not in {r.id for r in await durably.get_runs()}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("30x", "retain_runs: invalid duration '30x'"),
        ("0s", "retain_runs: must be longer than 0"),
        (dt.timedelta(0), "retain_runs: must be longer than 0"),
        (3.5, "retain_runs: expected a duration such as '30d'"),
    ],
)
def test_bad_retain_runs_is_one_clear_error(backend: Backend, value: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        create_durably(backend.url, retain_runs=value)


async def test_preserve_steps_false_drops_the_steps_of_completed_runs_only(make: Any) -> None:
    calls: list[str] = []
    fail_once = {"n": 0}

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("one", lambda: calls.append("one"))
        if payload.get("fail") and fail_once["n"] == 0:
            fail_once["n"] += 1
            raise RuntimeError("first attempt fails")
        await step.run("two", lambda: calls.append("two"))
        return {}

    durably = await make(job("steps", fn), preserve_steps=False)
    ok = await durably.jobs.steps.trigger_and_wait({}, timeout=10)
    await until(lambda: _no_steps(durably, ok.id), what="the completed run's steps to go")
    assert (await durably.get_run(ok.id)).step_count == 2
    failing = await durably.jobs.steps.trigger({"fail": True})
    assert (await durably.wait_for_run(failing.id, timeout=10)).status == "failed"
    assert [s.name for s in await durably.get_steps(failing.id)] == ["one"]  # kept for retry
    calls.clear()
    await durably.retry(failing.id)
    assert (await durably.wait_for_run(failing.id, timeout=10)).status == "completed"
    assert calls == ["two"]  # resumed after "one"
    await durably.stop()  # so that the next run executes in the instance that keeps steps
    kept = await make(job("steps", fn))
    run = await kept.jobs.steps.trigger_and_wait({}, timeout=10)
    assert [s.name for s in await kept.get_steps(run.id)] == ["one", "two"]  # the default keeps them


async def _no_steps(durably: Durably, run_id: str) -> bool:
    return await durably.get_steps(run_id) == []


# -- typed labels ---------------------------------------------------------------------------------------


class Labels(BaseModel):
    model_config = ConfigDict(extra="forbid")

    team: Literal["data", "web"]
    env: str = "prod"


async def test_typed_labels_are_validated_and_normalised_at_trigger(make: Any) -> None:
    durably = await make(job(), start=False, labels=Labels)
    run = await durably.jobs.work.trigger({}, labels={"team": "data"})
    assert run.record.labels == {"team": "data", "env": "prod"}
    other = await durably.jobs.work.trigger({}, labels=Labels(team="web", env="dev"))  # type: ignore[arg-type]
    assert other.record.labels == {"team": "web", "env": "dev"}
    batch = await durably.jobs.work.batch_trigger([{}, {}], labels={"team": "web"})
    assert [r.record.labels for r in batch] == [{"team": "web", "env": "prod"}] * 2
    with pytest.raises(InputValidationError, match=r"^labels: field 'team': Input should be 'data' or 'web'"):
        await durably.jobs.work.trigger({}, labels={"team": "ops"})
    with pytest.raises(InputValidationError, match=r"labels: field 'team': Field required \(Labels\)"):
        await durably.jobs.work.trigger({}, labels={})
    with pytest.raises(InputValidationError, match=r"labels: field 'owner': Extra inputs are not permitted"):
        await durably.jobs.work.trigger({}, labels={"team": "data", "owner": "me"})
    assert len(await durably.get_runs()) == 4  # nothing stored for the refused ones
    # Filters in get_runs.
    assert [r.id for r in await durably.get_runs(labels={"team": "data"})] == [run.id]
    assert len(await durably.get_runs(labels={"team": "web", "env": "prod"})) == 2
    assert await durably.get_runs(labels={"team": "data", "env": "dev"}) == []


async def test_typed_labels_let_system_labels_through_and_refuse_non_string_fields(make: Any) -> None:
    durably = await make(job(), start=False, labels=Labels)
    when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    fired = await durably.fire(
        Fire(
            schedule="nightly",
            fire_time=when,
            run=NewRun(
                id="r-1",
                job_name="work",
                input={},
                idempotency_key="schedule:nightly:2030-01-01T00:00:00Z",
                labels={"schedule": "nightly", "scheduled_for": "2030-01-01T00:00:00Z", "team": "web"},
            ),
        )
    )
    assert fired.run is not None
    assert fired.run.labels == {
        "team": "web",
        "env": "prod",
        "schedule": "nightly",
        "scheduled_for": "2030-01-01T00:00:00Z",
    }
    with pytest.raises(InputValidationError, match=r"^schedule 'weekly': labels: field 'team'"):
        await durably.fire(
            Fire(
                schedule="weekly",
                fire_time=when,
                run=NewRun(id="r-2", job_name="work", input={}, labels={"schedule": "weekly"}),
            )
        )

    class Numbered(BaseModel):
        priority: int

    numbered = await make(job(), start=False, labels=Numbered)
    with pytest.raises(
        InputValidationError, match="field 'priority' of Numbered is int 1; label values are strings"
    ):
        await numbered.jobs.work.trigger({}, labels={"priority": 1})
    with pytest.raises(InvalidArgumentError, match="labels: expected a pydantic BaseModel subclass"):
        create_durably("sqlite:///unused.db", labels=dict)  # type: ignore[arg-type]


# -- events ----------------------------------------------------------------------------------------------


async def test_lease_and_delete_events(make: Any) -> None:
    proceed = asyncio.Event()

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("wait", proceed.wait)
        return {}

    durably = await make(define_job(name="ev", run=fn), start=False, labels=None)
    events: dict[str, list[Any]] = {name: [] for name in ("run:leased", "run:lease-renewed", "run:delete")}
    for name, sink in events.items():
        durably.on(name, sink.append)
    run = await durably.jobs.ev.trigger({}, labels={"team": "x"})
    await durably.start()
    await until(lambda: events["run:leased"] and events["run:lease-renewed"], timeout=10)
    leased = events["run:leased"][0]
    assert (leased.run_id, leased.job_name, leased.labels) == (run.id, "ev", {"team": "x"})
    assert leased.worker_id == durably.worker.worker_id and leased.attempt == 1 and leased.generation == 1
    assert leased.lease_expires_at is not None and leased.lease_expires_at.tzinfo is not None
    renewed = events["run:lease-renewed"][0]
    assert renewed.run_id == run.id and renewed.lease_seconds == 5.0 and renewed.worker_id == leased.worker_id
    with pytest.raises(InvalidStateError):
        await durably.delete_run(run.id)  # running: refused, no event
    proceed.set()
    await durably.wait_for_run(run.id, timeout=10)
    await durably.delete_run(run.id)
    [deleted] = events["run:delete"]
    assert (deleted.run_id, deleted.job_name, deleted.labels) == (run.id, "ev", {"team": "x"})
    assert {"run:coalesced", "run:leased", "run:lease-renewed", "run:delete"} <= set(EVENT_TYPES)
