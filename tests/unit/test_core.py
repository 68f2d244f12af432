"""The durable core in one process, on SQLite and on PostgreSQL: what job authors rely on.

Every test that takes ``db_url`` (or ``make``) runs once per backend (the ``backend`` fixture of
tests/conftest.py); the few that are about SQLite itself (its file lock, creating a new file) use
``sqlite_url``. Crash and multi-process behaviour is in tests/system; the store contract in
tests/contract.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from durably_sched import (
    Durably,
    InputValidationError,
    InvalidStateError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    SchemaVersionError,
    Step,
    create_durably,
    define_job,
)
from durably_sched.store._common import SCHEMA_VERSION
from tests.backends import Backend
from tests.helpers import durably_factory, until


class ImageIn(BaseModel):
    filename: str
    size: int = 1


class ImageOut(BaseModel):
    url: str


@pytest.fixture
def db_url(backend: Backend) -> str:
    return backend.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'core.db'}"


@pytest.fixture
async def make(db_url: str) -> AsyncIterator[Callable[..., Any]]:
    async with durably_factory(db_url, stale_threshold=1.0) as factory:
        yield factory


# -- steps: checkpoint, replay, encoding ---------------------------------------------------------


async def test_step_results_are_replayed_on_retry_without_calling_again(make: Any) -> None:
    calls: list[str] = []
    attempts = {"n": 0}

    async def flaky(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        first = await step.run("first", lambda: calls.append("first") or {"v": 1})
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("boom after first step")
        second = await step.run("second", lambda: calls.append("second") or {"v": first["v"] + 1})
        return {"total": second["v"]}

    job = define_job(name="flaky", run=flaky)
    durably = await make(job)
    with pytest.raises(RunFailedError, match="boom after first step") as failure:
        await durably.jobs.flaky.trigger_and_wait({}, timeout=5)
    run_id = failure.value.run_id
    await durably.retry(run_id)
    record = await durably.wait_for_run(run_id, timeout=5)
    assert record.status == "completed"
    assert record.output == {"total": 2}
    assert calls == ["first", "second"]  # "first" ran once although the job body ran twice
    assert [s.name for s in await durably.get_steps(run_id)] == ["first", "second"]


async def test_step_value_is_the_same_on_first_run_and_on_replay(make: Any) -> None:
    seen: list[Any] = []
    fail_once = {"done": False}

    class Item(BaseModel):
        when: dt.datetime
        price: decimal.Decimal
        ref: uuid.UUID

    fixed = Item(
        when=dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC),
        price=decimal.Decimal("12.30"),
        ref=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    )

    async def job_fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        value = await step.run("make", lambda: {"item": fixed, "tuple": (1, 2), "when": fixed.when})
        seen.append(value)
        if not fail_once["done"]:
            fail_once["done"] = True
            raise RuntimeError("retry me")
        return {}

    durably = await make(define_job(name="encode", run=job_fn))
    with pytest.raises(RunFailedError) as failure:
        await durably.jobs.encode.trigger_and_wait({}, timeout=5)
    await durably.retry(failure.value.run_id)
    await durably.wait_for_run(failure.value.run_id, timeout=5)
    assert len(seen) == 2
    assert seen[0] == seen[1]
    assert seen[0] == {
        "item": {
            "when": "2026-03-29T01:30:00Z",
            "price": "12.30",
            "ref": "12345678-1234-5678-1234-567812345678",
        },
        "tuple": [1, 2],
        "when": "2026-03-29T01:30:00Z",
    }


async def test_unencodable_step_value_fails_the_step_with_its_name(make: Any) -> None:
    class Opaque:
        pass

    async def job_fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("opaque", Opaque)
        return {}

    durably = await make(define_job(name="opaque", run=job_fn))
    with pytest.raises(RunFailedError) as failure:
        await durably.jobs.opaque.trigger_and_wait({}, timeout=5)
    assert failure.value.failed_step_name == "opaque"
    assert "step 'opaque' returned Opaque" in str(failure.value.error)
    assert await durably.get_steps(failure.value.run_id) == []


async def test_step_name_used_twice_fails_the_run(make: Any) -> None:
    calls = []

    async def job_fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("same", lambda: calls.append(1))
        await step.run("same", lambda: calls.append(2))
        return {}

    durably = await make(define_job(name="dup", run=job_fn))
    with pytest.raises(RunFailedError, match="used twice"):
        await durably.jobs.dup.trigger_and_wait({}, timeout=5)
    assert calls == [1]


async def test_sync_step_runs_in_a_thread_and_does_not_block_other_runs(make: Any) -> None:
    release = threading.Event()
    threads: list[str] = []

    async def blocking(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        def wait_for_release() -> str:
            threads.append(threading.current_thread().name)
            assert release.wait(5)
            return "released"

        return {"v": await step.run("block", wait_for_release)}

    async def quick(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {"v": await step.run("q", lambda: 1)}

    durably = await make(
        define_job(name="blocking", run=blocking), define_job(name="quick", run=quick), max_concurrent_runs=2
    )
    slow = await durably.jobs.blocking.trigger({})
    await until(lambda: threads)
    # The loop is free: another run completes and heartbeats renew the blocked run's lease.
    result = await durably.jobs.quick.trigger_and_wait({}, timeout=5)
    assert result.output == {"v": 1}
    before = (await durably.get_run(slow.id)).lease_expires_at
    await until(lambda: _lease_moved(durably, slow.id, before))
    release.set()
    done = await durably.wait_for_run(slow.id, timeout=5)
    assert done.status == "completed" and done.output == {"v": "released"}
    assert threads[0] != threading.main_thread().name


async def test_trigger_and_wait_never_runs_more_than_max_concurrent_runs(make: Any) -> None:
    """Runs that a trigger of this process hands straight to its own worker (claimed in the insert
    on PostgreSQL) take a worker slot like claimed ones: never more at once than the limit, and
    none waits for a poll when a slot is free."""
    running = 0
    peak = 0
    gate = asyncio.Event()

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        await step.run("s", lambda: 1)
        running -= 1
        return {"i": payload["i"]}

    durably = await make(define_job(name="slots", run=fn), max_concurrent_runs=3, polling_interval=30.0)
    job = durably.jobs.slots
    waits = [asyncio.ensure_future(job.trigger_and_wait({"i": i}, timeout=10)) for i in range(7)]
    await until(lambda: running == 3)
    await asyncio.sleep(0.1)
    assert (running, peak, durably.worker.free_slots()) == (3, 3, 0)
    gate.set()
    results = await asyncio.gather(*waits)
    assert sorted(r.output["i"] for r in results) == list(range(7))
    assert peak == 3 and durably.worker.free_slots() == 3
    # An idle worker with a 30 s poll: a trigger starts at once all the same.
    started = time.perf_counter()
    await durably.jobs.slots.trigger_and_wait({"i": 7}, timeout=5)
    assert time.perf_counter() - started < 5


async def test_a_run_triggered_as_the_worker_stops_is_left_pending(make: Any) -> None:
    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {"v": await step.run("s", lambda: 1)}

    durably = await make(define_job(name="late", run=fn))
    await durably.worker.stop(1.0)
    with pytest.raises(TimeoutError):
        await durably.jobs.late.trigger_and_wait({}, timeout=0.3)
    assert durably.worker.free_slots() == 1
    [record] = await durably.get_runs()
    assert (record.status, record.worker_id) == ("pending", None)


async def _lease_moved(durably: Durably, run_id: str, before: dt.datetime | None) -> bool:
    lease = (await durably.get_run(run_id)).lease_expires_at
    return lease is not None and before is not None and lease > before


# -- input / output validation ----------------------------------------------------------------


async def test_invalid_input_is_rejected_at_trigger_and_nothing_is_stored(make: Any) -> None:
    async def fn(step: Step, payload: ImageIn) -> ImageOut:
        return ImageOut(url=payload.filename)

    durably = await make(define_job(name="img", input=ImageIn, output=ImageOut, run=fn))
    with pytest.raises(InputValidationError, match="field 'size'"):
        await durably.jobs.img.trigger({"filename": "a.jpg", "size": "big"})
    assert await durably.get_runs() == []


async def test_invalid_output_fails_the_run_with_a_clear_message(make: Any) -> None:
    async def fn(step: Step, payload: ImageIn) -> Any:
        return {"link": payload.filename}

    durably = await make(define_job(name="img", input=ImageIn, output=ImageOut, run=fn))
    with pytest.raises(RunFailedError, match="returned invalid output: field 'url'"):
        await durably.jobs.img.trigger_and_wait({"filename": "a.jpg"}, timeout=5)


async def test_output_model_comes_back_typed_and_dict_jobs_work(make: Any) -> None:
    async def typed(step: Step, payload: ImageIn) -> ImageOut:
        data = await step.run("download", lambda: {"name": payload.filename})
        return ImageOut(url=f"https://cdn/{data['name']}")

    async def plain(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {"echo": payload}

    durably = await make(
        define_job(name="typed", input=ImageIn, output=ImageOut, run=typed),
        define_job(name="plain", run=plain),
    )
    res = await durably.jobs.typed.trigger_and_wait({"filename": "a.jpg"}, timeout=5)
    assert res.output == ImageOut(url="https://cdn/a.jpg")
    res2 = await durably.jobs.plain.trigger_and_wait({"x": 1}, timeout=5)
    assert res2.output == {"echo": {"x": 1}}


# -- idempotency and concurrency keys ---------------------------------------------------------------


async def test_idempotency_key_returns_the_existing_run(make: Any) -> None:
    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    durably = await make(define_job(name="idem", run=fn), start=False)
    first = await durably.jobs.idem.trigger({"a": 1}, idempotency_key="k1")
    again = await durably.jobs.idem.trigger({"a": 2}, idempotency_key="k1")
    other = await durably.jobs.idem.trigger({"a": 1}, idempotency_key="k2")
    assert first.disposition == "created" and again.disposition == "idempotent"
    assert again.id == first.id and again.record.input == {"a": 1}
    assert other.id != first.id
    assert len(await durably.get_runs()) == 2


async def test_concurrent_triggers_with_one_key_make_one_run(make: Any, db_url: str) -> None:
    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    job = define_job(name="idem", run=fn)
    instances = [await make(job, start=False) for _ in range(4)]
    runs = await asyncio.gather(
        *(d.jobs.idem.trigger({}, idempotency_key="same") for d in instances for _ in range(10))
    )
    assert len({r.id for r in runs}) == 1
    assert sum(r.disposition == "created" for r in runs) == 1


async def test_concurrency_key_runs_one_at_a_time_in_creation_order(make: Any) -> None:
    order: list[tuple[str, int]] = []
    running = {"now": 0, "max": 0}

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        order.append(("start", payload["i"]))
        await asyncio.sleep(0.02)
        order.append(("end", payload["i"]))
        running["now"] -= 1
        return {}

    durably = await make(define_job(name="keyed", run=fn), max_concurrent_runs=4, start=False)
    runs = [await durably.jobs.keyed.trigger({"i": i}, concurrency_key="tenant-1") for i in range(5)]
    free = await durably.jobs.keyed.trigger({"i": 99})  # no key: never held back
    await durably.start()
    for run in [*runs, free]:
        assert (await durably.wait_for_run(run.id, timeout=5)).status == "completed"
    keyed = [(kind, i) for kind, i in order if i != 99]
    assert keyed == [(kind, i) for i in range(5) for kind in ("start", "end")]
    assert running["max"] == 2  # the key-less run overlapped with a keyed one
    assert order.index(("start", 99)) < order.index(("end", 0))


# -- retry, retrigger, cancel ----------------------------------------------------------------------


async def test_cancel_pending_run_at_once_and_retry_it(make: Any) -> None:
    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {"ok": await step.run("s", lambda: True)}

    durably = await make(define_job(name="c", run=fn), start=False)
    run = await durably.jobs.c.trigger({})
    cancelled = await durably.cancel(run.id)
    assert cancelled.status == "cancelled"
    assert (await durably.cancel(run.id)).status == "cancelled"  # cancelling twice is harmless
    await durably.start()
    await asyncio.sleep(0.2)
    assert (await durably.get_run(run.id)).status == "cancelled"  # never claimed
    await durably.retry(run.id)
    assert (await durably.wait_for_run(run.id, timeout=5)).status == "completed"


async def test_cancel_running_run_finishes_current_step_and_never_completes(make: Any) -> None:
    in_step = asyncio.Event()
    proceed = asyncio.Event()
    calls: list[str] = []

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        async def first() -> str:
            calls.append("first")
            in_step.set()
            await proceed.wait()
            return "one"

        await step.run("first", first)
        await step.run("second", lambda: calls.append("second"))
        return {}

    durably = await make(define_job(name="c", run=fn))
    events: list[str] = []
    durably.on("*", lambda e: events.append(e.type))
    run = await durably.jobs.c.trigger({})
    await until(in_step.is_set)
    await durably.cancel(run.id)
    proceed.set()
    await until(lambda: not durably.worker.active)
    record = await durably.get_run(run.id)
    assert record.status == "cancelled"
    assert calls == ["first"]
    assert [s.name for s in await durably.get_steps(run.id)] == ["first"]  # the current step finished
    assert "run:complete" not in events and "run:cancel" in events
    # Retrying resumes after the completed step.
    await durably.retry(run.id)
    assert (await durably.wait_for_run(run.id, timeout=5)).status == "completed"
    assert calls == ["first", "second"]


async def test_trigger_and_wait_raises_for_cancelled_and_failed_runs(make: Any) -> None:
    gate = asyncio.Event()

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("fail"):
            raise ValueError("bad payload")
        await gate.wait()
        return {}

    durably = await make(define_job(name="w", run=fn))
    with pytest.raises(RunFailedError, match="ValueError: bad payload"):
        await durably.jobs.w.trigger_and_wait({"fail": True}, timeout=5)
    task = asyncio.create_task(durably.jobs.w.trigger_and_wait({}, idempotency_key="x", timeout=5))
    await until(lambda: durably.worker.active)
    (run_id,) = list(durably.worker.active)
    await durably.cancel(run_id)
    with pytest.raises(RunCancelledError):
        await task
    gate.set()


async def test_retrigger_makes_a_new_run_with_the_same_input(make: Any) -> None:
    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {"got": payload["n"]}

    durably = await make(define_job(name="r", run=fn))
    first = await durably.jobs.r.trigger_and_wait({"n": 7}, timeout=5)
    again = await durably.retrigger(first.id)
    assert again.id != first.id
    assert (await durably.wait_for_run(again.id, timeout=5)).output == {"got": 7}
    with pytest.raises(InvalidStateError, match="only failed or cancelled"):
        await durably.retry(first.id)
    with pytest.raises(InvalidStateError, match="already completed"):
        await durably.cancel(first.id)
    with pytest.raises(RunNotFoundError):
        await durably.retry("no-such-run")


async def test_delete_and_purge(make: Any) -> None:
    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("s", lambda: 1)
        return {}

    durably = await make(define_job(name="p", run=fn))
    done = [await durably.jobs.p.trigger_and_wait({}, timeout=5) for _ in range(3)]
    await durably.delete_run(done[0].id)
    with pytest.raises(RunNotFoundError):
        await durably.get_run(done[0].id)
    assert await durably.purge_runs(older_than=dt.timedelta(days=1)) == 0
    assert await durably.purge_runs(older_than=dt.timedelta(seconds=0), batch_size=1) == 2
    assert await durably.get_runs() == []


# -- events ----------------------------------------------------------------------------------------------


async def test_events_are_typed_and_a_raising_listener_breaks_nothing(make: Any) -> None:
    async def fn(step: Step, payload: ImageIn) -> ImageOut:
        await step.run("download", lambda: {"size": 3})
        await step.progress(1, 2, "downloaded")
        step.log.info("resizing", size=3)
        await step.run("upload", lambda: "u")
        return ImageOut(url="x")

    durably = await make(define_job(name="ev", input=ImageIn, output=ImageOut, run=fn))
    seen: list[Any] = []
    worker_errors: list[Any] = []

    def bad(event: Any) -> None:
        raise RuntimeError("listener bug")

    durably.on("step:complete", bad)
    unsubscribe = durably.on("*", seen.append)
    durably.on("worker:error", worker_errors.append)
    res = await durably.jobs.ev.trigger_and_wait({"filename": "a"}, timeout=5)
    assert res.output == ImageOut(url="x")
    # Lease renewals depend on timing (heartbeats every 0.2 s here): tests/unit/test_facade_api.py.
    types = [e.type for e in seen if e.type not in ("worker:error", "run:lease-renewed")]
    assert types == [
        "run:trigger",
        "run:leased",
        "run:start",
        "step:start",
        "step:complete",
        "run:progress",
        "log:write",
        "step:start",
        "step:complete",
        "run:complete",
    ]
    by_type = {e.type: e for e in seen}
    assert by_type["run:complete"].output == ImageOut(url="x") and by_type["run:complete"].duration > 0
    assert by_type["run:progress"].progress.current == 1 and by_type["run:progress"].progress.total == 2
    assert by_type["step:complete"].step_name == "upload" and by_type["step:complete"].output == "u"
    assert by_type["log:write"].data == {"size": 3}
    assert len(worker_errors) == 2 and "listener bug" in worker_errors[0].error
    unsubscribe()
    await durably.jobs.ev.trigger_and_wait({"filename": "b"}, timeout=5)
    assert len([e for e in seen if e.type == "run:complete"]) == 1
    # Progress and logs are persisted for other processes.
    record = await durably.get_run(res.id)
    assert record.progress is not None and record.progress.message == "downloaded"
    logs = await durably.get_logs(res.id)
    assert [(lg.level, lg.message, lg.data) for lg in logs] == [("info", "resizing", {"size": 3})]


async def test_failure_events_name_the_step(make: Any) -> None:
    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("ok", lambda: 1)
        await step.run("explode", lambda: 1 / 0)
        return {}

    durably = await make(define_job(name="f", run=fn))
    fails: list[Any] = []
    durably.on("run:fail", fails.append)
    step_fails: list[Any] = []
    durably.on("step:fail", step_fails.append)
    with pytest.raises(RunFailedError):
        await durably.jobs.f.trigger_and_wait({}, timeout=5)
    assert fails[0].failed_step_name == "explode" and "ZeroDivisionError" in fails[0].error
    assert step_fails[0].step_name == "explode"
    assert [r.id for r in await durably.get_failed_runs()] == [fails[0].run_id]


# -- leases and fencing ------------------------------------------------------------------------------------


async def test_a_worker_that_lost_its_lease_writes_nothing(make: Any, backend: Backend) -> None:
    """A holder whose lease expired and was taken over cannot checkpoint, log or complete."""
    entered = asyncio.Event()
    proceed = asyncio.Event()

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        async def slow() -> str:
            entered.set()
            await proceed.wait()
            return "stale"

        await step.run("only", slow)
        step.log.info("after")
        return {"by": "stale"}

    # Heartbeats far apart, so the lease can expire while the step runs.
    stale = await make(define_job(name="fence", run=fn), heartbeat_interval=30, stale_threshold=60)
    run = await stale.jobs.fence.trigger({})
    await until(entered.is_set)
    # Another worker takes the run as if the lease had expired.
    thief = await backend.open_store(migrate=False)
    try:
        await backend.expire_lease(run.id)
        (claimed,) = await thief.claim("thief", ["fence"], 1, 60)
        assert claimed.generation == 2
        proceed.set()
        await until(lambda: not stale.worker.active)
        record = await thief.get_run(run.id)
        assert record is not None
        assert record.status == "running" and record.worker_id == "thief" and record.generation == 2
        assert await thief.get_steps(run.id) == []
        assert await thief.get_logs(run.id) == []
        assert record.output is None
    finally:
        await thief.close()


async def test_stale_run_is_reclaimed_and_resumes_after_last_step(make: Any, db_url: str) -> None:
    calls: list[str] = []

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("a", lambda: calls.append("a"))
        await step.run("b", lambda: calls.append("b"))
        return {}

    # Simulate a crashed holder: a claimed run with one checkpoint and an expired lease.
    durably = await make(define_job(name="stale", run=fn), start=False)
    run = await durably.jobs.stale.trigger({})
    (claimed,) = await durably.store.claim("dead-worker", ["stale"], 1, 0.01)
    from durably_sched.store.base import Checkpoint

    now = dt.datetime.now(dt.UTC)
    assert (
        await durably.store.checkpoint(Checkpoint(run.id, claimed.generation, 0, "a", "null", now, now))
        == "ok"
    )
    await durably.start()
    record = await durably.wait_for_run(run.id, timeout=5)
    assert record.status == "completed" and record.generation == 2 and record.attempt == 2
    assert calls == ["b"]


async def test_stop_releases_leases_so_another_worker_resumes_at_once(make: Any) -> None:
    started = asyncio.Event()

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("quick", lambda: 1)
        started.set()
        await step.run("long", lambda: asyncio.sleep(30))
        return {}

    job = define_job(name="long", run=fn)
    first = await make(job, stale_threshold=60, heartbeat_interval=1)
    run = await first.jobs.long.trigger({})
    await until(started.is_set)
    t0 = time.monotonic()
    await first.stop(grace=0.2)
    assert time.monotonic() - t0 < 5
    record = await first.get_run(run.id)
    assert record.status == "pending" and record.lease_expires_at is None
    assert [s.name for s in await first.get_steps(run.id)] == ["quick"]


# -- schema ---------------------------------------------------------------------------------------------


async def test_migrate_is_idempotent_and_newer_schema_is_refused(db_url: str, backend: Backend) -> None:
    durably = create_durably(db_url)
    try:
        assert await durably.migrate() == SCHEMA_VERSION
        assert await durably.migrate() == SCHEMA_VERSION
    finally:
        await durably.close()
    await backend.set_schema_version(99)
    durably = create_durably(db_url)
    try:
        with pytest.raises(SchemaVersionError, match="newer than this durably-sched supports"):
            await durably.migrate()
        with pytest.raises(SchemaVersionError):
            await durably.start()
    finally:
        await durably.close()


async def test_concurrent_migrations_from_two_instances(db_url: str) -> None:
    a, b = create_durably(db_url), create_durably(db_url)
    try:
        assert await asyncio.gather(a.migrate(), b.migrate()) == [SCHEMA_VERSION] * 2
    finally:
        await a.close()
        await b.close()


def test_define_job_rejects_bad_definitions() -> None:
    async def fn(step: Step, payload: Any) -> Any:
        return None

    with pytest.raises(ValueError, match="job name"):
        define_job(name="bad name", run=fn)
    with pytest.raises(TypeError, match="BaseModel"):
        define_job(name="x", input=dict, run=fn)  # type: ignore[arg-type]


async def test_trigger_and_wait_in_process_does_not_wait_for_the_polling_interval(make: Any) -> None:
    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {"v": await step.run("s", lambda: 1)}

    # With a 60 s polling interval, only the in-process wake-up can make this finish in time.
    durably = await make(define_job(name="fast", run=fn), polling_interval=60)
    await until(lambda: durably.worker.last_claim_at > 0, 10, "the first claim")  # then idle in its long poll
    for _ in range(3):
        result = await durably.jobs.fast.trigger_and_wait({}, timeout=5)
        assert result.output == {"v": 1}


async def test_a_write_lock_held_by_another_process_never_blocks_the_event_loop(sqlite_url: str) -> None:
    """SQLite: writes wait for a foreign write lock on the writer's thread, not on the event loop."""

    async def fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    durably = create_durably(sqlite_url).register([define_job(name="locked", run=fn)])
    await durably.migrate()
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        trigger = asyncio.create_task(durably.jobs.locked.trigger({}))
        await until(lambda: ticks >= 20, 10, "the loop ran on")  # the loop keeps running...
        assert not trigger.done()  # ...while the trigger still waits for the lock
        other.execute("COMMIT")
        run = await asyncio.wait_for(trigger, 5)
        assert run.disposition == "created"
    finally:
        ticking.cancel()
        other.close()
        await durably.close()


