"""Store contract: ``schedule_activity``, the runs and failed runs of every schedule per time bucket
(the dashboard's sparklines), in one query, on every backend.

What users rely on: each run counts once, in the bucket of its creation, for its schedule; a failed
run counts as failed too; runs outside the window and runs of no schedule are not counted; a
schedule without runs in the window is left out (the page draws it empty).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from durably_sched.store.base import RunRecord, Store
from tests.contract.test_store_contract import JOB, create


async def scheduled(store: Store, name: str) -> RunRecord:
    return await create(store, labels={"schedule": name, "scheduled_for": "2026-01-01T00:00:00Z"})


async def later_than(store: Store, previous: RunRecord, name: str) -> RunRecord:
    """A run of ``name`` created measurably after ``previous`` (the store's clock decides)."""
    await asyncio.sleep(0.06)
    run = await scheduled(store, name)
    assert run.created_at - previous.created_at >= timedelta(milliseconds=50)
    return run


async def test_runs_and_failures_per_schedule_and_bucket(store: Store) -> None:
    before = await scheduled(store, "s1")  # before the window
    first = await later_than(store, before, "s1")
    second = await later_than(store, first, "s1")
    other = await scheduled(store, "s2")
    await create(store)  # no schedule
    [claimed] = await store.claim("w1", [JOB], 1, 30)
    assert claimed.id == before.id
    # Fail `second`: claim the remaining runs in order, fail the one we want.
    runs = {r.id: r for r in await store.claim("w1", [JOB], 10, 30)}
    assert await store.fail_run(second.id, runs[second.id].generation, "Boom", None) == "ok"

    bucket = second.created_at - first.created_at
    since = first.created_at
    until = since + 2 * bucket
    assert other.created_at < until
    activity = await store.schedule_activity(until, bucket, 2)
    assert set(activity) == {"s1", "s2"}
    s1 = activity["s1"]
    assert (s1.runs, s1.failed) == ((1, 1), (0, 1))
    assert s1.since == since and s1.bucket == bucket
    assert (activity["s2"].runs, activity["s2"].failed) == ((0, 1), (0, 0))

    # A window with no runs: nothing; a wide window counts every scheduled run once.
    assert await store.schedule_activity(before.created_at, timedelta(hours=1), 24) == {}
    wide = await store.schedule_activity(until + timedelta(hours=1), timedelta(hours=1), 24)
    assert (sum(wide["s1"].runs), sum(wide["s1"].failed), sum(wide["s2"].runs)) == (3, 1, 1)
    assert all(len(a.runs) == 24 and len(a.failed) == 24 for a in wide.values())


async def test_a_window_must_have_buckets(store: Store) -> None:
    first = await scheduled(store, "s1")
    for bucket, buckets in ((timedelta(hours=1), 0), (timedelta(0), 24), (timedelta(hours=1), 1001)):
        with pytest.raises(ValueError, match="buckets"):
            await store.schedule_activity(first.created_at, bucket, buckets)
