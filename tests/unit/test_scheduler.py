"""The scheduler on SQLite with an injected clock: exactly one run per fire time, whatever happens."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from durably_sched import Durably, Step, create_durably, define_job
from durably_sched.schedule.config import SchedulesConfig, parse_schedules
from durably_sched.schedule.cron import parse_fire_key
from durably_sched.schedule.scheduler import Scheduler
from tests.helpers import FakeClock


async def report(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True}


REPORT = define_job(name="report", run=report)


def config(text: str) -> SchedulesConfig:
    return parse_schedules(text, job_inputs={"report": None})


@pytest.fixture
async def durably(tmp_path: Path) -> AsyncIterator[Durably]:
    d = create_durably(f"sqlite:///{tmp_path / 'sched.db'}", polling_interval=0.05).register([REPORT])
    await d.migrate()
    await d.start(worker=False)
    yield d
    await d.close()


T0 = datetime(2026, 1, 5, 10, 0, 30, tzinfo=UTC)
EVERY_MINUTE = """
schedules:
  minutely:
    cron: "* * * * *"
    job: report
"""


async def scheduled_keys(durably: Durably, name: str) -> list[str]:
    runs = await durably.get_runs(schedule=name, limit=10_000)
    return sorted(r.idempotency_key or "" for r in runs)


async def outcomes(durably: Durably, name: str) -> dict[str, str]:
    records = await durably.store.list_fire_records(name, limit=10_000)
    return {r.fire_time.strftime("%H:%M"): r.outcome for r in records}


async def test_each_fire_time_makes_one_run_with_the_fire_time_key(durably: Durably) -> None:
    clock = FakeClock(T0)
    scheduler = Scheduler(durably, config(EVERY_MINUTE), clock=clock)
    await scheduler.load()
    assert await scheduler.tick() == []  # first seen: starts from now, nothing fired
    clock.advance(minutes=1)
    (fired,) = await scheduler.tick()
    assert fired[2].outcome == "triggered"
    run = fired[2].run
    assert run is not None
    assert run.idempotency_key == "schedule:minutely:2026-01-05T10:01:00Z"
    assert run.labels == {"schedule": "minutely", "scheduled_for": "2026-01-05T10:01:00Z"}
    assert run.concurrency_key == "schedule:minutely"  # overlap: queue is the default
    assert await scheduler.tick() == []  # nothing new until the next minute


async def test_several_schedulers_and_restarts_make_one_run_per_fire_time(durably: Durably) -> None:
    clock = FakeClock(T0)
    schedulers = [Scheduler(durably, config(EVERY_MINUTE), clock=clock) for _ in range(3)]
    for s in schedulers:
        await s.load()
    for _ in range(5):
        clock.advance(minutes=1)
        await asyncio.gather(*(s.tick() for s in schedulers))
    # A restarted scheduler reads the cursor and re-fires nothing.
    restarted = Scheduler(durably, config(EVERY_MINUTE), clock=clock)
    await restarted.load()
    assert await restarted.tick() == []
    keys = await scheduled_keys(durably, "minutely")
    assert keys == [f"schedule:minutely:2026-01-05T10:0{m}:00Z" for m in range(1, 6)]
    records = await durably.store.list_fire_records("minutely")
    assert Counter(r.outcome for r in records) == {"triggered": 5}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("all", {f"10:0{m}": "triggered" for m in range(1, 6)}),
        ("latest", {**{f"10:0{m}": "missed" for m in range(1, 5)}, "10:05": "triggered"}),
        ("none", {f"10:0{m}": "missed" for m in range(1, 6)}),
    ],
)
async def test_catch_up_after_downtime_follows_the_policy(
    durably: Durably, policy: str, expected: dict[str, str]
) -> None:
    text = EVERY_MINUTE + f"    catchup: {policy}\n"
    clock = FakeClock(T0)
    first = Scheduler(durably, config(text), clock=clock)
    await first.load()
    # Down from 10:00:30 until 10:05:40: five fire times missed.
    clock.advance(minutes=5, seconds=10)
    later = Scheduler(durably, config(text), clock=clock)
    await later.load()
    await later.tick()
    assert await outcomes(durably, "minutely") == expected
    runs = await durably.get_runs(schedule="minutely")
    assert len(runs) == sum(v == "triggered" for v in expected.values())


async def test_fire_times_outside_the_catch_up_window_are_recorded_missed(durably: Durably) -> None:
    text = EVERY_MINUTE + "    catchup_window: 3m\n"
    clock = FakeClock(T0)
    scheduler = Scheduler(durably, config(text), clock=clock)
    await scheduler.load()
    clock.advance(minutes=6)  # 10:06:30; window starts 10:03:30
    fresh = Scheduler(durably, config(text), clock=clock)
    await fresh.load()
    await fresh.tick()
    assert await outcomes(durably, "minutely") == {
        "10:01": "missed",
        "10:02": "missed",
        "10:03": "missed",
        "10:04": "triggered",
        "10:05": "triggered",
        "10:06": "triggered",
    }


async def test_clock_jump_forward_catches_up_and_jump_back_doubles_nothing(durably: Durably) -> None:
    clock = FakeClock(T0)
    scheduler = Scheduler(durably, config(EVERY_MINUTE), clock=clock)
    await scheduler.load()
    clock.advance(minutes=1)
    await scheduler.tick()
    clock.advance(minutes=4)  # suspend/resume: the clock jumps past three fire times
    await scheduler.tick()
    clock.advance(minutes=-3)  # NTP steps the clock back
    assert await scheduler.tick() == []
    clock.advance(minutes=4)
    await scheduler.tick()
    keys = await scheduled_keys(durably, "minutely")
    minutes = [parse_fire_key(k)[1].minute for k in keys]
    assert minutes == [1, 2, 3, 4, 5, 6]


async def test_overlap_skip_records_skipped_while_a_run_is_active(durably: Durably) -> None:
    text = EVERY_MINUTE + "    overlap: skip\n"
    clock = FakeClock(T0)
    scheduler = Scheduler(durably, config(text), clock=clock)
    await scheduler.load()
    clock.advance(minutes=1)
    (first,) = await scheduler.tick()
    assert first[2].run is not None and first[2].run.concurrency_key is None
    clock.advance(minutes=1)
    (second,) = await scheduler.tick()
    assert second[2].outcome == "skipped" and second[2].run is None
    await durably.cancel(first[2].run.id)  # no longer active
    clock.advance(minutes=1)
    (third,) = await scheduler.tick()
    assert third[2].outcome == "triggered"


async def test_overlap_allow_sets_no_concurrency_key(durably: Durably) -> None:
    clock = FakeClock(T0)
    scheduler = Scheduler(durably, config(EVERY_MINUTE + "    overlap: allow\n"), clock=clock)
    await scheduler.load()
    clock.advance(minutes=2)
    fired = await scheduler.tick()
    assert [f[2].outcome for f in fired] == ["triggered", "triggered"]
    assert all(f[2].run is not None and f[2].run.concurrency_key is None for f in fired)


async def test_disabled_schedule_records_disabled_and_does_not_backfill_when_enabled(
    durably: Durably,
) -> None:
    clock = FakeClock(T0)
    scheduler = Scheduler(durably, config(EVERY_MINUTE + "    enabled: false\n"), clock=clock)
    await scheduler.load()
    clock.advance(minutes=2)
    await scheduler.tick()
    await scheduler.reload(config(EVERY_MINUTE))
    clock.advance(minutes=1)
    await scheduler.tick()
    assert await outcomes(durably, "minutely") == {
        "10:01": "disabled",
        "10:02": "disabled",
        "10:03": "triggered",
    }


async def test_jitter_delays_the_trigger_but_not_the_key(durably: Durably) -> None:
    text = EVERY_MINUTE + "    jitter: 50s\n"
    clock = FakeClock(T0)
    scheduler = Scheduler(durably, config(text), clock=clock)
    await scheduler.load()
    due = scheduler.next_due()[0][0]
    fire_time = datetime(2026, 1, 5, 10, 1, tzinfo=UTC)
    assert fire_time <= due < fire_time + timedelta(seconds=50)
    clock.t = due - timedelta(milliseconds=1)
    assert await scheduler.tick() == []
    clock.t = due
    (fired,) = await scheduler.tick()
    assert fired[2].run is not None
    assert fired[2].run.idempotency_key == "schedule:minutely:2026-01-05T10:01:00Z"


async def test_a_changed_cron_starts_from_now_instead_of_backfilling(durably: Durably) -> None:
    daily = EVERY_MINUTE.replace('"* * * * *"', '"0 0 * * *"')
    clock = FakeClock(T0)
    scheduler = Scheduler(durably, config(daily), clock=clock)
    await scheduler.load()
    clock.advance(minutes=3)
    await scheduler.reload(config(EVERY_MINUTE))
    assert await scheduler.tick() == []
    clock.advance(minutes=1)
    assert len(await scheduler.tick()) == 1


async def test_dst_fall_back_fixed_hour_fires_once_through_the_scheduler(durably: Durably) -> None:
    text = """
