"""The APScheduler bridge in one process: what an app that keeps its APScheduler triggers relies on.

Every fire time APScheduler hands the executor becomes one durable run with the key
``apscheduler:<job id>:<UTC second>``; anything that is not a registered durable job is refused with
one clear error. Two real APScheduler processes on one database are in
tests/system/test_apscheduler_processes.py.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
)
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from durably_sched import (
    Durably,
    InputValidationError,
    Step,
    StoreError,
    UnknownJobError,
    create_durably,
    define_job,
)
from durably_sched.integrations.apscheduler import (
    DurablyExecutor,
    NotADurableJobError,
    add_durable_job,
    apscheduler_key,
    durable_trigger,
    parse_apscheduler_key,
)
from tests.helpers import until


class ReportIn(BaseModel):
    team: str
    days: int = 1


async def report(step: Step, payload: ReportIn) -> dict[str, Any]:
    rows = await step.run("query", lambda: payload.days * 10)
    return {"team": payload.team, "rows": rows}


report_job = define_job(name="report", input=ReportIn, run=report)


async def other(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    return {}


other_job = define_job(name="other", run=other)


def plain_function() -> None:
    """What an app scheduled before it had durable jobs."""


NEVER = CronTrigger(year=2099)  # a trigger that does not fire during a test


def whole_second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'aps.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'aps.db'}"


class Recorder:
    """APScheduler events, as a listener collects them."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def __call__(self, event: Any) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def of(self, code: int) -> list[Any]:
        with self.lock:
            return [e for e in self.events if e.code == code]

    def wait_for(self, code: int, count: int, timeout: float = 20.0) -> list[Any]:
        """For thread-mode tests: block until ``count`` events of ``code`` arrived."""
        with self.changed:
            ok = self.changed.wait_for(
                lambda: sum(e.code == code for e in self.events) >= count, timeout=timeout
            )
        assert ok, f"{count} events of code {code} not seen within {timeout}s: {self.events}"
        return self.of(code)


