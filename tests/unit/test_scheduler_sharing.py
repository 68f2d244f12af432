"""Schedulers that share the schedules (Scheduler.share), on both backends, with an injected clock
(durably_sched.clock.ManualClock) for fire times and the lease's own measure: each schedule is
fired by one owner, with no wasted attempt; a scheduler whose lease ran out (by its own measure)
fires nothing more; a scheduler that takes over a dead one's buckets reads their cursors first and
fires from there, neither again nor missing a fire time; the database clock's offset is measured."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from durably_sched import Durably, Step, create_durably, define_job
from durably_sched.clock import ManualClock
from durably_sched.schedule.config import SchedulesConfig, parse_schedules
from durably_sched.schedule.ownership import BUCKETS, DatabaseClock, bucket_of
from durably_sched.schedule.scheduler import Scheduler
from tests.backends import Backend


async def report(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    return {}


REPORT = define_job(name="report", run=report)
NAMES = [f"s{i:02d}" for i in range(40)]


def config() -> SchedulesConfig:
    body = "".join(f"  {name}: {{cron: '* * * * *', job: report}}\n" for name in NAMES)
    return parse_schedules("schedules:\n" + body, job_inputs={"report": None})


def start_time() -> datetime:
    return (datetime.now(UTC) + timedelta(minutes=3)).replace(second=30, microsecond=0)


Make = Callable[..., Any]


@pytest.fixture
async def make(backend: Backend) -> AsyncIterator[Make]:
    """``await make(name, clock, lease=30.0)``: a shared scheduler on its own Durably (a "process")."""
    made: list[Durably] = []

    async def factory(name: str, clock: ManualClock, lease: float = 30.0) -> Scheduler:
        d = create_durably(backend.url, polling_interval=0.05).register([REPORT])
        await d.migrate()
        await d.start(worker=False)
        made.append(d)
        scheduler = Scheduler(d, config(), clock=clock)
        scheduler.share(name, lease_seconds=lease, database_clock=False)
        await scheduler.load()
        return scheduler

    yield factory
    for d in made:
        await d.close()


async def beat_until_settled(schedulers: list[Scheduler]) -> None:
    """Beat every scheduler until they own disjoint fair shares of every bucket."""
    for _ in range(5):
        for scheduler in schedulers:
            assert scheduler.ownership is not None
            await scheduler.ownership.beat()
        owned = [s.ownership.owned for s in schedulers if s.ownership is not None]
        if sum(map(len, owned)) == BUCKETS == len(frozenset().union(*owned)):
            return
    raise AssertionError(f"never settled: {[len(o) for o in owned]}")


async def advance(clock: ManualClock, seconds: int, beating: list[Scheduler]) -> None:
    """Move the clock in 5 s steps, the live schedulers beating at each (as their services do)."""
    for _ in range(seconds // 5):
        await clock.advance(5)
        for scheduler in beating:
            assert scheduler.ownership is not None
            await scheduler.ownership.beat()


async def test_two_schedulers_fire_each_schedule_once_with_no_wasted_attempt(make: Make) -> None:
    clock = ManualClock(start_time())
    a, b = await make("a", clock), await make("b", clock)
    await beat_until_settled([a, b])
    for minute in range(1, 3):
        await advance(clock, 60, [a, b])
        fired = [*await a.tick(), *await b.tick()]
        # Every schedule fired once, by its bucket's owner; nobody tried another's fire time.
        assert Counter(name for name, _, _ in fired) == dict.fromkeys(NAMES, 1), minute
        assert {result.outcome for _, _, result in fired} == {"triggered"}
    by_a = {name for name in NAMES if a.owns(name)}
    assert by_a and by_a != set(NAMES)
    assert all(bucket_of(name) in a.ownership.owned for name in by_a)  # type: ignore[union-attr]


async def test_a_scheduler_whose_lease_ran_out_by_its_own_measure_fires_nothing(make: Make) -> None:
    clock = ManualClock(start_time())
    a = await make("a", clock, lease=30.0)
    await beat_until_settled([a])
    await advance(clock, 60, [a])
    assert len(await a.tick()) == len(NAMES)
    await clock.advance(31)  # no beat for longer than the lease: the leases may be taken now
    assert not any(a.owns(name) for name in NAMES)
    assert await a.tick() == []


async def test_a_dead_schedulers_buckets_are_taken_over_from_its_cursors(make: Make) -> None:
    clock = ManualClock(start_time())
    a = await make("a", clock, lease=1.0)  # a short lease, by the database's (real) clock
    b = await make("b", clock)
    await beat_until_settled([a, b])
    await advance(clock, 60, [a, b])
    first = [*await a.tick(), *await b.tick()]
    assert len(first) == len(NAMES)
    # a dies (no beat any more); its leases expire on the database's clock, then b takes them.
    assert b.ownership is not None
    deadline = time.monotonic() + 15
    while len(b.ownership.owned) < BUCKETS:
        assert time.monotonic() < deadline, "b never took over a's buckets"
        await asyncio.sleep(0.1)
        await b.ownership.beat()
    await advance(clock, 60, [b])
    second = await b.tick()
    # b fires every schedule's next fire time once: a's earlier one is neither fired again nor lost.
    assert Counter(name for name, _, _ in second) == dict.fromkeys(NAMES, 1)
    assert {result.outcome for _, _, result in second} == {"triggered"}
    assert len({when for _, when, _ in second}) == 1


async def test_the_database_clock_measures_the_host_offset(backend: Backend) -> None:
    store = await backend.open_store()
    ahead = ManualClock(datetime.now(UTC) + timedelta(seconds=20))  # a host 20 s ahead
    clock = DatabaseClock(ahead)
    offset = await clock.measure(store.database_time)
    assert offset == pytest.approx(20, abs=0.5)
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 0.5
