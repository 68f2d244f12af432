"""``Durably.subscribe`` and ``subscribe_runs``: live events read from the store, on every backend.

What users rely on: a subscriber sees a run's progress, steps, logs and its end even when another
Durably instance (another process, another host) executes it; the iterator ends when the run ends;
many subscribers share one poller; a slow subscriber cannot grow memory without bound.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from durably_sched import Durably, RunNotFoundError, Step, define_job
from durably_sched.events import Event, RunProgressEvent
from durably_sched.store import open_store
from durably_sched.stream.feed import QUEUE_LIMIT, FeedDroppedEvent, RunListEvent
from tests.backends import Backend
from tests.helpers import until

GATES: dict[str, asyncio.Event] = {}


async def stepped(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    count = payload.get("count", 3)
    for i in range(count):
        await step.run(f"s{i}", lambda i=i: i * 10)
        step.log.info("did", i=i)
        await step.progress(i + 1, count, f"step {i + 1}")
        gate = GATES.get(payload.get("gate", ""))
        if gate is not None and i == 0:
            await gate.wait()
    if payload.get("fail"):
        await step.run("explode", _explode)
    return {"done": count}


def _explode() -> None:
    raise ValueError("exploded on purpose")


STEPPED = define_job(name="stepped", run=stepped)


async def napper(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    await step.run("before", lambda: 1)
    await step.sleep("nap", 0.3)
    return {"slept": True}


NAPPER = define_job(name="napper", run=napper)


def make_durably(url: str, **options: Any) -> Durably:
    return Durably(open_store(url), polling_interval=0.05, **options).register([STEPPED, NAPPER])


@pytest.fixture
async def pair(backend: Backend) -> AsyncIterator[tuple[Durably, Durably]]:
    """(watcher, executor): two instances on one database; only the executor runs a worker."""
    executor = make_durably(backend.url)
    await executor.migrate()
    await executor.start()
    watcher = make_durably(backend.url)
    await watcher.start(worker=False)
    try:
        yield watcher, executor
    finally:
        await watcher.close()
        await executor.close()


async def collect(events: AsyncIterator[Event], timeout: float = 20) -> list[Event]:
    async def drain() -> list[Event]:
        return [event async for event in events]

    return await asyncio.wait_for(drain(), timeout)


async def test_a_run_executed_elsewhere_streams_its_steps_logs_progress_and_end(
    pair: tuple[Durably, Durably],
) -> None:
    watcher, executor = pair
    GATES["hold"] = asyncio.Event()
    run = await watcher.trigger("stepped", {"count": 3, "gate": "hold"})
    events = watcher.subscribe(run.id, since=run.record)
    collected = asyncio.create_task(collect(events))
    await until(lambda: run.id in executor.worker.active, timeout=10, what="run claimed")
    GATES["hold"].set()
    got = await collected
    types = [e.type for e in got]
    assert types[0] == "run:start" and types[-1] == "run:complete", types
    steps = [e for e in got if e.type == "step:complete"]
    assert [(e.step_name, e.step_index, e.output) for e in steps] == [
        ("s0", 0, 0),
        ("s1", 1, 10),
        ("s2", 2, 20),
    ]  # type: ignore[attr-defined]
    logs = [e for e in got if e.type == "log:write"]
    assert [e.data for e in logs] == [{"i": 0}, {"i": 1}, {"i": 2}]  # type: ignore[attr-defined]
    progress = [e for e in got if isinstance(e, RunProgressEvent)]
    assert progress and progress[-1].progress.current == 3 and progress[-1].progress.total == 3
    assert all(a.progress.current < b.progress.current for a, b in itertools.pairwise(progress))
    assert got[-1].output == {"done": 3}  # type: ignore[attr-defined]
    # Every step and every log line arrives exactly once.
    assert len(steps) == 3 and len(logs) == 3


async def test_a_run_that_completes_between_the_list_read_and_the_stream_read_ends_with_its_output(
    pair: tuple[Durably, Durably],
) -> None:
    """With the run list watched too, the feed reads the list's records first and the streams after.
    A run that completed in between has its end in the stream's read and a running record in the
    list's: the end must carry the output of the run as read after it (a CI failure: None)."""
    watcher, executor = pair
    GATES["late"] = asyncio.Event()
    run = await watcher.trigger("stepped", {"count": 2, "gate": "late"})
    listing = watcher.subscribe_runs()
    events = watcher.subscribe(run.id, since=run.record)
    collected = asyncio.create_task(collect(events))
    await until(lambda: run.id in executor.worker.active, timeout=10, what="run claimed")
    poll = watcher.store.poll_run_changes
    held = {"done": False}

    async def poll_then_finish(*args: Any, **kwargs: Any) -> Any:
        changes = await poll(*args, **kwargs)
        if not held["done"] and any(r.id == run.id and r.status == "running" for r in changes.active):
            held["done"] = True  # the list has the run running: let it complete before the stream reads
            GATES["late"].set()

            async def completed() -> bool:
                record = await executor.get_run(run.id)
                return record is not None and record.status == "completed"

            await until(completed, timeout=10, what="run completed")
        return changes

    watcher.store.poll_run_changes = poll_then_finish  # type: ignore[method-assign]
    try:
        got = await collected
    finally:
        await listing.close()
    assert held["done"], "the race was not set up"
    assert got[-1].type == "run:complete" and got[-1].output == {"done": 2}, got[-1]  # type: ignore[attr-defined]