@pytest.fixture
async def started(db_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Factory: a started Durably (no worker unless asked) with a running AsyncIOScheduler."""
    made: list[tuple[Durably, AsyncIOScheduler, DurablyExecutor]] = []

    async def factory(
        *jobs: Any, worker: bool = False, setup: Callable[[AsyncIOScheduler], None] | None = None
    ) -> tuple[Durably, AsyncIOScheduler, DurablyExecutor, Recorder]:
        durably = create_durably(db_url, polling_interval=0.05).register(list(jobs or [report_job]))
        await durably.migrate()
        await durably.start(worker=worker)
        executor = DurablyExecutor(durably)
        scheduler = AsyncIOScheduler(executors={"durably": executor}, timezone=UTC)
        recorder = Recorder()
        scheduler.add_listener(recorder)
        if setup is not None:
            setup(scheduler)
        scheduler.start()
        made.append((durably, scheduler, executor))
        return durably, scheduler, executor, recorder

    yield factory
    for durably, scheduler, executor in made:
        if scheduler.running:
            scheduler.shutdown()
        await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the loop
        await executor.drain()
        await durably.close()


# -- keys ------------------------------------------------------------------------------------------


def test_key_is_the_job_id_and_the_utc_second() -> None:
    berlin = datetime(2026, 3, 29, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # CEST, UTC+2
    assert apscheduler_key("nightly-report", berlin) == "apscheduler:nightly-report:2026-03-29T01:30:00Z"
    assert parse_apscheduler_key("apscheduler:a:b:2026-03-29T01:30:00Z") == (
        "a:b",
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="not a whole second"):
        apscheduler_key("x", datetime(2026, 1, 1, 0, 0, 0, 500, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        apscheduler_key("x", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="non-empty"):
        apscheduler_key("", datetime(2026, 1, 1, tzinfo=UTC))
    for bad in ("schedule:x:2026-01-01T00:00:00Z", "apscheduler:x:2026-02-30T00:00:00Z", "apscheduler::"):
        with pytest.raises(ValueError, match="not an APScheduler fire key"):
            parse_apscheduler_key(bad)


@given(
    job_id=st.text(min_size=1, max_size=40),
    instant=st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
)
def test_every_key_parses_back_to_its_job_id_and_fire_time(job_id: str, instant: datetime) -> None:
    fire_time = instant.replace(microsecond=0)
    assert parse_apscheduler_key(apscheduler_key(job_id, fire_time)) == (job_id, fire_time)


# -- fire times become durable runs ----------------------------------------------------------------


async def test_each_fire_time_becomes_one_pending_durable_run_with_key_labels_and_input(
    started: Callable[..., Any],
) -> None:
    durably, scheduler, executor, recorder = await started()
    job = add_durable_job(
        scheduler,
        report_job,
        NEVER,
        id="nightly",
        input={"team": "data"},
        labels={"team": "data"},
        misfire_grace_time=None,
    )
    t1 = whole_second(datetime.now(UTC)) - timedelta(seconds=2)
    t2 = t1 + timedelta(seconds=1)
    executor.submit_job(job, [t1, t2])
    await executor.drain()

    executed = recorder.of(EVENT_JOB_EXECUTED)
    assert [e.scheduled_run_time for e in executed] == [t1, t2]
    assert all(e.job_id == "nightly" and e.retval.disposition == "created" for e in executed)
    runs = {r.idempotency_key: r for r in await durably.get_runs(job_name="report")}
    assert set(runs) == {apscheduler_key("nightly", t1), apscheduler_key("nightly", t2)}
    run = runs[apscheduler_key("nightly", t1)]
    assert run.id == executed[0].retval.id
    assert run.status == "pending"  # stored, not run by APScheduler: a worker runs it
    assert run.input == {"team": "data", "days": 1}  # the validated form, defaults filled in
    assert run.labels == {
        "team": "data",
        "apscheduler_job": "nightly",
        "scheduled_for": t1.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert run.concurrency_key == "apscheduler:nightly"  # overlap="queue": one at a time, in order
    assert recorder.of(EVENT_JOB_ERROR) == [] and recorder.of(EVENT_JOB_MISSED) == []


async def test_a_fire_time_triggered_again_anywhere_is_the_existing_run(
    started: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "durably_sched.apscheduler")
    # Two schedulers, two executors, two Durably instances on one database: two processes in one.
    first = await started()
    second = await started()
    t = whole_second(datetime.now(UTC))
    for _, scheduler, executor, _ in (first, second, first):
        job = add_durable_job(
            scheduler,
            report_job,
            NEVER,
            id="nightly",
            input={"team": "a"},
            replace_existing=True,
            misfire_grace_time=None,
        )
        executor.submit_job(job, [t])
        await executor.drain()
    outcomes = [e.retval for r in (first[3], second[3]) for e in r.of(EVENT_JOB_EXECUTED)]
    assert sorted(run.disposition for run in outcomes) == ["created", "idempotent", "idempotent"]
    assert len({run.id for run in outcomes}) == 1
    assert len(await first[0].get_runs(job_name="report")) == 1
    # Every process logs every fire time, as the scheduler does: one line each, with the outcome.
    when = t.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [r.getMessage() for r in caplog.records if r.name == "durably_sched.apscheduler"] == [
        f"APScheduler job nightly fire time {when}: {outcome} (run {outcomes[0].id})"
        for outcome in ("triggered", "deduplicated", "deduplicated")
    ]


async def test_overlap_allow_gives_no_concurrency_key(started: Callable[..., Any]) -> None:
    durably, scheduler, executor, _ = await started()
    job = add_durable_job(
        scheduler, report_job, NEVER, id="free", input={"team": "a"}, overlap="allow", misfire_grace_time=None
    )
    executor.submit_job(job, [whole_second(datetime.now(UTC))])
    await executor.drain()
    [run] = await durably.get_runs()
    assert run.concurrency_key is None


async def test_the_run_executes_in_the_durably_worker(started: Callable[..., Any]) -> None:
    durably, scheduler, executor, recorder = await started(worker=True)
    job = add_durable_job(
        scheduler, report_job, NEVER, id="nightly", input={"team": "ops", "days": 3}, misfire_grace_time=None
    )
    executor.submit_job(job, [whole_second(datetime.now(UTC))])
    await executor.drain()
    [event] = recorder.of(EVENT_JOB_EXECUTED)
    final = await durably.wait_for_run(event.retval.id, timeout=20)
    assert final.status == "completed"
    assert final.output == {"team": "ops", "rows": 30}


async def test_fire_times_later_than_misfire_grace_make_no_run_and_are_reported_missed(
    started: Callable[..., Any],
) -> None:
    durably, scheduler, executor, recorder = await started()
    job = add_durable_job(scheduler, report_job, NEVER, id="late", input={"team": "a"}, misfire_grace_time=30)
    recent = whole_second(datetime.now(UTC))
    old = recent - timedelta(minutes=5)
    executor.submit_job(job, [old, recent])
    await executor.drain()
    assert [e.scheduled_run_time for e in recorder.of(EVENT_JOB_MISSED)] == [old]
    assert [e.scheduled_run_time for e in recorder.of(EVENT_JOB_EXECUTED)] == [recent]
    assert [r.idempotency_key for r in await durably.get_runs()] == [apscheduler_key("late", recent)]


@pytest.mark.parametrize("coalesce", [False, True])
async def test_a_backlog_follows_apschedulers_coalesce_rule(
    started: Callable[..., Any], coalesce: bool
) -> None:
    """The scheduler computes the backlog (fire times since next_run_time) and coalesces it; the
    executor makes one run per fire time it is handed, no more, no less."""
    start = whole_second(datetime.now(UTC)) - timedelta(hours=5, minutes=30)

    def setup(scheduler: AsyncIOScheduler) -> None:
        add_durable_job(
            scheduler,
            report_job,
            IntervalTrigger(hours=1, start_date=start),
            id="hourly",
            input={"team": "a"},
            next_run_time=start,  # as if the job store had kept it across a 5 h outage
            coalesce=coalesce,
            misfire_grace_time=None,
        )

    durably, _, executor, recorder = await started(setup=setup)
    await until(lambda: recorder.of(EVENT_JOB_SUBMITTED), what="the backlog submitted")
    await executor.drain()
    [submitted] = recorder.of(EVENT_JOB_SUBMITTED)
    expected = [start + timedelta(hours=h) for h in range(6)]
    assert submitted.scheduled_run_times == (expected[-1:] if coalesce else expected)
    keys = sorted(r.idempotency_key or "" for r in await durably.get_runs())
    assert keys == sorted(apscheduler_key("hourly", t) for t in submitted.scheduled_run_times)


async def test_max_instances_counts_trigger_writes_and_every_outcome_ends_one(
    started: Callable[..., Any],
) -> None:
    _, scheduler, executor, recorder = await started()
    job = add_durable_job(
        scheduler, report_job, NEVER, id="one", input={"team": "a"}, max_instances=1, misfire_grace_time=60
    )
    t = whole_second(datetime.now(UTC))
    executor.submit_job(job, [t])
    with pytest.raises(MaxInstancesReachedError):  # the first write has not happened yet
        executor.submit_job(job, [t + timedelta(seconds=1)])
    await executor.drain()
    executor.submit_job(job, [t - timedelta(hours=1)])  # missed
    await executor.drain()
    scheduler.modify_job("one", kwargs={**job.kwargs, "job": "unregistered"})
    executor.submit_job(scheduler.get_job("one"), [t])  # refused
    await executor.drain()
    executor.submit_job(scheduler.get_job("one"), [t])  # still accepted for submission
    await executor.drain()
    assert len(recorder.of(EVENT_JOB_EXECUTED)) == 1
    assert len(recorder.of(EVENT_JOB_MISSED)) == 1
    assert len(recorder.of(EVENT_JOB_ERROR)) == 2


async def test_a_store_failure_is_an_error_event_with_the_cause_and_no_run(
    started: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    durably, scheduler, executor, recorder = await started()
    job = add_durable_job(
        scheduler, report_job, NEVER, id="nightly", input={"team": "a"}, misfire_grace_time=None
    )

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("database unreachable: connection refused")

    monkeypatch.setattr(durably.store, "create_runs", unreachable)
    executor.submit_job(job, [whole_second(datetime.now(UTC))])
    await executor.drain()
    [error] = recorder.of(EVENT_JOB_ERROR)
    assert isinstance(error.exception, StoreError)
    assert "unreachable" in str(error.exception) and "unreachable" in error.traceback
    assert recorder.of(EVENT_JOB_EXECUTED) == []
    [line] = [r for r in caplog.records if r.name == "durably_sched.apscheduler"]
    assert line.levelno == logging.ERROR and "'nightly'" in line.getMessage()


# -- bad input: one clear error naming the job id and the function ---------------------------------


def _scheduler() -> BackgroundScheduler:
    return BackgroundScheduler(timezone=UTC)


def test_add_durable_job_refuses_a_function_that_is_not_a_durable_job() -> None:
    scheduler = _scheduler()
    with pytest.raises(NotADurableJobError) as caught:
        add_durable_job(scheduler, plain_function, NEVER, id="cleanup")  # type: ignore[arg-type]
    message = str(caught.value)
    assert "'cleanup'" in message
    assert "tests.unit.test_apscheduler:plain_function" in message
    assert "\n" not in message
    assert isinstance(caught.value, UnknownJobError)
    assert scheduler.get_jobs() == []


@pytest.mark.parametrize(
    ("kwargs", "error", "expected"),
    [
        (
            {"input": {"days": "x"}},
            InputValidationError,
            r"APScheduler job 'j': job 'report': invalid input: field 'team'",
        ),
        (
            {"input": {"team": "a"}, "trigger": IntervalTrigger(seconds=10)},
            ValueError,
            r"'j': its IntervalTrigger fires at .* not on a whole second",
        ),
        (
            {"input": {"team": "a"}, "trigger": DateTrigger()},
            ValueError,
            r"'j': its DateTrigger fires at .* not on a whole second",
        ),
        (
            {"input": {"team": "a"}, "trigger": CronTrigger(minute="*", jitter=30)},
            ValueError,
            r"'j': its CronTrigger has jitter=30",
        ),
        (
            {"input": {"team": "a"}, "trigger": OrTrigger([NEVER, CronTrigger(hour=1, jitter=5)])},
            ValueError,
            r"jitter=5",
        ),
        (
            {"input": {"team": "a"}, "next_run_time": datetime.now(UTC).replace(microsecond=1)},
            ValueError,
            r"'j': next_run_time fires at",
        ),
        (
            {"input": {"team": "a"}, "overlap": "skip"},
            ValueError,
            r"'j': overlap must be 'queue' or 'allow', not 'skip'",
        ),
        (
            {"input": {"team": "a"}, "labels": {"scheduled_for": "x"}},
            ValueError,
            r"'j': label 'scheduled_for' is set by the bridge",
        ),
        (
            {"input": {"team": "a"}, "second": 5},
            TypeError,
            r"'j': trigger arguments second given with a trigger instance",
        ),
        (
            {"input": {"team": "a"}, "executor": "default"},
            ValueError,
            r"'j': executor 'default' is a ThreadPoolExecutor",
        ),
        ({"input": {"team": "a"}, "id": ""}, ValueError, r"id must be a non-empty string"),
    ],
)
def test_add_durable_job_refuses_bad_input_with_one_line_and_adds_nothing(
    kwargs: dict[str, Any], error: type[Exception], expected: str
) -> None:
    scheduler = _scheduler()
    scheduler.add_executor("threadpool", "default")
    options: dict[str, Any] = {"id": "j", **kwargs}
    trigger = options.pop("trigger", NEVER)
    with pytest.raises(error, match=expected) as caught:
        add_durable_job(scheduler, report_job, trigger, **options)
    assert "\n" not in str(caught.value)
    assert scheduler.get_jobs() == []


def test_textual_triggers_and_fixed_starts_are_accepted() -> None:
    scheduler = _scheduler()
    cron = add_durable_job(scheduler, report_job, "cron", hour=2, id="a", input={"team": "a"})
    start = datetime(2026, 1, 1, tzinfo=UTC)
    interval = add_durable_job(
        scheduler, report_job, IntervalTrigger(seconds=10, start_date=start), id="b", input={"team": "a"}
    )
    assert isinstance(cron.trigger, CronTrigger) and cron.executor == "durably"
    assert interval.kwargs == {
        "job": "report",
        "input": {"team": "a", "days": 1},
        "overlap": "queue",
        "labels": {},
    }
    assert cron.name == "report"


def test_a_durable_job_survives_a_job_store_that_pickles_jobs() -> None:
    """Persistent job stores (SQLAlchemy, Redis, MongoDB) pickle ``Job.__getstate__()``; the function
    is stored as a textual reference, so the restored job is still a durable job."""
    scheduler = _scheduler()
    job = add_durable_job(scheduler, report_job, "cron", hour=2, id="nightly", input={"team": "a"})
    job._modify(
        next_run_time=datetime(2026, 1, 1, 2, tzinfo=UTC),
        misfire_grace_time=1,
        coalesce=True,
        max_instances=1,
    )  # what the scheduler fills in when it stores the job
    restored = Job.__new__(Job)
    restored.__setstate__(pickle.loads(pickle.dumps(job.__getstate__())))
    assert restored.func is durable_trigger
    assert restored.kwargs == job.kwargs
    durably = create_durably("sqlite:///unused.db").register([report_job])  # never connected
    assert DurablyExecutor(durably)._target(restored).job_name == "report"


class DefaultsIn(BaseModel):
    days: int = 7


defaults_job = define_job(name="defaults", input=DefaultsIn, run=report)


def test_input_defaults_to_the_input_models_defaults() -> None:
    job = add_durable_job(_scheduler(), defaults_job, NEVER, id="weekly")
    assert job.kwargs["input"] == {"days": 7}


def test_durable_trigger_run_by_another_executor_says_so() -> None:
    with pytest.raises(RuntimeError, match="not a DurablyExecutor"):
        durable_trigger("report", {"team": "a"})


async def test_start_refuses_a_plain_function_routed_to_the_executor(sqlite_url: str) -> None:
    async with create_durably(sqlite_url).register([report_job]) as durably:
        scheduler = AsyncIOScheduler(executors={"durably": DurablyExecutor(durably)})
        scheduler.add_job(plain_function, "cron", hour=3, id="cleanup", executor="durably")
        with pytest.raises(NotADurableJobError) as caught:
            scheduler.start()
        assert "APScheduler job 'cleanup'" in str(caught.value)
        assert "tests.unit.test_apscheduler:plain_function is not a durable job" in str(caught.value)
        assert not scheduler.running


async def test_start_refuses_a_durable_job_that_is_not_registered(sqlite_url: str) -> None:
    async with create_durably(sqlite_url).register([other_job]) as durably:
        scheduler = AsyncIOScheduler(executors={"durably": DurablyExecutor(durably)})
        add_durable_job(scheduler, report_job, NEVER, id="nightly", input={"team": "a"})
        with pytest.raises(
            NotADurableJobError,
            match=r"'nightly': durable job 'report' is not registered on this Durably \(registered: other\)",
        ):
            scheduler.start()


async def test_a_plain_function_added_after_start_is_refused_at_each_fire_time(
    started: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    durably, scheduler, executor, recorder = await started()
    job = scheduler.add_job(plain_function, NEVER, id="cleanup", executor="durably")
    executor.submit_job(job, [whole_second(datetime.now(UTC))])
    await executor.drain()
    [error] = recorder.of(EVENT_JOB_ERROR)
    assert isinstance(error.exception, NotADurableJobError)
    assert "'cleanup'" in str(error.exception) and "plain_function" in str(error.exception)
    assert await durably.get_runs() == []
    [line] = [r for r in caplog.records if r.name == "durably_sched.apscheduler"]
    assert not line.exc_info  # a user error: one line, no traceback
    assert line.getMessage().startswith("APScheduler job 'cleanup' is routed to DurablyExecutor 'durably'")


async def test_asyncio_scheduler_needs_a_started_durably(sqlite_url: str) -> None:
    durably = create_durably(sqlite_url).register([report_job])
    scheduler = AsyncIOScheduler(executors={"durably": DurablyExecutor(durably)})
    with pytest.raises(RuntimeError, match="start the Durably before the AsyncIOScheduler"):
        scheduler.start()
    await durably.init()
    try:
        scheduler = AsyncIOScheduler(executors={"durably": DurablyExecutor(durably, worker=False)})
        with pytest.raises(ValueError, match="worker= applies to thread-based schedulers"):
            scheduler.start()
    finally:
        await durably.close()


def test_other_schedulers_are_refused() -> None:
    class OtherScheduler(BaseScheduler):  # type: ignore[misc]
        def shutdown(self, wait: bool = True) -> None:
            pass

        def wakeup(self) -> None:
            pass

    durably = create_durably("sqlite:///unused.db").register([report_job])
    with pytest.raises(
        TypeError,
        match="works with AsyncIOScheduler, BackgroundScheduler and BlockingScheduler, not OtherScheduler",
    ):
        OtherScheduler(executors={"durably": DurablyExecutor(durably)}).start()


# -- thread-based schedulers: the executor owns the Durably on a loop thread -----------------------


@pytest.fixture
def background(sqlite_url: str) -> Iterator[Callable[..., Any]]:
    made: list[BackgroundScheduler] = []

    def factory(durably: Durably, **options: Any) -> tuple[BackgroundScheduler, DurablyExecutor, Recorder]:
        executor = DurablyExecutor(durably, **options)
        scheduler = BackgroundScheduler(executors={"durably": executor}, timezone=UTC)
        recorder = Recorder()
        scheduler.add_listener(recorder)
        made.append(scheduler)
        return scheduler, executor, recorder

    yield factory
    for scheduler in made:
        if scheduler.running:
            scheduler.shutdown()


def _read_runs(url: str) -> list[Any]:
    async def read() -> list[Any]:
        durably = create_durably(url)
        try:
            await durably.connect()
            return await durably.get_runs()
        finally:
            await durably.close()

    return asyncio.run(read())


def test_background_scheduler_executor_opens_runs_and_closes_the_durably(
    sqlite_url: str, background: Callable[..., Any]
) -> None:
    durably = create_durably(sqlite_url, polling_interval=0.05).register([report_job])
    completed = threading.Event()
    durably.on("run:complete", lambda event: completed.set())
    scheduler, executor, recorder = background(durably)
    job = add_durable_job(
        scheduler, report_job, NEVER, id="nightly", input={"team": "a"}, misfire_grace_time=None
    )
    scheduler.start()
    assert durably.connected  # migrated and started by the executor
    loop_threads = [t for t in threading.enumerate() if t.name == "durably-apscheduler-durably"]
    assert len(loop_threads) == 1
    t = whole_second(datetime.now(UTC))
    executor.submit_job(job, [t])  # from this thread, as BackgroundScheduler's own thread does
    [executed] = recorder.wait_for(EVENT_JOB_EXECUTED, 1)
    assert executed.retval.disposition == "created"
    assert completed.wait(20), "the executor's worker did not run the durable job"
    scheduler.shutdown(wait=True)
    assert not durably.connected
    assert not loop_threads[0].is_alive()
    [run] = _read_runs(sqlite_url)
    assert (run.idempotency_key, run.status) == (apscheduler_key("nightly", t), "completed")


def test_background_scheduler_without_worker_and_shutdown_without_wait(
    sqlite_url: str, background: Callable[..., Any]
) -> None:
    durably = create_durably(sqlite_url).register([report_job])
    scheduler, executor, recorder = background(durably, worker=False)
    job = add_durable_job(
        scheduler, report_job, NEVER, id="nightly", input={"team": "a"}, misfire_grace_time=None
    )
    scheduler.start()
    t = whole_second(datetime.now(UTC))
    executor.submit_job(job, [t, t + timedelta(seconds=1)])
    recorder.wait_for(EVENT_JOB_EXECUTED, 2)
    scheduler.shutdown(wait=False)
    assert not durably.connected
    assert sorted(r.status for r in _read_runs(sqlite_url)) == ["pending", "pending"]


async def test_background_scheduler_refuses_a_durably_started_by_the_app(
    sqlite_url: str, background: Callable[..., Any]
) -> None:
    async with create_durably(sqlite_url).register([report_job]) as durably:
        scheduler, _, _ = background(durably)
        with pytest.raises(RuntimeError, match="opens the Durably on an event loop thread of its own"):
            scheduler.start()


def test_background_scheduler_start_reports_a_bad_database_in_one_line(
    tmp_path: Path, background: Callable[..., Any]
) -> None:
    before = {t.ident for t in threading.enumerate()}
    durably = create_durably(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}").register([report_job])
    scheduler, _, _ = background(durably)
    with pytest.raises(StoreError) as caught:
        scheduler.start()
    assert "\n" not in str(caught.value)
    assert not scheduler.running
    assert {t.ident for t in threading.enumerate()} <= before  # the loop thread did not leak


# APScheduler 3's own loop may still update the job it just ran after a listener shut the
# scheduler down from another thread (JobLookupError in its thread): its race, not the bridge's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_blocking_scheduler_fires_and_a_listener_may_shut_it_down(sqlite_url: str) -> None:
    """BlockingScheduler runs in the calling thread; a listener (called on the executor's loop
    thread) that shuts the scheduler down must not wait for that very thread."""
    durably = create_durably(sqlite_url).register([report_job])
    scheduler = BlockingScheduler(executors={"durably": DurablyExecutor(durably, worker=False)}, timezone=UTC)
    add_durable_job(
        scheduler,
        report_job,
        CronTrigger(second="*", timezone=UTC),
        id="tick",
        input={"team": "a"},
        misfire_grace_time=None,
    )
    executed: list[Any] = []

    def on_executed(event: Any) -> None:
        executed.append(event)
        scheduler.shutdown()

    scheduler.add_listener(on_executed, EVENT_JOB_EXECUTED)
    runner = threading.Thread(target=scheduler.start, name="blocking-scheduler")
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "BlockingScheduler.start() did not return after shutdown"
    for thread in threading.enumerate():
        if thread.name == "durably-apscheduler-durably":
            thread.join(30)
            assert not thread.is_alive()
    assert not durably.connected
    runs = _read_runs(sqlite_url)
    assert executed
    assert {r.idempotency_key for r in runs} == {
        apscheduler_key("tick", e.scheduled_run_time) for e in executed
    }
