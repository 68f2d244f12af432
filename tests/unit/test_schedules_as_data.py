"""Schedules as data through ``durably.schedules``, with a scheduler on an injected clock, on both
backends: a schedule created, updated, deleted or rolled back at run time takes effect at the
scheduler's next look (no restart, no file change); a new cron fires from the change on, without
catching up the old expression; a deleted schedule fires nothing more and a re-created name cannot
double a fire time; the same validation as the YAML, naming the field; the YAML's schedules are
synced as versions and cannot be redefined through the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from durably_sched import Durably, Step, create_durably, define_job
from durably_sched.errors import ConfigError, InvalidArgumentError, ScheduleNotFoundError
from durably_sched.schedule.config import parse_schedules
from durably_sched.schedule.scheduler import Scheduler
from durably_sched.store.schedule_defs import ScheduleConflictError
from tests.backends import Backend
from tests.helpers import FakeClock, until


class Size(BaseModel):
    n: int


async def report(step: Step, payload: Size) -> int:
    return payload.n


REPORT = define_job(name="report", run=report, input=Size)
T0 = datetime(2026, 1, 5, 10, 0, 30, tzinfo=UTC)
FILE = """
schedules:
  from-file:
    cron: "*/5 * * * *"
    job: report
    input: {n: 1}