async def test_a_failed_run_ends_the_stream_with_its_error(pair: tuple[Durably, Durably]) -> None:
    watcher, _ = pair
    run = await watcher.trigger("stepped", {"count": 1, "fail": True})
    got = await collect(watcher.subscribe(run.id, since=run.record))
    assert got[-1].type == "run:fail"
    assert got[-1].error == "ValueError: exploded on purpose"  # type: ignore[attr-defined]
    assert got[-1].failed_step_name == "explode"  # type: ignore[attr-defined]


async def test_a_durable_wait_of_a_run_executed_elsewhere_is_streamed(pair: tuple[Durably, Durably]) -> None:
    """Run and list subscribers see the run begin to wait (what for), then its next attempt."""
    watcher, _ = pair
    listed = watcher.subscribe_runs()
    list_events = asyncio.create_task(collect(listed))  # type: ignore[arg-type]
    await until(lambda: watcher.feed.polls > 1, 10, "the list stream's first poll")  # as a live page's
    run = await watcher.trigger("napper")
    got = await collect(watcher.subscribe(run.id, since=run.record))
    types = [e.type for e in got]
    assert types[-1] == "run:complete", types
    waiting = [e for e in got if e.type == "run:waiting"]
    assert len(waiting) == 1 and types.index("run:waiting") < len(types) - 2, types
    assert waiting[0].step_name == "nap" and waiting[0].waiting_for["kind"] == "sleep"  # type: ignore[attr-defined]
    assert [e.attempt for e in got if e.type == "run:start"][-1] == 2  # type: ignore[attr-defined]
    await listed.close()
    assert "run:waiting" in [e.type for e in await list_events if e.run_id == run.id]


async def test_cancel_retry_and_a_finished_run(pair: tuple[Durably, Durably]) -> None:
    watcher, executor = pair
    GATES["cancel"] = asyncio.Event()
    run = await watcher.trigger("stepped", {"count": 2, "gate": "cancel"})
    events = watcher.subscribe(run.id)
    await until(lambda: run.id in executor.worker.active, timeout=10, what="run claimed")
    await watcher.cancel(run.id)
    GATES["cancel"].set()
    got = await collect(events)
    assert got[-1].type == "run:cancel"
    # Subscribing to a finished run yields its end at once.
    again = await collect(watcher.subscribe(run.id))
    assert [e.type for e in again] == ["run:cancel"]
    # A retry is seen by a subscriber that started from the cancelled state.
    record = await watcher.get_run(run.id)
    events = watcher.subscribe(run.id, since=record)
    await watcher.retry(run.id)
    got = await collect(events)
    assert got[0].type == "run:retry" and got[-1].type == "run:complete"


