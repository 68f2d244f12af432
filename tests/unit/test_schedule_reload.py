"""Reloading schedules.yaml in a running process (durably_sched.schedule.reloading).

What operators rely on: a reload that fails in any way -- an invalid file, MemoryError,
RecursionError, any exception, an error while the scheduler applies it, a database that cannot
record the failure -- keeps the last good schedules running and the process healthy; only
cancellation passes. The failure (file, line, message, since when) is recorded for every process to
read and is this process's `durably_schedules_reload_failed` gauge; the next good file clears both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from durably_sched import Durably, Step, create_durably, define_job
from durably_sched.errors import StoreError
from durably_sched.ops.metrics import Metrics
from durably_sched.schedule import reloading
from durably_sched.schedule.config import parse_schedules
from durably_sched.schedule.reloading import SchedulesReloader, current_config_errors
from durably_sched.schedule.scheduler import Scheduler
from tests.helpers import until
from tests.unit.test_config_problems import alias_bomb
from tests.unit.test_ops import samples, value


async def report(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True}


REPORT = define_job(name="report", run=report)
GOOD = 'schedules:\n  nightly:\n    cron: "0 2 * * *"\n    job: report\n'
OTHER = 'schedules:\n  hourly:\n    cron: "0 * * * *"\n    job: report\n'
BROKEN = 'schedules:\n  nightly:\n    cron: "0 2 * * *"\n    job: report\n    colour: blue\n'


@pytest.fixture
async def durably(tmp_path: Path) -> AsyncIterator[Durably]:
    d = create_durably(f"sqlite:///{tmp_path / 'reload.db'}", polling_interval=0.05).register([REPORT])
    await d.migrate()
    await d.start(worker=False)
    yield d
    await d.close()


class Setup:
    def __init__(self, durably: Durably, path: Path) -> None:
        self.path = path
        path.write_text(GOOD)
        self.scheduler = Scheduler(durably, parse_schedules(GOOD, str(path), {"report": None}))
        self.loaded: list[str] = []
        self.reloader = SchedulesReloader(
            durably,
            self.scheduler,
            str(path),
            {"report": None},
            on_loaded=lambda config: self.loaded.append(",".join(config.schedules)),
        )
        self.durably = durably

    def names(self) -> list[str]:
        return list(self.scheduler.config.schedules)


@pytest.fixture
async def setup(durably: Durably, tmp_path: Path) -> Setup:
    made = Setup(durably, tmp_path / "schedules.yaml")
    await made.scheduler.load()
    return made


async def test_an_invalid_file_keeps_the_last_good_schedules_and_is_recorded(setup: Setup) -> None:
    metrics = Metrics(setup.durably, setup.scheduler)
    assert value(samples(metrics), "durably_schedules_reload_failed") == 0
    setup.path.write_text(BROKEN)
    assert await setup.reloader.reload() is False
    assert setup.names() == ["nightly"] and setup.loaded == []
    [row] = await current_config_errors(setup.durably)
    assert row.path == str(setup.path) and row.line == 5
    assert row.message.startswith("schedule 'nightly': colour: unknown key")
    assert row.reporter == setup.durably.worker.worker_id
    shown = setup.scheduler.config_error
    assert shown is not None and (shown.path, shown.line, shown.message) == (row.path, row.line, row.message)
    assert value(samples(metrics), "durably_schedules_reload_failed") == 1

    setup.path.write_text(alias_bomb().replace("job: cleanup", "job: report"))
    assert await setup.reloader.reload() is False
    [again] = await current_config_errors(setup.durably)
    assert again.since == row.since  # the same streak of failures
    assert again.line == 10 and "aliases expand" in again.message

    setup.path.write_text(OTHER)
    assert await setup.reloader.reload() is True
    assert setup.names() == ["hourly"] and setup.loaded == ["hourly"]
    assert await current_config_errors(setup.durably) == []
    assert setup.scheduler.config_error is None
    assert value(samples(metrics), "durably_schedules_reload_failed") == 0
    metrics.close()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (MemoryError(), "out of memory while loading the file"),
        (RecursionError("maximum recursion depth exceeded"), "nested too deeply to load"),
        (
            RuntimeError("surprise\non two lines"),
            "could not apply the schedules: RuntimeError: surprise on two lines",
        ),
        (KeyboardInterrupt(), "could not apply the schedules: KeyboardInterrupt"),
    ],
)
async def test_any_failure_while_loading_keeps_the_last_good_schedules(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, error: BaseException, message: str
) -> None:
    def explode(*args: Any) -> Any:
        raise error

    monkeypatch.setattr(reloading, "load_schedules", explode)
    setup.path.write_text(OTHER)
    assert await setup.reloader.reload() is False
    assert setup.names() == ["nightly"]
    [row] = await current_config_errors(setup.durably)
    assert row.message == message and row.line is None


async def test_cancellation_passes_the_reload_boundary(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    def cancelled(*args: Any) -> Any:
        raise asyncio.CancelledError

    monkeypatch.setattr(reloading, "load_schedules", cancelled)
    with pytest.raises(asyncio.CancelledError):
        await setup.reloader.reload()
    assert await current_config_errors(setup.durably) == []


async def test_a_failed_apply_keeps_the_previous_schedules_in_force(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down() -> Any:
        raise StoreError("database is locked")

    monkeypatch.setattr(setup.durably.store, "get_cursors", down)
    setup.path.write_text(OTHER)
    assert await setup.reloader.reload() is False
    assert setup.names() == ["nightly"]  # the scheduler's reload is all or nothing
    config = setup.durably.schedules_config
    assert config is not None and list(config.schedules) == ["nightly"]
    monkeypatch.undo()
    [row] = await current_config_errors(setup.durably)
    assert row.message == "could not apply the schedules: StoreError: database is locked"
    assert await setup.reloader.reload() is True  # the file was fine: applied once the cause went
    assert setup.names() == ["hourly"]


async def test_a_database_that_cannot_record_the_failure_does_not_break_the_reload(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def down(*args: Any) -> None:
        raise StoreError("database is down")

    monkeypatch.setattr(setup.durably.store, "report_config_error", down)
    setup.path.write_text(BROKEN)
    assert await setup.reloader.reload() is False
    assert setup.names() == ["nightly"] and setup.scheduler.config_error is not None
    assert "could not record the schedules file's state in the database: database is down" in caplog.text


async def test_the_watch_loop_reloads_a_changed_file_and_close_removes_the_row(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reloading, "RELOAD_INTERVAL", 0.01)
    task = asyncio.create_task(setup.reloader.run(reloading.file_state(str(setup.path))))
    try:
        setup.path.write_text(BROKEN)
        await until(lambda: current_config_errors(setup.durably), what="the failed reload to be recorded")
        assert setup.names() == ["nightly"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await setup.reloader.close()
    assert await current_config_errors(setup.durably) == []


async def test_a_bug_logs_its_traceback_and_a_bad_file_one_line(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    setup.path.write_text(BROKEN)
    assert await setup.reloader.reload() is False
    [line] = [r for r in caplog.records if "schedules not reloaded" in r.getMessage()]
    assert not line.exc_info
    assert f"{setup.path}:5: schedule 'nightly': colour: unknown key" in line.getMessage()

    def bug(*args: Any) -> Any:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(reloading, "load_schedules", bug)
    assert await setup.reloader.reload() is False
    [_, traced] = [r for r in caplog.records if "schedules not reloaded" in r.getMessage()]
    assert traced.exc_info is not None and traced.exc_info[0] is ZeroDivisionError
