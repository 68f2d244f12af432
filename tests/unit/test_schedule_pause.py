"""Pausing schedules at run time, on SQLite and PostgreSQL, with an injected clock.

What users rely on: a pause made anywhere (here: through one process's facade) is honoured by every
scheduler process at its next tick and survives restarts and reloads; paused fire times are recorded
``paused`` and are never run unless a resume asks for the catch-up, which then follows the
schedule's own policy and window; ``pause_after_failures`` pauses a schedule after N consecutive
failed runs as counted by the database, exactly once across schedulers; and the scheduler reads the
pause state once per tick, never once per fire time.

Every Durably instance here has its own store (its own connections), like a separate process. The
clock starts a little ahead of the real time: run completions are stamped by the store's clock, and
the fake fire times must come after them as they would in real life.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from durably_sched import (
    Durably,
    InvalidArgumentError,
    ScheduleNotFoundError,
    Step,
    UnknownJobError,
    create_durably,
    define_job,
)
from durably_sched.errors import ConfigError
from durably_sched.events import ScheduleAutoPauseEvent, SchedulePauseEvent, ScheduleResumeEvent
from durably_sched.schedule.config import SchedulesConfig, parse_schedules
from durably_sched.schedule.pausing import AUTO_PAUSE_BY, catchup_fire_times, default_actor
from durably_sched.schedule.scheduler import Scheduler, make_fire
from tests.backends import Backend
from tests.helpers import FakeClock

FAIL_MESSAGE = "ValueError: the warehouse is down"
_fail_next: list[bool] = []  # the flaky job fails while this is [True]


async def report(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True}


async def flaky(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    if _fail_next and _fail_next[0]:
        raise ValueError("the warehouse is down")
    return {"ok": True}


REPORT = define_job(name="report", run=report)
FLAKY = define_job(name="flaky", run=flaky)
UNCLAIMED = define_job(name="unclaimed", run=report)


def config(text: str) -> SchedulesConfig:
    return parse_schedules(text, job_inputs={"report": None, "flaky": None})


EVERY_MINUTE = """
schedules:
  minutely:
    cron: "* * * * *"
    job: report
"""


def start_time() -> datetime:
    """HH:MM:30 a few minutes after the real time (see the module docstring)."""
    return (datetime.now(UTC) + timedelta(minutes=3)).replace(second=30, microsecond=0)


class Clock(FakeClock):
    def __init__(self) -> None:
        super().__init__(start_time())
        self.start = self.t


def at(clock: Clock, minutes: int) -> datetime:
    """The fire time ``minutes`` whole minutes after the clock's start minute."""
    return clock.start.replace(second=0) + timedelta(minutes=minutes)


Instances = Callable[..., Any]


@pytest.fixture
async def instances(backend: Backend) -> AsyncIterator[Instances]:
    """``await make(worker=False)``: another Durably on the test's database (another "process")."""
    made: list[Durably] = []

    async def make(*, worker: bool = False, clock: FakeClock | None = None) -> Durably:
        d = create_durably(
            backend.url, polling_interval=0.05, heartbeat_interval=0.5, stale_threshold=10
        ).register([REPORT, FLAKY])
        await d.migrate()
        await d.start(worker=worker)
        d.schedule_clock = clock
        made.append(d)
        return d

    yield make
    for d in made:
        await d.close()
    _fail_next.clear()


async def outcomes(durably: Durably, name: str) -> dict[datetime, str]:
    records = await durably.store.list_fire_records(name, limit=10_000)
    return {r.fire_time: r.outcome for r in sorted(records, key=lambda r: r.fire_time)}


async def runs_for(durably: Durably, name: str) -> list[str]:
    return sorted(r.labels["scheduled_for"] for r in await durably.get_runs(schedule=name, limit=10_000))


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- pause ----------------------------------------------------------------------------------------