async def test_an_unknown_run_raises(pair: tuple[Durably, Durably]) -> None:
    watcher, _ = pair
    with pytest.raises(RunNotFoundError, match="no run with id 'nope'"):
        await collect(watcher.subscribe("nope"))


async def test_the_run_list_sees_runs_of_other_instances(pair: tuple[Durably, Durably]) -> None:
    watcher, executor = pair
    changes = watcher.subscribe_runs()
    seen: dict[str, list[str]] = {}

    async def read() -> None:
        async for event in changes:
            assert isinstance(event, RunListEvent)
            if event.run_id is not None:
                seen.setdefault(event.run_id, []).append(event.type)

    reader = asyncio.create_task(read())
    polls = watcher.feed.polls
    await until(lambda: watcher.feed.polls >= polls + 2, what="baseline poll")
    runs = [await executor.trigger("stepped", {"count": 2}) for _ in range(3)]
    for run in runs:
        await executor.wait_for_run(run.id, timeout=20)
    await until(
        lambda: all(seen.get(r.id, [""])[-1] == "run:complete" for r in runs), timeout=10, what="ends"
    )
    await changes.close()
    await asyncio.wait_for(reader, 5)
    # A run created and finished between two polls still shows up, with its end.
    changes = watcher.subscribe_runs()
    polls = watcher.feed.polls
    await until(lambda: watcher.feed.polls >= polls + 2, what="baseline poll")
    blocked = await watcher.trigger("stepped", {"count": 1})  # executed at once by the executor

    async def first_types() -> list[str]:
        out: list[str] = []
        async for event in changes:
            if event.run_id == blocked.id:
                out.append(event.type)
                if event.type in ("run:complete", "run:delete"):
                    return out
        return out

    assert (await asyncio.wait_for(first_types(), 20))[-1] == "run:complete"
    await changes.close()


async def test_many_subscribers_share_one_poller(backend: Backend) -> None:
    durably = make_durably(backend.url)
    await durably.migrate()
    await durably.start(worker=False)
    calls = 0
    real = durably.store.get_runs_by_id

    async def counting(ids: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(ids)

    durably.store.get_runs_by_id = counting  # type: ignore[method-assign]
    try:
        runs = [await durably.trigger("stepped", {"count": 1}) for _ in range(5)]
        subs = [durably.subscribe(r.id) for r in runs for _ in range(20)]  # 100 subscribers
        start = durably.feed.polls
        await until(lambda: durably.feed.polls >= start + 5, what="five polls")
        polls = durably.feed.polls - start
        assert calls <= polls + 1, f"{calls} reads of the runs for {polls} polls with 100 subscribers"
        for sub in subs:
            await sub.close()
        assert durably.feed.subscribers == 0
        await until(lambda: durably.feed._task is None or durably.feed._task.done(), what="poller idle")
    finally:
        await durably.close()


async def test_a_slow_subscriber_is_bounded_and_told(pair: tuple[Durably, Durably]) -> None:
    watcher, _ = pair
    run = await watcher.trigger("stepped", {"count": 0})
    sub = watcher.subscribe(run.id, since=run.record)
    # Feed more events than the queue holds without reading them (what a stalled client does).
    for i in range(QUEUE_LIMIT + 50):
        sub._put(RunProgressEvent(run_id=run.id, job_name="stepped", progress=_progress(i)))
        sub._put(Event(type="log:write"))
    assert len(sub._items) <= QUEUE_LIMIT
    first = await asyncio.wait_for(sub.__anext__(), 5)
    assert isinstance(first, FeedDroppedEvent) and first.dropped >= 50
    progress = [e for e in sub._items if isinstance(e, RunProgressEvent)]
    assert len(progress) == 1 and progress[0].progress.current == QUEUE_LIMIT + 49  # coalesced: latest
    await sub.close()


def _progress(i: int) -> Any:
    from durably_sched.store.base import Progress

    return Progress(current=i, total=None)