schedules:
  berlin:
    cron: "30 2 * * *"
    timezone: Europe/Berlin
    job: report
"""
    clock = FakeClock(datetime(2026, 10, 24, 22, 0, tzinfo=UTC))  # Sunday 25 Oct 00:00 CEST
    scheduler = Scheduler(durably, config(text), clock=clock)
    await scheduler.load()
    for _ in range(8):  # through both 02:30s (00:30Z and 01:30Z)
        clock.advance(minutes=30)
        await scheduler.tick()
    assert await scheduled_keys(durably, "berlin") == ["schedule:berlin:2026-10-25T00:30:00Z"]


async def test_the_real_loop_fires_a_per_second_schedule(durably: Durably) -> None:
    text = """
schedules:
  fast:
    cron: "* * * * * *"
    job: report
"""
    scheduler = Scheduler(durably, config(text))
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while len(await scheduled_keys(durably, "fast")) < 3:
            assert time.monotonic() < deadline, "the loop did not fire"
            await asyncio.sleep(0.05)
    finally:
        await scheduler.stop()
    keys = await scheduled_keys(durably, "fast")
    seconds = [parse_fire_key(k)[1] for k in keys]
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(seconds))


async def test_hourly_schedule_fires_both_fall_back_hours_at_their_own_instants(durably: Durably) -> None:
    text = """