async def test_a_pause_reaches_every_scheduler_at_its_next_tick(instances: Instances) -> None:
    clock = Clock()
    processes = [await instances(clock=clock) for _ in range(3)]
    schedulers = [Scheduler(d, config(EVERY_MINUTE), clock=clock) for d in processes]
    for s in schedulers:
        await s.load()
    clock.advance(minutes=1)
    await asyncio.gather(*(s.tick() for s in schedulers))
    change = await processes[0].pause_schedule("minutely", reason="warehouse migration", by="alice@ops")
    assert change.changed and change.state.paused and change.state.paused_at == clock.t
    for _ in range(2):
        clock.advance(minutes=1)
        results = await asyncio.gather(*(s.tick() for s in schedulers))
        # The first tick after the pause, in every process: nothing fires.
        for fired in results:
            assert [(r.outcome in ("paused", "deduplicated"), r.run) for _, _, r in fired] == [(True, None)]
    for s in schedulers:
        paused = s.paused("minutely")
        assert paused is not None and paused.paused_by == "alice@ops"
    assert list((await outcomes(processes[1], "minutely")).values()) == ["triggered", "paused", "paused"]
    assert await runs_for(processes[2], "minutely") == [iso(at(clock, 1))]


async def test_fire_times_from_before_the_pause_keep_the_catch_up_policy(instances: Instances) -> None:
    clock = Clock()
    durably = await instances(clock=clock)
    first = Scheduler(durably, config(EVERY_MINUTE), clock=clock)
    await first.load()  # cursor at :00:30; then every scheduler is down
    clock.advance(minutes=2, seconds=15)  # :02:45
    await durably.pause_schedule("minutely", reason="during the outage")
    clock.advance(minutes=3)  # :05:45: a scheduler starts again
    later = Scheduler(durably, config(EVERY_MINUTE), clock=clock)
    await later.load()
    await later.tick()
    assert await outcomes(durably, "minutely") == {
        at(clock, 1): "triggered",  # due before the pause: caught up (catchup: all)
        at(clock, 2): "triggered",
        at(clock, 3): "paused",
        at(clock, 4): "paused",
        at(clock, 5): "paused",
    }


async def test_a_pause_survives_restarts_and_reloads(instances: Instances) -> None:
    clock = Clock()
    durably = await instances(clock=clock)
    scheduler = Scheduler(durably, config(EVERY_MINUTE), clock=clock)
    await scheduler.load()
    await durably.pause_schedule("minutely")
    await scheduler.stop()
    restarted = Scheduler(await instances(clock=clock), config(EVERY_MINUTE), clock=clock)
    await restarted.load()
    assert restarted.paused("minutely") is not None  # known at load, before any tick
    clock.advance(minutes=1)
    await restarted.tick()
    with_another = EVERY_MINUTE + '  hourly:\n    cron: "0 * * * *"\n    job: report\n'
    await restarted.reload(config(with_another))
    clock.advance(minutes=1)
    await restarted.tick()
    assert list((await outcomes(durably, "minutely")).values()) == ["paused", "paused"]
    assert await runs_for(durably, "minutely") == []


async def test_a_disabled_schedule_stays_disabled_and_keeps_its_pause(instances: Instances) -> None:
    clock = Clock()
    durably = await instances(clock=clock)
    disabled = config(EVERY_MINUTE + "    enabled: false\n")
    scheduler = Scheduler(durably, disabled, clock=clock)
    await scheduler.load()
    await durably.pause_schedule("minutely")
    clock.advance(minutes=1)
    await scheduler.tick()
    await scheduler.reload(config(EVERY_MINUTE))  # the file enables it: the pause still holds
    clock.advance(minutes=1)
    await scheduler.tick()
    assert list((await outcomes(durably, "minutely")).values()) == ["disabled", "paused"]


# --- resume ---------------------------------------------------------------------------------------


async def test_resume_fires_again_and_catches_nothing_up_unless_asked(instances: Instances) -> None:
    clock = Clock()
    durably = await instances(clock=clock)
    scheduler = Scheduler(durably, config(EVERY_MINUTE), clock=clock)
    await scheduler.load()
    await durably.pause_schedule("minutely", by="alice")
    for _ in range(3):
        clock.advance(minutes=1)
        await scheduler.tick()
    result = await durably.resume_schedule("minutely", by="bob")
    assert result.changed and result.caught_up == []
    assert result.state is not None and not result.state.paused and result.state.resumed_by == "bob"
    clock.advance(minutes=1)
    await scheduler.tick()
    assert list((await outcomes(durably, "minutely")).values()) == ["paused"] * 3 + ["triggered"]
    assert await runs_for(durably, "minutely") == [iso(at(clock, 4))]


