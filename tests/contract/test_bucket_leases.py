"""Bucket leases of schedulers sharing the schedules (rules.balance_buckets), on both backends:
each bucket has one owner among the live schedulers; shares are fair and add up to all buckets; a
newcomer gets its share as the others release above theirs; a scheduler that stops beating loses
its buckets when their leases expire, by the store's clock; one that leaves frees them at once."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from durably_sched.store.base import BucketLease, SchedulerInfo, Store
from durably_sched.store.rules import fair_share
from tests.backends import Backend

TOTAL = 256


def info(name: str, schedules: int = 10, offset: float | None = None) -> SchedulerInfo:
    return SchedulerInfo(id=name, host="host", pid=1, schedules=schedules, clock_offset=offset)


async def beat(store: Store, name: str, lease: float = 30.0) -> BucketLease:
    return await store.balance_buckets(info(name), lease, TOTAL)


def test_fair_shares_add_up_to_every_bucket() -> None:
    for n in range(1, 12):
        live = [f"s{i}" for i in range(n)]
        shares = [fair_share(TOTAL, live, me) for me in live]
        assert sum(shares) == TOTAL and max(shares) - min(shares) <= 1


async def test_one_scheduler_owns_every_bucket_and_the_registry_shows_it(store: Store) -> None:
    lease = await store.balance_buckets(info("a", schedules=7, offset=1.5), 30.0, TOTAL)
    assert lease.buckets == frozenset(range(TOTAL)) and lease.live == 1
    assert lease.until is not None
    # The lease runs by the store's clock: it ends lease-length after the beat's database time.
    assert abs((lease.until - lease.database_time) - timedelta(seconds=30)) < timedelta(seconds=1)
    [row] = await store.list_schedulers()
    assert (row.id, row.schedules, row.clock_offset, row.buckets, row.live) == ("a", 7, 1.5, TOTAL, True)
    again = await beat(store, "a")  # a beat keeps what it owns
    assert again.buckets == lease.buckets


async def test_a_newcomer_gets_its_share_as_the_others_release_above_theirs(store: Store) -> None:
    assert len((await beat(store, "a")).buckets) == TOTAL
    assert (await beat(store, "b")).buckets == frozenset()  # every bucket is held
    a = await beat(store, "a")  # a sees b live: releases above its share
    assert len(a.buckets) == fair_share(TOTAL, ["a", "b"], "a") and a.live == 2
    b = await beat(store, "b")
    assert len(b.buckets) == TOTAL - len(a.buckets) and not a.buckets & b.buckets
    c_first = await beat(store, "c")
    a, b, c = await beat(store, "a"), await beat(store, "b"), await beat(store, "c")
    assert c_first.buckets <= c.buckets
    assert a.buckets | b.buckets | c.buckets == frozenset(range(TOTAL))
    assert sorted(len(x.buckets) for x in (a, b, c)) == [85, 85, 86]
    assert {r.id: r.buckets for r in await store.list_schedulers()} == {"a": 86, "b": 85, "c": 85}


async def test_an_expired_lease_is_taken_over_by_the_store_clock(store: Store) -> None:
    await store.balance_buckets(info("a"), 0.5, TOTAL)
    taken = await beat(store, "b")
    assert taken.buckets == frozenset()  # a's lease still runs
    deadline = time.monotonic() + 10
    while not taken.buckets:
        assert time.monotonic() < deadline, "a's expired buckets were never taken"
        await asyncio.sleep(0.1)
        taken = await beat(store, "b")
    assert taken.buckets == frozenset(range(TOTAL))  # a's row expired too: b's share is everything
    assert taken.live == 1
    assert {r.id: (r.live, r.buckets) for r in await store.list_schedulers()} == {
        "a": (False, 0),
        "b": (True, TOTAL),
    }


async def test_a_scheduler_that_leaves_frees_its_buckets_at_once(store: Store) -> None:
    await beat(store, "a")
    await beat(store, "b")
    await beat(store, "a")
    await store.leave_buckets("a")
    assert [r.id for r in await store.list_schedulers()] == ["b"]
    assert (await beat(store, "b")).buckets == frozenset(range(TOTAL))


async def test_schedulers_beating_together_never_share_a_bucket(backend: Backend, store: Store) -> None:
    stores = [store] + [await backend.open_store(migrate=False) for _ in range(2)]
    names = ["a", "b", "c"]
    for _ in range(4):
        leases = await asyncio.gather(*(beat(s, n) for s, n in zip(stores, names, strict=True)))
        owned = [lease.buckets for lease in leases]
        assert sum(len(o) for o in owned) == len(frozenset().union(*owned))  # disjoint
    assert sorted(len(o) for o in owned) == [85, 85, 86]