schedules:
  hourly:
    cron: "0 * * * *"
    timezone: Europe/Berlin
    job: report
"""
    clock = FakeClock(datetime(2026, 10, 24, 23, 30, tzinfo=UTC))  # 01:30 CEST
    scheduler = Scheduler(durably, config(text), clock=clock)
    await scheduler.load()
    clock.advance(minutes=30)  # 00:00Z = the first 02:00 (CEST)
    assert [f[1] for f in await scheduler.tick()] == [datetime(2026, 10, 25, 0, 0, tzinfo=UTC)]
    # Not due again until the second 02:00 (CET), one real hour later.
    clock.advance(minutes=59)
    assert await scheduler.tick() == []
    clock.advance(minutes=1)
    assert [f[1] for f in await scheduler.tick()] == [datetime(2026, 10, 25, 1, 0, tzinfo=UTC)]


async def test_scheduled_runs_store_the_validated_input_like_a_direct_trigger(tmp_path: Path) -> None:
    from pydantic import BaseModel

    class Sized(BaseModel):
        name: str
        size: int = 3

    async def sized(step: Step, payload: Sized) -> dict[str, Any]:
        return {}

    job = define_job(name="sized", input=Sized, run=sized)
    d = create_durably(f"sqlite:///{tmp_path / 'v.db'}").register([job])
    await d.migrate()
    await d.start(worker=False)
    try:
        text = 'schedules:\n  s:\n    cron: "* * * * *"\n    job: sized\n    input: {name: a}\n'
        clock = FakeClock(T0)
        scheduler = Scheduler(d, parse_schedules(text, job_inputs={"sized": Sized}), clock=clock)
        await scheduler.load()
        clock.advance(minutes=1)
        (fired,) = await scheduler.tick()
        direct = await d.jobs.sized.trigger({"name": "a"})
        assert fired[2].run is not None
        assert fired[2].run.input == direct.record.input == {"name": "a", "size": 3}
    finally:
        await d.close()


def _fire_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "durably_sched.scheduler"]


async def test_the_log_says_what_the_fire_record_says(
    durably: Durably, caplog: pytest.LogCaptureFixture
) -> None:
    """A jittered start is not a catch-up; a paused fire time is logged paused, as it is recorded."""
    caplog.set_level(logging.INFO, logger="durably_sched")
    text = EVERY_MINUTE.replace("job: report", "job: report\n    catchup: latest\n    jitter: 50s")
    # Ahead of the real time: the pause below is stamped by the store's clock (as in real life).
    clock = FakeClock(datetime.now(UTC).replace(second=30, microsecond=0) + timedelta(hours=1))
    durably.schedule_clock = clock
    scheduler = Scheduler(durably, config(text), clock=clock)
    await scheduler.load()
    clock.t = scheduler.next_due()[0][0]
    (fired,) = await scheduler.tick()
    assert fired[2].outcome == "triggered"
    (line,) = [m for m in _fire_lines(caplog) if m.startswith("fired:")]
    assert line.startswith("fired: run triggered (jitter: ") and "catch-up" not in line, line

    caplog.clear()
    await durably.pause_schedule("minutely", reason="maintenance")
    clock.advance(minutes=3)
    await scheduler.tick()
    records = await durably.store.list_fire_records("minutely", limit=10)
    paused = [r for r in records if r.outcome == "paused"]
    lines = [m for m in _fire_lines(caplog) if m.startswith(("not run:", "missed:", "fired:"))]
    assert paused and len(lines) == len(paused), lines
    assert all(m.startswith("not run: the schedule is paused") for m in lines), lines


async def test_a_large_tick_logs_a_line_per_batch_and_each_fire_time_at_debug(
    durably: Durably, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of many schedules says what fired in a line per batch at INFO (a line per fire time
    would cost a fifth of the scheduler's CPU); each fire time is still at DEBUG, and a small tick
    keeps its line per fire time at INFO."""
    from durably_sched.schedule import scheduler as module

    monkeypatch.setattr(module, "LOG_EACH", 4)
    monkeypatch.setattr(module, "BATCH", 2)
    names = [f"s{i}" for i in range(5)]
    text = "schedules:\n" + "".join(f"  {n}: {{cron: '* * * * *', job: report}}\n" for n in names)
    clock = FakeClock(T0)
    scheduler = Scheduler(durably, config(text), clock=clock)
    await scheduler.load()
    caplog.set_level(logging.DEBUG, logger="durably_sched")
    clock.advance(minutes=1)
    assert len(await scheduler.tick()) == 5
    info = [r.getMessage() for r in caplog.records if r.name == module.log.name and r.levelno == logging.INFO]
    debug = [r for r in caplog.records if r.name == module.log.name and r.levelno == logging.DEBUG]
    assert len(info) == 3 and all(m.startswith("fired ") for m in info), info  # batches of 2, 2, 1
    assert "fired 2 fire times of 2 schedules (s0 ... s1; 2026-01-05T10:01:00Z): 2 triggered" in info
    assert sorted(r.__dict__["schedule"] for r in debug) == names
    assert all(r.getMessage().startswith("fired: run triggered") for r in debug)

    caplog.clear()
    scheduler.config = config(text.split("  s4")[0])  # 4 schedules: a line per fire time again
    await scheduler.load()
    clock.advance(minutes=1)
    assert len(await scheduler.tick()) == 4
    info = [r.getMessage() for r in caplog.records if r.name == module.log.name and r.levelno == logging.INFO]
    assert sum(m.startswith("fired: run triggered") for m in info) == 4, info
    assert not any(m.startswith("fired ") for m in info), info