async def test_a_resume_no_scheduler_saw_catches_nothing_up_at_start(instances: Instances) -> None:
    """Paused and resumed while every scheduler was down: the paused span is not caught up."""
    clock = Clock()
    durably = await instances(clock=clock)
    first = Scheduler(durably, config(EVERY_MINUTE), clock=clock)
    await first.load()
    clock.advance(minutes=1, seconds=15)  # :01:45, after the :01 fire time nobody handled
    await durably.pause_schedule("minutely")
    clock.advance(minutes=3)  # :04:45
    await durably.resume_schedule("minutely")
    clock.advance(minutes=1)  # :05:45
    later = Scheduler(durably, config(EVERY_MINUTE), clock=clock)
    await later.load()
    await later.tick()
    # :01 came before the pause but nobody handled it in time; the resume's cursor covers it too.
    assert await runs_for(durably, "minutely") == [iso(at(clock, 5))]


async def test_a_scheduler_that_sees_a_resume_late_does_not_fire_the_paused_span(
    instances: Instances,
) -> None:
    clock = Clock()
    durably = await instances(clock=clock)
    scheduler = Scheduler(durably, config(EVERY_MINUTE), clock=clock)
    await scheduler.load()
    await durably.pause_schedule("minutely")
    await scheduler.tick()  # sees the pause
    clock.advance(minutes=3)  # the loop stalls (suspended laptop) past three fire times
    await durably.resume_schedule("minutely")
    await scheduler.tick()
    clock.advance(minutes=1)
    await scheduler.tick()
    assert await runs_for(durably, "minutely") == [iso(at(clock, 4))]


async def test_a_resume_and_a_new_pause_between_two_ticks_do_not_fire_the_first_pause(
    instances: Instances,
) -> None:
    clock = Clock()
    durably = await instances(clock=clock)
    scheduler = Scheduler(durably, config(EVERY_MINUTE), clock=clock)
    await scheduler.load()
    await durably.pause_schedule("minutely", reason="first")
    await scheduler.tick()
    clock.advance(minutes=3)  # :03:30; the loop was stalled through the whole next bit
    await durably.resume_schedule("minutely")
    clock.advance(seconds=10)
    await durably.pause_schedule("minutely", reason="second")
    clock.advance(minutes=1)  # :04:40
    await scheduler.tick()
    assert await runs_for(durably, "minutely") == []
    assert list((await outcomes(durably, "minutely")).values()) == ["paused"]  # :04, in the second pause


async def test_a_catch_up_whose_job_is_not_registered_is_refused_before_resuming(
    instances: Instances,
) -> None:
    durably = await instances()
    text = 'schedules:\n  other:\n    cron: "* * * * *"\n    job: elsewhere\n'
    durably.use_schedules(parse_schedules(text, job_inputs={"elsewhere": None}))
    await durably.pause_schedule("other")
    with pytest.raises(UnknownJobError, match="elsewhere"):
        await durably.resume_schedule("other", catchup=True)
    state = await durably.get_schedule_state("other")
    assert state is not None and state.paused  # still paused: nothing was half done


