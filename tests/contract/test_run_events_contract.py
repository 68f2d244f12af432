"""The store contract for the run-events log (issue 21), on every backend: every transition of a run
is recorded by the write that makes it, with the run's attempt and step count at that moment, and
read back by id, per run and for all runs; checkpoints, progress and logs add no row; the rows go
with their run (delete, retention).

What relies on it: ``subscribe()`` and the web app's event streams of runs executing elsewhere, the
run list's live updates, ``trigger_and_wait`` / ``wait_for_run`` across processes, ``--wait``.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from durably_sched.store.base import Progress, Store
from durably_sched.store.run_events import StreamPosition
from durably_sched.store.waits import NewWait
from tests.backends import Backend
from tests.contract.test_store_contract import JOB, checkpoint, claim_one, create, log_line, new_run


def kinds(events: list) -> list[tuple[str, int, int]]:  # type: ignore[type-arg]
    return [(e.type, e.attempt, e.step_count) for e in events]


async def test_a_retried_waiting_run_records_each_transition_in_order(store: Store) -> None:
    run = await create(store)
    first = await claim_one(store, worker="w1")
    assert await store.checkpoint(checkpoint(first, "fetch")) == "ok"
    assert await store.set_progress(first.id, first.generation, Progress(1, 3)) == "ok"
    assert await store.append_logs(first.id, first.generation, [log_line("hello", "fetch")]) == "ok"
    assert await store.retry_later(first.id, first.generation, "OSError: down", "render", 0.0) == "ok"
    second = await claim_one(store, worker="w2")
    assert await store.checkpoint(checkpoint(second, "render", 1)) == "ok"
    waiting = await store.suspend_run(second.id, second.generation, NewWait("event", "hook", key="k1"))
    assert waiting.result == "waiting"
    assert await store.send_event("k1", {"x": 1}) == 1
    third = await claim_one(store, worker="w3")
    assert await store.complete_run(third.id, third.generation, {"ok": True}) == "ok"

    events = (await store.get_run_events_since({run.id: 0}))[run.id]
    assert kinds(events) == [  # its creation is its runs row (by seq): no row here
        ("run:start", 1, 0),
        ("run:retry-scheduled", 1, 1),  # no row for the checkpoint, the progress or the log
        ("run:start", 2, 1),
        ("run:waiting", 2, 2),
        ("run:wake", 2, 2),
        ("run:start", 3, 2),
        ("run:complete", 3, 2),
    ]
    assert [e.run_id for e in events] == [run.id] * len(events)
    assert all(a.id < b.id and a.at <= b.at for a, b in itertools.pairwise(events))
    failed = events[1]
    assert (failed.data["error"], failed.data["failed_step_name"], failed.data["failed_attempts"]) == (
        "OSError: down",
        "render",
        1,
    )
    assert failed.delay < 1.0
    wait = events[3]
    assert wait.data["step"] == "hook" and wait.waiting_for["kind"] == "event"
    assert wait.waiting_for["key"] == "k1"
    # a reader resumes after the id it saw; the whole log reads the same rows in id order
    assert kinds((await store.get_run_events_since({run.id: events[4].id}))[run.id]) == kinds(events[5:])
    assert [e.id for e in await store.get_run_events_after(events[0].id, limit=3)] == [
        e.id for e in events[1:4]
    ]
    assert await store.last_run_event_id() == events[-1].id
    assert await store.latest_run_events([run.id, "no-such-run"]) == {run.id: "run:complete"}
    assert await store.last_run_event_id([run.id]) == events[-1].id
    assert await store.last_run_event_id(["no-such-run"]) == 0


async def test_failure_release_cancel_and_operator_retry_are_recorded(store: Store) -> None:
    run = await create(store)
    first = await claim_one(store)
    assert await store.release_run(first.id, first.generation) == "ok"  # a graceful stop
    second = await claim_one(store)
    assert await store.fail_run(second.id, second.generation, "ValueError: bad", "parse") == "ok"
    assert await store.retry_run(run.id) is not None
    third = await claim_one(store)
    assert await store.retry_later(third.id, third.generation, "OSError: later", None, 60.0) == "ok"
    assert await store.cancel_run(run.id) is not None  # cancelled while it waits for its retry
    events = (await store.get_run_events_since({run.id: 0}))[run.id]
    assert [e.type for e in events] == [
        "run:start",
        "run:release",
        "run:start",
        "run:fail",
        "run:retry",
        "run:start",
        "run:retry-scheduled",
        "run:cancel",
    ]
    assert events[3].data["error"] == "ValueError: bad" and events[3].data["failed_step_name"] == "parse"
    assert await store.latest_run_events([run.id]) == {run.id: "run:cancel"}
    assert 55.0 < events[6].delay < 61.0 and events[6].data["failed_step_name"] is None


async def test_a_run_created_claimed_records_its_start(store: Store) -> None:
    record, disposition = await store.create_and_claim(new_run(), "w1", [JOB], 30.0)
    assert disposition == "created"
    if record.status == "pending":  # a backend that does not claim in the insert (SQLite)
        record = await claim_one(store)
    events = (await store.get_run_events_since({record.id: 0}))[record.id]
    assert [(e.type, e.attempt) for e in events] == [("run:start", 1)]
    assert await store.get_run_events_after(0) == events  # a run created is a row of runs only


async def test_reads_for_many_runs_at_once_and_limits(store: Store) -> None:
    runs = [await create(store) for _ in range(3)]
    for _ in runs:
        run = await claim_one(store)
        assert await store.complete_run(run.id, run.generation, None) == "ok"
    found = await store.get_run_events_since({r.id: 0 for r in runs}, limit=2)
    assert {run_id: [e.type for e in events] for run_id, events in found.items()} == {
        r.id: ["run:start", "run:complete"] for r in runs
    }
    assert await store.get_run_events_since({}) == {}
    everything = await store.get_run_events_after(0)
    assert len(everything) == 6 and [e.id for e in everything] == sorted(e.id for e in everything)


async def test_events_go_with_their_run_on_delete_and_retention(backend: Backend, store: Store) -> None:
    kept, deleted, purged = [await create(store) for _ in range(3)]
    for _ in range(3):
        run = await claim_one(store)
        assert await store.complete_run(run.id, run.generation, None) == "ok"
    assert await store.delete_run(deleted.id)
    old = datetime(2020, 1, 1, tzinfo=UTC)
    await backend.set_completed_at(purged.id, old)
    assert await store.purge_runs(datetime.now(UTC) - timedelta(days=7)) == 1
    found = await store.get_run_events_since({r.id: 0 for r in (kept, deleted, purged)})
    assert list(found) == [kept.id]
    left = {e.run_id for e in await store.get_run_events_after(0)}
    # SQLite keeps the table's newest row (its id is never given again), whoever's run it was.
    assert left == {kept.id} or (backend.name == "sqlite" and left - {kept.id} <= {deleted.id, purged.id})
    assert len(left) <= 2


async def test_one_read_returns_each_source_past_its_position(store: Store) -> None:
    """The run feed's read: transitions, steps and logs of many runs in one statement, each past
    its own position, each in its own order; a run with nothing new is left out."""
    busy, quiet = await create(store), await create(store)
    run = await claim_one(store)
    assert run.id == busy.id
    for i in range(3):
        assert await store.append_logs(run.id, run.generation, [log_line(f"line {i}", f"s{i}")]) == "ok"
        assert await store.checkpoint(checkpoint(run, f"s{i}", i)) == "ok"
    assert await store.complete_run(run.id, run.generation, {"ok": True}) == "ok"
    everything = await store.get_run_streams({busy.id: StreamPosition(), quiet.id: StreamPosition()})
    batch = everything[busy.id]
    assert [e.type for e in batch.events] == ["run:start", "run:complete"]
    assert [(s.index, s.name) for s in batch.steps] == [(0, "s0"), (1, "s1"), (2, "s2")]
    assert [(entry.message, entry.step_name) for entry in batch.logs] == [
        ("line 0", "s0"),
        ("line 1", "s1"),
        ("line 2", "s2"),
    ]
    assert batch.steps[0].output_json and batch.logs[0].data == {"m": "line 0"}
    assert batch.truncated == (False, False, False)
    assert quiet.id not in everything  # created, nothing since
    later = StreamPosition(batch.events[0].id, 2, batch.logs[1].id)
    rest = await store.get_run_streams({busy.id: later, quiet.id: StreamPosition(10**9, 0, 0)})
    assert list(rest) == [busy.id]
    assert [e.type for e in rest[busy.id].events] == ["run:complete"]
    assert [s.name for s in rest[busy.id].steps] == ["s2"]
    assert [entry.message for entry in rest[busy.id].logs] == ["line 2"]
    limited = (await store.get_run_streams({busy.id: StreamPosition()}, limit=2))[busy.id]
    assert (len(limited.events), len(limited.steps), len(limited.logs)) == (2, 2, 2)
    assert limited.truncated == (True, True, True)
