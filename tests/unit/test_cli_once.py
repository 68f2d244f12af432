"""`trigger --coalesce`, `serve --once` and `work --until-idle` through click's CliRunner.

What users rely on: a coalesced trigger says which pending run it joined; `serve --once` fires
the due fire times and executes them in the same invocation; the roles can be switched off one at
a time; `work --until-idle --job J` leaves other jobs' runs alone; `DURABLY_HTTP`, set for the
long-running serve of an image, does not stop `serve --once` (an explicit `--http` does, in one
line). Real processes, signals and concurrency are in tests/system/test_once.py.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from durably_sched import create_durably
from tests.unit import test_cli
from tests.unit.test_cli import Project, error_line

# The CLI suite's fixtures: a project directory with jobs and a migrated database.
project = test_cli.project
migrated = test_cli.migrated
_logging_restored = test_cli._logging_restored

SCHEDULES = """\
timezone: UTC
schedules:
  often:
    cron: "* * * * * *"
    job: plain
    catchup: all
    catchup_window: 1h
    overlap: allow
"""


def _runs(project: Project) -> list[dict[str, object]]:
    return json.loads(project.ok("runs", "list", "--json").stdout)  # type: ignore[no-any-return]


def test_trigger_coalesce_says_which_pending_run_it_joined(migrated: Project) -> None:
    first = migrated.ok("trigger", "plain", "--concurrency-key", "k", "--coalesce", "skip")
    run_id = first.stdout.split()[1]
    again = migrated.ok("trigger", "plain", "--concurrency-key", "k", "--coalesce", "skip")
    assert again.stdout.strip() == (
        f"run {run_id} is already pending for concurrency key 'k' (plain); this trigger joined it (coalesced)"
    )
    as_json = json.loads(
        migrated.ok("trigger", "plain", "--concurrency-key", "k", "--coalesce", "skip", "--json").stdout
    )
    assert (as_json["id"], as_json["disposition"]) == (run_id, "coalesced")
    queued = json.loads(migrated.ok("trigger", "plain", "--concurrency-key", "k", "--json").stdout)
    assert queued["disposition"] == "created" and queued["id"] != run_id  # without --coalesce: queued
    assert "--coalesce" in error_line(migrated.run("trigger", "--schedule", "often", "--coalesce", "skip"))


def _cursor_back(project: Project, seconds: int) -> datetime:
    """Place the schedule's cursor in the past, as a previous invocation would have left it."""
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds)

    async def move() -> None:
        durably = create_durably(f"sqlite:///{project.db}")
        try:
            await durably.migrate()
            await durably.store.advance_cursor("often", since)
        finally:
            await durably.close()

    asyncio.run(move())
    return since


def test_serve_once_fires_what_is_due_and_executes_it(migrated: Project) -> None:
    migrated.write("schedules.yaml", SCHEDULES)
    _cursor_back(migrated, 5)
    result = migrated.run("serve", "--once", "--log-level", "info")
    assert result.exit_code == 0, result.stderr
    runs = _runs(migrated)
    assert len(runs) >= 5 and all(r["status"] == "completed" for r in runs)
    assert f"runs executed here: {len(runs)} ({len(runs)} completed); stopped: idle" in result.stderr
    assert f"{len(runs)} triggered" in result.stderr


def test_serve_once_with_one_role_off(migrated: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    migrated.write("schedules.yaml", SCHEDULES)
    _cursor_back(migrated, 3)
    monkeypatch.setenv("DURABLY_HTTP", "0.0.0.0:8080")  # as the image sets it: ignored by --once
    fired = migrated.run("serve", "--once", "--no-worker")
    assert fired.exit_code == 0, fired.stderr
    pending = _runs(migrated)
    assert pending and {r["status"] for r in pending} == {"pending"}
    assert "runs executed here" in fired.stderr and "left for other" not in fired.stderr
    worked = migrated.run("serve", "--once", "--no-scheduler", "--max-runs", "2")
    assert worked.exit_code == 0, worked.stderr
    assert "runs executed here: 2 (2 completed); stopped: max-runs" in worked.stderr
    assert sum(r["status"] == "completed" for r in _runs(migrated)) == 2
    explicit = migrated.run("serve", "--once", "--http", "127.0.0.1:0")
    assert "--http does not apply with --once" in error_line(explicit)
    assert explicit.exit_code == 2


def test_work_until_idle_runs_only_the_jobs_named(migrated: Project) -> None:
    migrated.ok("trigger", "plain")
    migrated.ok("trigger", "echo-image", "--input", '{"filename": "x"}')
    result = migrated.run("work", "--until-idle", "--job", "plain")
    assert result.exit_code == 0, result.stderr
    assert "runs executed here: 1 (1 completed)" in result.stderr
    assert "1 pending of jobs this process does not run: echo-image (1)" in result.stderr
    statuses = {r["job_name"]: r["status"] for r in _runs(migrated)}
    assert statuses == {"plain": "completed", "echo-image": "pending"}
    failing = migrated.ok("trigger", "boom").stdout.split()[1]
    result = migrated.run("work", "--until-idle")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: 1 of 2 runs executed here failed: {failing} (boom, step 'explode'): ValueError: kaboom"
    )