@pytest.mark.parametrize(
    ("policy", "window", "run"),
    [
        ("all", "24h", [1, 2, 3, 4]),
        ("all", "150s", [3, 4]),  # the window ends at the resume (:04:40); :02 is older than 150 s
        ("latest", "24h", [4]),
        ("none", "24h", []),
    ],
)
async def test_resume_with_catchup_runs_the_paused_span_by_the_schedules_policy(
    instances: Instances, policy: str, window: str, run: list[int]
) -> None:
    text = EVERY_MINUTE + f"    catchup: {policy}\n    catchup_window: {window}\n"
    clock = Clock()
    durably = await instances(clock=clock)
    other = await instances(clock=clock)
    scheduler = Scheduler(durably, config(text), clock=clock)
    await scheduler.load()
    await durably.pause_schedule("minutely")
    for _ in range(3):  # :01, :02, :03 recorded paused
        clock.advance(minutes=1)
        await scheduler.tick()
    clock.advance(seconds=10)  # :03:40
    clock.advance(minutes=1)  # :04:40: :04 is due but no tick has recorded it yet
    other.use_schedules(config(text))
    result = await other.resume_schedule("minutely", catchup=True)
    assert result.changed
    assert sorted(t for t, r in result.caught_up if r.outcome == "triggered") == [at(clock, m) for m in run]
    expected = {at(clock, m): ("triggered" if m in run else "paused") for m in (1, 2, 3)}
    if 4 in run:
        expected[at(clock, 4)] = "triggered"
    assert await outcomes(durably, "minutely") == expected
    # Asking again (a retry after a crash, a second operator) runs nothing twice.
    again = await other.resume_schedule("minutely", catchup=True)
    assert not again.changed and all(r.outcome == "deduplicated" for _, r in again.caught_up)
    assert len(again.caught_up) == len(run)
    await scheduler.tick()  # the scheduler sees the resume; :04 is not fired behind the operator
    clock.t = at(clock, 5) + timedelta(seconds=1)  # on time, so even catchup: none fires it
    await scheduler.tick()
    assert await runs_for(durably, "minutely") == sorted(iso(at(clock, m)) for m in [*run, 5])


def test_catchup_fire_times_are_the_span_within_the_window() -> None:
    entry = config(EVERY_MINUTE + "    catchup_window: 10m\n").schedules["minutely"]
    base = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    span = catchup_fire_times(entry, base + timedelta(seconds=5), base + timedelta(minutes=3), base)
    assert span == [base + timedelta(minutes=m) for m in (1, 2, 3)]  # :00 came before the pause
    late = base + timedelta(minutes=12, seconds=30)  # the window reaches back to :02:30
    assert catchup_fire_times(entry, base, base + timedelta(minutes=3), late) == [base + timedelta(minutes=3)]


# --- failures and the automatic pause -------------------------------------------------------------


async def finish(durably: Durably, run_id: str) -> str:
    record = await durably.wait_for_run(run_id, timeout=30)
    return record.status


async def test_the_database_counts_consecutive_failures_of_finished_scheduled_runs(
    instances: Instances,
) -> None:
    clock = Clock()
    worker = await instances(worker=True, clock=clock)
    reader = await instances(clock=clock)
    entry = config("schedules:\n  s:\n    cron: '* * * * *'\n    job: flaky\n    overlap: allow\n").schedules[
        "s"
    ]

    async def fire(minute: int) -> str:
        result = await worker.fire(make_fire(entry, at(clock, minute)))
        assert result.run is not None
        return result.run.id

    _fail_next[:] = [True]
    failed = [await fire(m) for m in (1, 2)]
    assert [await finish(worker, r) for r in failed] == ["failed", "failed"]
    # Cancelling is neither a failure nor a success (a job no worker has, so none can run it first).
    reader.register([UNCLAIMED])
    unclaimed = entry.model_copy(update={"job": "unclaimed"})
    cancelled = (await reader.fire(make_fire(unclaimed, at(clock, 3)))).run
    assert cancelled is not None
    await reader.cancel(cancelled.id)
    state = await reader.get_schedule_state("s")
    assert state is not None and state.consecutive_failures == 2 and state.last_failed_run_id == failed[1]
    assert state.last_success_at is None and state.last_failure_at is not None
    # Several failing at once, finished by two workers: none is lost.
    second = await instances(worker=True, clock=clock)
    many = await asyncio.gather(*(fire(m) for m in range(4, 12)))
    assert set(await asyncio.gather(*(finish(second, r) for r in many))) == {"failed"}
    assert (await reader.get_schedule_states())["s"].consecutive_failures == 10
    _fail_next[:] = [False]
    await worker.retry(failed[0])  # a retried run that completes counts as a success
    assert await finish(worker, failed[0]) == "completed"
    after = await reader.get_schedule_state("s")
    assert after is not None and after.consecutive_failures == 0
    assert after.last_success_at is not None and after.last_success_at >= state.last_failure_at  # type: ignore[operator]
    assert "s" not in await reader.store.get_schedule_states(attention_only=True)