"""


@pytest.fixture
async def durably(backend: Backend) -> AsyncIterator[Durably]:
    d = create_durably(backend.url, polling_interval=0.05).register([REPORT])
    await d.migrate()
    await d.start(worker=False)
    yield d
    await d.close()


@pytest.fixture
def clock(durably: Durably) -> FakeClock:
    fake = FakeClock(T0)
    durably.schedule_clock = fake
    return fake


async def fired(durably: Durably, name: str) -> list[str]:
    runs = await durably.get_runs(schedule=name, limit=1000)
    return sorted(r.idempotency_key or "" for r in runs)


async def scheduler(durably: Durably, clock: FakeClock, text: str = FILE) -> Scheduler:
    s = Scheduler(
        durably, parse_schedules(text, path="schedules.yaml", job_inputs={"report": Size}), clock=clock
    )
    await s.load()
    return s


async def test_create_update_delete_take_effect_at_once(durably: Durably, clock: FakeClock) -> None:
    s = await scheduler(durably, clock)
    made = await durably.schedules.create(
        "per-customer", cron="* * * * *", job="report", input={"n": 2}, labels={"customer": "acme"},
        note="onboarding", by="alice",
    )  # fmt: skip
    assert (made.source, made.version, made.definition["input"]) == ("api", 1, {"n": 2})
    assert await s.apply_changes() is True  # the scheduler's next look
    clock.advance(minutes=1)
    await s.tick()
    assert await fired(durably, "per-customer") == ["schedule:per-customer:2026-01-05T10:01:00Z"]
    # A new cron fires from the change on: 10:02 (every minute) is not caught up after the change.
    clock.advance(seconds=50)  # 10:02:20
    await durably.schedules.update("per-customer", cron="*/10 * * * *", note="less often")
    await s.apply_changes()
    clock.advance(minutes=5)  # 10:07:20: the old cron's 10:03..10:07 are not fired
    await s.tick()
    assert len(await fired(durably, "per-customer")) == 1
    clock.advance(minutes=4)  # 10:11:20
    await s.tick()
    assert (await fired(durably, "per-customer"))[-1] == "schedule:per-customer:2026-01-05T10:10:00Z"
    # Rollback to version 1: every minute again.
    await durably.schedules.rollback("per-customer", to=1, by="bob")
    await s.apply_changes()
    clock.advance(minutes=1)
    await s.tick()
    assert (await fired(durably, "per-customer"))[-1] == "schedule:per-customer:2026-01-05T10:12:00Z"
    versions = await durably.schedules.versions("per-customer")
    assert [(v.version, v.op, v.changed) for v in versions] == [
        (1, "create", ("catchup", "catchup_window", "cron", "enabled", "input", "jitter", "job",
                       "labels", "overlap", "timezone")),
        (2, "update", ("cron",)),
        (3, "rollback", ("cron",)),
    ]  # fmt: skip
    assert versions[2].note == "rollback to version 1" and versions[2].by == "bob"
    # Deleted: it fires nothing more.
    await durably.schedules.delete("per-customer", note="customer left")
    await s.apply_changes()
    clock.advance(minutes=3)
    await s.tick()
    assert (await fired(durably, "per-customer"))[-1] == "schedule:per-customer:2026-01-05T10:12:00Z"
    assert await durably.schedules.get("per-customer") is None


async def test_recreating_a_name_cannot_double_a_fire_time(durably: Durably, clock: FakeClock) -> None:
    s = await scheduler(durably, clock)
    await durably.schedules.create("again", cron="* * * * *", job="report", input={"n": 1})
    await s.apply_changes()
    clock.advance(minutes=1)
    await s.tick()  # 10:01 fired
    await durably.schedules.delete("again")
    await durably.schedules.create("again", cron="* * * * *", job="report", input={"n": 1})
    await s.apply_changes()
    clock.advance(seconds=5)
    await s.tick()
    assert await fired(durably, "again") == ["schedule:again:2026-01-05T10:01:00Z"]
    assert [v.version for v in await durably.schedules.versions("again")] == [1, 2, 3]


async def test_the_yaml_validation_names_the_field(durably: Durably) -> None:
    with pytest.raises(InvalidArgumentError, match=r"cron: "):
        await durably.schedules.create("bad", cron="61 * * * *", job="report", input={"n": 1})
    with pytest.raises(InvalidArgumentError, match=r"input.n: "):
        await durably.schedules.create("bad", cron="* * * * *", job="report", input={"n": "many"})
    with pytest.raises(InvalidArgumentError, match=r"job: unknown job 'nope'"):
        await durably.schedules.create("bad", cron="* * * * *", job="nope")
    with pytest.raises(InvalidArgumentError, match=r"catchup_window: "):
        await durably.schedules.create(
            "bad", cron="* * * * *", job="report", input={"n": 1}, catchup_window="soon"
        )
    with pytest.raises(InvalidArgumentError, match=r"name: "):
        await durably.schedules.create("bad name", cron="* * * * *", job="report", input={"n": 1})
    with pytest.raises(InvalidArgumentError, match=r"retry\.max_backoff: "):
        await durably.schedules.create(
            "bad",
            cron="* * * * *",
            job="report",
            input={"n": 1},
            retry={"backoff": "1h", "max_backoff": "1m"},
        )
    made = await durably.schedules.create(
        "good",
        cron="0 2 * * *",
        job="report",
        input={"n": 1},
        timeout=3600,
        jitter="5m",
        timezone="Europe/Berlin",
    )
    assert (made.definition["timeout"], made.definition["jitter"], made.definition["timezone"]) == (
        "1h", "5m", "Europe/Berlin",
    )  # fmt: skip
    with pytest.raises(InvalidArgumentError, match=r"colour: unknown field"):
        await durably.schedules.update("good", colour="red")
    with pytest.raises(InvalidArgumentError, match=r"to: .*no version 9"):
        await durably.schedules.rollback("good", to=9)
    with pytest.raises(ScheduleNotFoundError):
        await durably.schedules.update("ghost", cron="* * * * *")
    with pytest.raises(InvalidArgumentError, match="limit"):
        await durably.schedules.list(limit=0)
    with pytest.raises(InvalidArgumentError, match="cursor"):
        await durably.schedules.list(cursor="!!")


async def test_yaml_schedules_are_synced_and_cannot_be_redefined_through_the_api(
    durably: Durably, clock: FakeClock
) -> None:
    s = await scheduler(durably, clock)
    [v1] = await durably.schedules.versions("from-file")
    assert (v1.version, v1.op, v1.source, v1.by) == (1, "sync", "yaml", s.sync_by())
    with pytest.raises(ScheduleConflictError, match=r"schedules.yaml:3"):
        await durably.schedules.update("from-file", cron="* * * * *")
    with pytest.raises(ScheduleConflictError):
        await durably.schedules.delete("from-file")
    # Operating it stays allowed, and a pause is a version with its reason as the note.
    await durably.pause_schedule("from-file", reason="maintenance", by="ops")
    await durably.resume_schedule("from-file", by="ops")
    ops = [(v.op, v.note) for v in await durably.schedules.versions("from-file")]
    assert ops == [("sync", None), ("pause", "maintenance"), ("resume", None)]
    # A reload whose file brings an API schedule's name is refused like an error of the file.
    await durably.schedules.create("taken", cron="* * * * *", job="report", input={"n": 1})
    clash = FILE + "  taken:\n    cron: '0 * * * *'\n    job: report\n    input: {n: 1}\n"
    with pytest.raises(ConfigError, match=r"schedules.yaml:7: schedule 'taken': .*API schedule"):
        await s.reload(parse_schedules(clash, path="schedules.yaml", job_inputs={"report": Size}))
    taken = await durably.schedules.get("taken")
    assert taken is not None and taken.source == "api" and taken.definition["cron"] == "* * * * *"
    # A changed file is a new version by the scheduler that synced it; a removed entry is deleted.
    changed = FILE.replace("*/5", "*/15")
    await s.reload(parse_schedules(changed, path="schedules.yaml", job_inputs={"report": Size}))
    versions = await durably.schedules.versions("from-file")
    assert (versions[-1].op, versions[-1].changed, versions[-1].by) == ("sync", ("cron",), s.sync_by())
    await s.reload(parse_schedules("schedules: {}\n", path="schedules.yaml", job_inputs={"report": Size}))
    assert await durably.schedules.get("from-file") is None
    page = await durably.schedules.list()
    assert [d.name for d in page.items] == ["taken"]


async def test_lists_filter_and_page(durably: Durably) -> None:
    for i in range(5):
        await durably.schedules.create(f"c-{i}", cron="* * * * *", job="report", input={"n": i},
                                       labels={"tier": "gold" if i % 2 else "free"})  # fmt: skip
    first = await durably.schedules.list(limit=2)
    second = await durably.schedules.list(limit=2, cursor=first.next_cursor)
    assert [d.name for d in first.items + second.items] == ["c-0", "c-1", "c-2", "c-3"]
    gold = await durably.schedules.list(labels={"tier": "gold"})
    assert [d.name for d in gold.items] == ["c-1", "c-3"] and gold.next_cursor is None
    assert [d.name for d in (await durably.schedules.list(q="-4")).items] == ["c-4"]


def test_keyword_names_match_the_issue() -> None:
    import inspect

    from durably_sched.durably.schedule_manager import ScheduleManager

    create = inspect.signature(ScheduleManager.create).parameters
    assert list(create)[1:] == [
        "name", "cron", "job", "input", "timezone", "labels", "catchup", "catchup_window", "overlap",
        "jitter", "retry", "timeout", "enabled", "pause_after_failures", "note", "by",
    ]  # fmt: skip
    listing = inspect.signature(ScheduleManager.list).parameters
    assert list(listing)[1:] == ["job", "labels", "source", "q", "paused", "limit", "cursor"]


async def test_each_run_records_the_version_that_fired_it(durably: Durably, clock: FakeClock) -> None:
    s = await scheduler(durably, clock)
    await durably.schedules.create("v", cron="* * * * *", job="report", input={"n": 1})
    await s.apply_changes()
    clock.advance(minutes=1)
    await s.tick()
    await durably.schedules.update("v", input={"n": 2})
    await s.apply_changes()
    clock.advance(minutes=1)
    await s.tick()
    runs = sorted(await durably.get_runs(schedule="v", limit=10), key=lambda r: r.created_at)
    assert [(r.schedule_version, r.input) for r in runs] == [(1, {"n": 1}), (2, {"n": 2})]
    # A YAML schedule's runs record its synced version.
    clock.advance(minutes=4)
    await s.tick()
    [from_file] = await durably.get_runs(schedule="from-file", limit=10)
    assert from_file.schedule_version == 1


async def test_a_running_scheduler_applies_a_change_within_a_second(durably: Durably) -> None:
    """The service loop, on the system clock: SQLite polls the newest change, PostgreSQL is also
    woken by its NOTIFY; either way a created schedule fires within about a second of the create
    (it fires every second) and a delete stops it."""
    s = Scheduler(durably, parse_schedules(FILE, path="schedules.yaml", job_inputs={"report": Size}))
    s.start()
    try:
        await until(lambda: s._loaded, 10, "the scheduler loaded")
        created = datetime.now(UTC)
        await durably.schedules.create("every-second", cron="* * * * * *", job="report", input={"n": 1})

        async def fired() -> bool:
            return bool(await durably.get_runs(schedule="every-second", limit=1))

        await until(fired, 5, "the created schedule fired")
        [first] = await durably.get_runs(schedule="every-second", limit=1_000)
        assert first.created_at - created < timedelta(seconds=2.5)
        await durably.schedules.delete("every-second")
        deleted = datetime.now(UTC)
        await asyncio.sleep(2.5)
        late = [
            r
            for r in await durably.get_runs(schedule="every-second", limit=1_000)
            if r.created_at > deleted + timedelta(seconds=1.2)
        ]
        assert late == []
    finally:
        await s.stop()
