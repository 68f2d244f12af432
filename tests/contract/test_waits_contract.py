"""The store contract for durable waits (issue 24), on every backend: a waiting run holds no lease
and is not claimable; timers, events and children wake it (pending again, with how its wait
ended); an event is delivered to a waiting run once; the attempt that suspends is recorded as
``suspended``; the overlap check and cancel see waiting runs.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from durably_sched.store.base import Fire, Store
from durably_sched.store.waits import NewWait
from tests.contract.test_store_contract import JOB, checkpoint, claim_one, create, new_run, now


async def test_a_sleeping_run_holds_nothing_and_wakes_when_due(store: Store) -> None:
    run = await claim_one(store) if await create(store) else None
    assert run is not None
    assert await store.checkpoint(checkpoint(run, "before")) == "ok"
    result = await store.suspend_run(run.id, run.generation, NewWait("sleep", "nap", seconds=0.3))
    assert result.result == "waiting"
    waiting = await store.get_run(run.id)
    assert waiting is not None and waiting.status == "waiting"
    assert waiting.worker_id is None and waiting.lease_expires_at is None
    assert waiting.waiting_for is not None and waiting.waiting_for["kind"] == "sleep"
    assert await store.claim("w2", [JOB], 5, 30.0) == []  # not claimable while it sleeps
    early = await store.wake_due()
    assert early.woken == 0 and early.next_in is not None and 0 < early.next_in <= 0.3
    await asyncio.sleep(early.next_in + 0.05)
    assert (await store.wake_due()).woken == 1
    [again] = await store.claim("w2", [JOB], 5, 30.0)
    assert again.id == run.id and again.wait is not None
    assert (again.wait.step, again.wait.outcome) == ("nap", "due")
    assert [s.name for s in await store.get_steps(run.id)] == ["before"]
    attempts = await store.get_attempts(run.id)
    assert [a.outcome for a in attempts] == ["suspended"]
    assert (await store.wake_due()).next_in is None  # no timer left


async def test_a_sleep_already_due_does_not_suspend(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    past = now() - timedelta(milliseconds=10)
    result = await store.suspend_run(run.id, run.generation, NewWait("sleep", "nap", until=past))
    assert result.result == "ready"
    assert (await store.get_run(run.id)).status == "running"  # type: ignore[union-attr]


async def test_a_suspend_is_fenced(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    stale = await store.suspend_run(run.id, run.generation - 1, NewWait("sleep", "nap", seconds=60))
    assert stale.result == "lost"
    await store.cancel_run(run.id)
    cancelled = await store.suspend_run(run.id, run.generation, NewWait("sleep", "nap", seconds=60))
    assert cancelled.result == "cancelled"


async def test_an_event_wakes_each_waiter_once_with_its_data(store: Store) -> None:
    runs = [await create(store) for _ in range(3)]
    claimed = await store.claim("w1", [JOB], 3, 30.0)
    for run in claimed[:2]:
        wait = NewWait("event", "approval", key="approve:1", seconds=3600)
        assert (await store.suspend_run(run.id, run.generation, wait)).result == "waiting"
    other = NewWait("event", "approval", key="approve:2")
    assert (await store.suspend_run(claimed[2].id, claimed[2].generation, other)).result == "waiting"
    assert await store.send_event("approve:1", {"by": "ann"}) == 2
    assert await store.send_event("approve:1", {"by": "bob"}) == 0  # delivered once
    woken = await store.claim("w2", [JOB], 5, 30.0)
    assert sorted(r.id for r in woken) == sorted(r.id for r in runs[:2])
    for run in woken:
        assert run.wait is not None and (run.wait.outcome, run.wait.data) == ("event", {"by": "ann"})
    still = await store.get_run(claimed[2].id)
    assert still is not None and still.status == "waiting"
    assert still.waiting_for == {"kind": "event", "key": "approve:2", "until": None, "children": None}


async def test_an_event_sent_before_the_wait_is_received_by_runs_created_before_it(store: Store) -> None:
    older = await create(store)
    assert await store.send_event("go", [1, 2]) == 0  # nobody waits yet: kept
    newer = await create(store)
    claimed = {r.id: r for r in await store.claim("w1", [JOB], 2, 30.0)}
    first = claimed[older.id]
    got = await store.suspend_run(first.id, first.generation, NewWait("event", "wait", key="go"))
    assert (got.result, got.data) == ("ready", [1, 2])
    again = await store.suspend_run(first.id, first.generation, NewWait("event", "wait-2", key="go"))
    assert again.result == "waiting"  # that event was delivered to this run already
    late = claimed[newer.id]
    assert (await store.suspend_run(late.id, late.generation, NewWait("event", "w", key="go"))).result == (
        "waiting"
    )  # sent before the run existed: not for it


async def test_an_event_timeout_wakes_the_run_as_timed_out(store: Store) -> None:
    await create(store)
    run = await claim_one(store)
    wait = NewWait("event", "approval", key="k", seconds=0.2)
    assert (await store.suspend_run(run.id, run.generation, wait)).result == "waiting"
    await asyncio.sleep(0.3)
    assert (await store.wake_due()).woken == 1
    woken = await claim_one(store, "w2")
    assert woken.wait is not None and woken.wait.outcome == "timeout"
    await store.clear_wait(woken.id, woken.generation)
    cleared = await store.get_run(woken.id)
    assert cleared is not None and cleared.wait is None
    assert await store.send_event("k") == 0  # a woken run no longer waits


async def test_children_wake_their_parent_when_the_last_one_finishes(store: Store) -> None:
    parent = await create(store, run_id="parent")
    [claimed] = await store.claim("w1", [JOB], 1, 30.0)
    children = [await create(store, job="child", key=f"c{i}") for i in range(2)]
    wait = NewWait("children", "kids", children=[c.id for c in children])
    result = await store.suspend_run(parent.id, claimed.generation, wait)
    assert (result.result, result.waiting_children) == ("waiting", 2)
    linked = await store.list_children(parent.id)
    assert [c.id for c in linked] == [c.id for c in children]
    assert all(c.parent_run_id == parent.id for c in linked)
    first = (await store.claim("w2", ["child"], 1, 30.0))[0]
    assert await store.complete_run(first.id, first.generation, {"n": 1}) == "ok"
    assert (await store.get_run(parent.id)).status == "waiting"  # type: ignore[union-attr]
    second = (await store.claim("w2", ["child"], 1, 30.0))[0]
    assert await store.fail_run(second.id, second.generation, "boom", None) == "ok"
    woken = await store.get_run(parent.id)
    assert woken is not None and woken.status == "pending"
    assert woken.wait is not None and woken.wait.outcome == "children"


async def test_children_already_finished_need_no_wait(store: Store) -> None:
    await create(store)
    parent = await claim_one(store)
    child = await create(store, job="child", key="c")
    await store.cancel_run(child.id)
    wait = NewWait("children", "k", children=[child.id])
    result = await store.suspend_run(parent.id, parent.generation, wait)
    assert result.result == "ready"


async def test_a_waiting_run_can_be_cancelled_and_counts_as_active_for_overlap(store: Store) -> None:
    run = await create(store, labels={"schedule": "nightly"})
    claimed = await claim_one(store)
    await store.suspend_run(claimed.id, claimed.generation, NewWait("sleep", "nap", seconds=3600))
    fire_time = now().replace(microsecond=0) + timedelta(minutes=1)
    fire = Fire("nightly", fire_time, new_run(labels={"schedule": "nightly"}), skip_if_active=True)
    assert (await store.fire(fire)).outcome == "skipped"
    assert await store.count_waiting() == {(JOB, "sleep"): 1}
    cancelled = await store.cancel_run(run.id)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert (await store.wake_due()).next_in is None


async def test_old_events_are_purged_in_batches_and_no_longer_delivered(store: Store) -> None:
    await create(store)
    for n in range(3):
        await store.send_event("old", n)
    assert await store.purge_events(now() - timedelta(hours=1)) == 0  # none that old
    assert await store.purge_events(now() + timedelta(seconds=1), batch_size=2) == 2
    assert await store.purge_events(now() + timedelta(seconds=1), batch_size=2) == 1
    run = await claim_one(store)
    assert (
        await store.suspend_run(run.id, run.generation, NewWait("event", "w", key="old"))
    ).result == "waiting"