AUTO = """
schedules:
  flaky:
    cron: "* * * * *"
    job: flaky
    pause_after_failures: 2
"""


async def test_pause_after_failures_pauses_once_across_schedulers_and_resume_gives_new_tries(
    instances: Instances,
) -> None:
    clock = Clock()
    worker = await instances(worker=True, clock=clock)
    a, b = await instances(clock=clock), await instances(clock=clock)
    schedulers = [Scheduler(d, config(AUTO), clock=clock) for d in (a, b)]
    events: list[Any] = []
    for d in (a, b):
        d.on("schedule:auto-pause", events.append)
    for s in schedulers:
        await s.load()
    _fail_next[:] = [True]

    async def minute() -> None:
        clock.advance(minutes=1)
        results = await asyncio.gather(*(s.tick() for s in schedulers))
        for fired in results:
            for _, _, r in fired:
                if r.outcome == "triggered" and r.run is not None:
                    await finish(worker, r.run.id)

    for _ in range(2):
        await minute()
    assert events == []  # two failed runs so far; the pause happens at the next tick
    await minute()
    assert len(events) == 1  # one scheduler paused it and said so, the other saw it paused
    event = events[0]
    assert isinstance(event, ScheduleAutoPauseEvent) and event.failures == 2
    assert (
        event.reason.startswith("2 consecutive failed runs; the last, run ") and FAIL_MESSAGE in event.reason
    )
    state = await worker.get_schedule_state("flaky")
    assert state is not None and state.paused and state.auto_paused and state.paused_by == AUTO_PAUSE_BY
    assert list((await outcomes(worker, "flaky")).values()) == ["triggered", "triggered", "paused"]
    # Resumed: the old failures do not count again; it takes two new ones.
    _fail_next[:] = [True]
    await a.resume_schedule("flaky")
    await minute()
    assert (await worker.get_schedule_state("flaky")).paused is False  # type: ignore[union-attr]
    await minute()
    await minute()
    assert len(events) == 2
    # A success in between resets the count.
    await a.resume_schedule("flaky")
    await minute()  # fails
    _fail_next[:] = [False]
    await minute()  # completes
    _fail_next[:] = [True]
    await minute()  # fails: one failure since the success
    await minute()
    final = await worker.get_schedule_state("flaky")
    assert final is not None and final.consecutive_failures == 2 and not final.paused
    assert Counter(type(e) for e in events) == {ScheduleAutoPauseEvent: 2}


# --- the facade's API: events, bad input -----------------------------------------------------------


async def test_pause_and_resume_emit_events_and_say_when_nothing_changed(instances: Instances) -> None:
    clock = Clock()
    durably = await instances(clock=clock)
    durably.use_schedules(config(EVERY_MINUTE))
    seen: list[Any] = []
    durably.on("schedule:pause", seen.append)
    durably.on("schedule:resume", seen.append)
    first = await durably.pause_schedule("minutely", reason="  two\nlines  ")
    assert first.changed and first.state.pause_reason == "two lines"
    assert first.state.paused_by == default_actor() and "@" in default_actor()
    again = await durably.pause_schedule("minutely", reason="another reason", by="carol")
    assert not again.changed and again.state.pause_reason == "two lines" and again.state.paused_by != "carol"
    resumed = await durably.resume_schedule("minutely", by="dave")
    assert resumed.changed
    not_paused = await durably.resume_schedule("minutely")
    assert not not_paused.changed and not_paused.state is not None and not not_paused.state.paused
    assert [type(e) for e in seen] == [SchedulePauseEvent, ScheduleResumeEvent]
    assert seen[0].schedule == "minutely" and seen[0].reason == "two lines"
    assert seen[1].by == "dave" and seen[1].paused_since == first.state.paused_at.timestamp()  # type: ignore[union-attr]