async def _until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def test_the_loop_is_a_supervised_service_a_failing_load_backs_off_then_it_fires(
    durably: Durably, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The scheduler runs on the service base: a load that fails is logged and tried again after a
    back-off that doubles (on the injected clock), and the loop then fires as usual."""
    from durably_sched.clock import ManualClock
    from durably_sched.errors import StoreError

    clock = ManualClock(T0)
    scheduler = Scheduler(durably, config(EVERY_MINUTE), clock=clock)
    real, calls = durably.get_cursors, 0

    async def flaky() -> dict[str, datetime]:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise StoreError("database is locked")
        return await real()

    monkeypatch.setattr(durably, "get_cursors", flaky)
    with caplog.at_level(logging.ERROR, logger="durably_sched.scheduler"):
        scheduler.start()
        try:
            await _until(lambda: scheduler.failures == 1, "the first load failed")
            assert scheduler.backoff() == 1.0
            await clock.advance(1.0)
            await _until(lambda: scheduler.failures == 2, "the second load failed")
            assert scheduler.backoff() == 2.0 and scheduler.restarts == 2
            await clock.advance(1.9)
            assert calls == 2  # still backing off
            await clock.advance(0.1)
            await _until(lambda: scheduler.failures == 0 and scheduler.last_tick_monotonic > 0, "loaded")
            await clock.advance(60)
            deadline = time.monotonic() + 10
            while not await scheduled_keys(durably, "minutely"):
                assert time.monotonic() < deadline, "the loop did not fire after it recovered"
                await clock.advance(1)
        finally:
            await scheduler.stop()
    assert not scheduler.running
    assert any("scheduler could not read its cursors" in r.getMessage() for r in caplog.records)