async def test_heavy_writes_run_on_the_writer_thread_not_on_the_event_loop(sqlite_url: str) -> None:
    """SQLite: a purge of many runs (here 100 runs with 20,000 log rows) never runs on the loop,
    where it would stall every other run, heartbeat and the scheduler while it deletes."""
    durably = create_durably(sqlite_url)
    await durably.migrate()
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO runs (id, job_name, status, input, created_at, completed_at, updated_at) "
            "VALUES (?, 'old', 'completed', '{}', 0, 0, 0)",
            [(f"r{i}",) for i in range(100)],
        )
        conn.executemany(
            "INSERT INTO logs (run_id, level, message, data, created_at) VALUES (?, 'info', 'x', '{}', 0)",
            [(f"r{i % 100}",) for i in range(20_000)],
        )
    loop_thread = threading.get_ident()
    threads: dict[str, set[int]] = {}
    writer = durably.store.writer.connection  # type: ignore[attr-defined]

    def trace(sql: str) -> None:
        verb = " ".join(sql.split()[:3])
        threads.setdefault(verb, set()).add(threading.get_ident())

    writer.set_trace_callback(trace)
    try:
        assert await durably.purge_runs(dt.timedelta(0)) == 100
        await durably.store.advance_cursor("s", dt.datetime.now(dt.UTC))  # a light write: inline
    finally:
        writer.set_trace_callback(None)
        await durably.close()
    assert threads["DELETE FROM logs"] and loop_thread not in threads["DELETE FROM logs"]
    cursor_writes = {t for verb, ids in threads.items() if "schedule_cursors" in verb for t in ids}
    assert cursor_writes == {loop_thread}


async def test_many_instances_creating_a_new_database_file_at_once(tmp_path: Path) -> None:
    """Several processes starting on a fresh file race to switch it to WAL; none may fail."""
    for attempt in range(25):
        url = f"sqlite:///{tmp_path / f'fresh-{attempt}.db'}"
        instances = [create_durably(url) for _ in range(4)]
        try:
            assert await asyncio.gather(*(d.migrate() for d in instances)) == [SCHEMA_VERSION] * 4
        finally:
            for d in instances:
                await d.close()