async def test_bad_input_is_refused_with_one_line(instances: Instances) -> None:
    durably = await instances()
    unknown = await durably.resume_schedule("never-paused")  # no schedules in use: nothing to check
    assert unknown.state is None and not unknown.changed
    with pytest.raises(InvalidArgumentError, match="needs the schedules in use"):
        await durably.resume_schedule("x", catchup=True)
    durably.use_schedules(config(EVERY_MINUTE))
    cases: list[tuple[Any, type[Exception], str]] = [
        (durably.pause_schedule("nightly"), ScheduleNotFoundError, r"unknown schedule 'nightly'.*minutely"),
        (durably.pause_schedule("two words"), ScheduleNotFoundError, "not a schedule name"),
        (durably.pause_schedule("minutely", reason="a\x00b"), InvalidArgumentError, "control characters"),
        (durably.pause_schedule("minutely", reason="x" * 501), InvalidArgumentError, "at most 500"),
        (durably.pause_schedule("minutely", by=3), InvalidArgumentError, "'by' must be text"),  # type: ignore[arg-type]
        (durably.resume_schedule("nightly"), ScheduleNotFoundError, "unknown schedule 'nightly'"),
        (durably.resume_schedule("nightly", catchup=True), ScheduleNotFoundError, "unknown schedule"),
    ]
    for call, kind, pattern in cases:
        with pytest.raises(kind, match=pattern) as raised:
            await call
        assert "\n" not in str(raised.value)
    assert await durably.get_schedule_states() == {}  # nothing was written


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "pause_after_failures: must be at least 1 (got 0)"),
        ("-2", "pause_after_failures: must be at least 1 (got -2)"),
        ("true", "pause_after_failures: expected a whole number of failed runs, at least 1 (got true)"),
        ("1.5", "pause_after_failures: expected a whole number of failed runs, at least 1 (got 1.5)"),
        ("'3'", "pause_after_failures: expected a whole number of failed runs, at least 1 (got '3')"),
    ],
)
def test_pause_after_failures_must_be_a_positive_whole_number(value: str, message: str) -> None:
    text = f"schedules:\n  a:\n    cron: '* * * * *'\n    job: report\n    pause_after_failures: {value}\n"
    with pytest.raises(ConfigError) as raised:
        parse_schedules(text, "schedules.yaml")
    assert str(raised.value) == (
        f"schedules.yaml:5: schedule 'a': {message}; leave it out to never pause automatically"
    )
    defaults = f"defaults:\n  pause_after_failures: {value}\nschedules: {{}}\n"
    with pytest.raises(ConfigError, match=r"^schedules.yaml:2: defaults.pause_after_failures: "):
        parse_schedules(defaults, "schedules.yaml")
    fine = parse_schedules(text.replace(f"pause_after_failures: {value}", "pause_after_failures: 3"))
    assert fine.schedules["a"].pause_after_failures == 3


# --- cost: one state read per tick -----------------------------------------------------------------


async def test_the_pause_state_is_read_once_per_tick_not_per_fire_time(instances: Instances) -> None:
    text = "schedules:\n" + "".join(f"  s{i}:\n    cron: '* * * * *'\n    job: report\n" for i in range(40))
    clock = Clock()
    durably = await instances(clock=clock)
    scheduler = Scheduler(durably, config(text), clock=clock)
    await scheduler.load()
    store = durably.store
    calls: Counter[str] = Counter()
    for name in ("get_schedule_states", "get_schedule_state", "get_cursors", "list_fire_records"):
        original = getattr(store, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _original(*args, **kwargs)

        setattr(store, name, counted)
    clock.advance(minutes=1)
    assert len(await scheduler.tick()) == 40
    assert calls == {"get_schedule_states": 1}
    await durably.pause_schedule("s7")
    clock.advance(minutes=1)
    fired = await scheduler.tick()
    assert Counter(r.outcome for _, _, r in fired) == {"triggered": 39, "paused": 1}
    assert calls == {"get_schedule_states": 2}
    await durably.resume_schedule("s7")
    clock.advance(minutes=1)
    await scheduler.tick()
    # A resume seen costs one read of the cursors, once.
    assert calls == {"get_schedule_states": 3, "get_cursors": 1}
