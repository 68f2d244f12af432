"""Backfill and slot bounds (durably_sched.schedule.manual).

What operators rely on: no backfill can take the server down, `force` or not -- it holds at most
BACKFILL_MAX fire times and they are computed off the event loop, so probes, the scheduler and the
worker go on meanwhile -- and a time outside the supported range is refused as an invalid argument
naming the field, never an OverflowError.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from durably_sched import Step, define_job
from durably_sched.errors import InvalidArgumentError
from durably_sched.schedule import manual
from durably_sched.schedule.config import ScheduleEntry, parse_schedules
from tests.backends import Backend
from tests.helpers import durably_factory

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def entry(cron: str = "*/30 * * * * *", zone: str = "UTC") -> ScheduleEntry:
    text = f'schedules:\n  s:\n    cron: "{cron}"\n    job: x\n    timezone: {zone}\n'
    return parse_schedules(text).schedules["s"]


def test_force_has_a_hard_upper_bound() -> None:
    two_months = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))  # 169,920 fire times
    started = time.perf_counter()
    with pytest.raises(manual.ScheduleActionError) as info:
        manual.backfill_times(entry(), *two_months, force=True, now=NOW)
    print(f"refusing two months of a 30-second schedule took {time.perf_counter() - started:.2f} s")
    assert str(info.value).startswith(f"more than {manual.BACKFILL_MAX:,} fire times of schedule 's'")
    assert "no backfill is that large, even with force; split the range" in str(info.value)
    assert isinstance(info.value, InvalidArgumentError)


def test_force_allows_up_to_the_bound_and_not_one_more(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manual, "BACKFILL_MAX", 120)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    times = manual.backfill_times(entry(), start, start + timedelta(seconds=30 * 119), force=True, now=NOW)
    assert len(times) == 120 and times[0] == start
    with pytest.raises(manual.ScheduleActionError, match="more than 120 fire times"):
        manual.backfill_times(entry(), start, start + timedelta(seconds=30 * 120), force=True, now=NOW)
    with pytest.raises(manual.ScheduleActionError, match="narrow the range or pass force"):
        manual.backfill_times(entry(), start, start + timedelta(hours=1), limit=100, now=NOW)


@pytest.mark.parametrize(
    ("start", "end", "field", "named"),
    [
        (datetime.fromisoformat("0001-01-01T00:00:00+14:00"), NOW, "from", "from 0001-01-01T00:00:00+14:00"),
        (datetime(1, 1, 1, 0, 0, 5, tzinfo=UTC), NOW, "from", "from 0001-01-01T00:00:05+00:00"),
        (NOW, datetime.fromisoformat("9999-12-31T23:59:59-14:00"), "to", "to 9999-12-31T23:59:59-14:00"),
    ],
)
def test_times_out_of_range_name_their_field(start: datetime, end: datetime, field: str, named: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        manual.backfill_times(entry("0 * * * *", "Pacific/Kiritimati"), start, end, force=True, now=NOW)
    assert isinstance(info.value, manual.ScheduleActionError) and info.value.field == field
    assert str(info.value) == f"{named} is out of the supported range of times (years 2 to 9998, UTC)"


def test_a_slot_out_of_range_names_its_field() -> None:
    at = datetime.fromisoformat("9999-12-31T23:59:59-14:00")
    with pytest.raises(manual.ScheduleActionError) as info:
        manual.slot_time(entry("0 * * * *"), at, name="--at")
    assert info.value.field == "at"
    assert str(info.value) == (
        "--at 9999-12-31T23:59:59-14:00 is out of the supported range of times (years 2 to 9998, UTC)"
    )


def test_times_near_the_ends_of_the_range_still_work() -> None:
    yearly = entry("0 0 1 1 *", "Pacific/Kiritimati")
    early = manual.backfill_times(yearly, datetime(2, 1, 1, tzinfo=UTC), datetime(4, 1, 1, tzinfo=UTC))
    assert [t.year for t in early] == [2, 3]
    late = manual.backfill_times(
        yearly, datetime(9996, 1, 1, tzinfo=UTC), datetime(9998, 12, 31, tzinfo=UTC), force=True
    )
    assert [t.year for t in late] == [9997, 9998]  # 9996-01-01 at +14:00 is before the start (UTC)


async def test_planning_a_large_backfill_leaves_the_event_loop_free() -> None:
    ticks = 0
    stop = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    beating = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    before = ticks
    start = datetime(2026, 1, 1, tzinfo=UTC)
    started = time.perf_counter()
    times = await manual.plan_backfill(entry(), start, start + timedelta(days=17), force=True)
    took = time.perf_counter() - started
    during = ticks - before
    stop.set()
    await beating
    print(f"planned {len(times):,} fire times in {took:.2f} s; the loop ran {during} times meanwhile")
    assert len(times) == 17 * 24 * 120 + 1 and len(times) <= manual.BACKFILL_MAX
    assert during > 1  # a blocking computation would have let the heartbeat run at most once


# -- the order a backfill's runs are made in ----------------------------------------------------------


@pytest.fixture
async def make(backend: Backend) -> AsyncIterator[Callable[..., Any]]:
    async with durably_factory(backend.url) as factory:
        yield factory


async def test_a_backfill_makes_its_runs_in_fire_time_order_so_a_queue_runs_them_in_order(make: Any) -> None:
    """Operators backfill a range expecting its runs to catch up oldest first (``overlap: queue``):
    the runs are made in fire-time order, across batches, on both backends (PostgreSQL used to make
    each batch's runs concurrently, out of order)."""
    ran: list[str] = []

    async def record(step: Step, payload: dict[str, Any]) -> None:
        ran.append(step.labels["scheduled_for"])

    durably = await make(define_job(name="x", run=record), start=False, max_concurrent_runs=1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    times = manual.backfill_times(entry(), start, start + timedelta(minutes=150), now=NOW)
    assert len(times) > manual.BACKFILL_BATCH  # two batches at least
    results = await manual.backfill(durably, entry(), times)
    assert [r.outcome for r in results] == ["triggered"] * len(times)
    await durably.process_until_idle()
    assert len(ran) == len(times)
    assert ran == sorted(ran)
