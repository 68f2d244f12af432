"""`durably-sched schedules pause|resume` and the state column of `schedules list`, through CliRunner.

What operators rely on: a pause says who, when and why, and a second pause or a resume of a running
schedule is a harmless no-op (exit 0) that says so; a typo in the name is one error line (exit 2)
that changes nothing; `resume` tells how many paused fire times it leaves alone and `--catchup`
runs them by the schedule's policy; `schedules list` shows every schedule's state.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from durably_sched import create_durably
from tests.unit import test_cli
from tests.unit.test_cli import Project, error_line

# The CLI suite's fixtures: a project directory with jobs and a schedules file, and its database.
project = test_cli.project
migrated = test_cli.migrated

PER_SECOND = """\
timezone: UTC
schedules:
  hourly:
    cron: "0 * * * *"
    job: plain
  fast:
    cron: "* * * * * *"
    job: plain
    catchup: all
    catchup_window: 1h
"""


def states(p: Project) -> dict[str, dict[str, object]]:
    return {item["name"]: item for item in p.json("schedules", "list", "--json")}


def test_pause_says_who_and_why_and_a_second_pause_changes_nothing(migrated: Project) -> None:
    first = migrated.ok(
        "schedules", "pause", "hourly", "--reason", "warehouse migration", "--by", "alice@ops"
    )
    assert first.stdout.startswith("schedule 'hourly' paused ")
    assert "by alice@ops: warehouse migration" in first.stdout
    assert "every scheduler records its fire times as paused from its next tick" in first.stdout
    again = migrated.ok("schedules", "pause", "hourly", "--reason", "other")
    assert again.stdout.startswith("schedule 'hourly' is already paused ")
    assert "by alice@ops: warehouse migration; nothing changed" in again.stdout
    item = states(migrated)["hourly"]
    assert item["paused"] is True and item["paused_by"] == "alice@ops"
    assert item["pause_reason"] == "warehouse migration" and item["auto_paused"] is False
    assert str(item["paused_at"]).endswith("Z")
    assert states(migrated)["images"]["paused"] is False


def test_schedules_list_shows_the_state_column_and_who_paused(migrated: Project) -> None:
    migrated.ok("schedules", "pause", "images", "--reason", "bad thumbnails", "--by", "bob")
    lines = migrated.ok("schedules", "list").stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "JOB", "STATE"]
    column = lines[0].index("STATE")

    def state(line: str) -> str:
        return line[column:].split()[0]

    hourly = next(line for line in lines if line.startswith("hourly"))
    images_at = next(i for i, line in enumerate(lines) if line.startswith("images"))
    assert state(hourly) == "active" and state(lines[images_at]) == "paused"
    assert lines[images_at + 1].strip().endswith(": Every 5 minutes")
    assert (
        lines[images_at + 2].strip().startswith("paused ")
        and "by bob: bad thumbnails" in lines[images_at + 2]
    )


def test_a_paused_schedule_removed_from_the_file_is_noted_and_can_be_resumed(migrated: Project) -> None:
    migrated.ok("schedules", "pause", "images")
    migrated.write("schedules.yaml", 'schedules:\n  hourly:\n    cron: "0 * * * *"\n    job: plain\n')
    listed = migrated.ok("schedules", "list")
    assert (
        "note: schedule 'images' is paused in the database but not defined in schedules.yaml" in listed.stderr
    )
    # Pausing it again is refused (it is not defined), resuming it clears the state.
    assert "unknown schedule 'images'" in error_line(migrated.run("schedules", "pause", "images"))
    assert migrated.ok("schedules", "resume", "images").stdout.startswith("schedule 'images' resumed by ")
    assert "note:" not in migrated.ok("schedules", "list").stderr


def test_unknown_names_and_bad_reasons_are_one_line_and_write_nothing(migrated: Project) -> None:
    for args, fragment in [
        (
            ("schedules", "pause", "hourlyy"),
            "unknown schedule 'hourlyy' in schedules.yaml (defined: hourly, images)",
        ),
        (("schedules", "resume", "hourlyy"), "unknown schedule 'hourlyy': not defined in schedules.yaml"),
        (("schedules", "pause", "hourly", "--reason", "a\x1bb"), "the pause reason must not contain control"),
        (("schedules", "pause", "hourly", "--by", "x" * 201), "'by' is 201 characters long; at most 200"),
    ]:
        result = migrated.run(*args)
        assert result.exit_code == 2
        assert fragment in error_line(result)
    assert all(item["paused_at"] is None for item in states(migrated).values())


def test_resume_of_a_running_schedule_is_a_no_op_that_says_so(migrated: Project) -> None:
    result = migrated.ok("schedules", "resume", "hourly")
    assert result.stdout == "schedule 'hourly' is not paused; nothing to resume\n"
    migrated.ok("schedules", "pause", "hourly")
    resumed = migrated.json("schedules", "resume", "hourly", "--by", "carol", "--json")
    assert resumed["changed"] is True and resumed["paused"] is False and resumed["resumed_by"] == "carol"
    assert resumed["caught_up"] == []
    assert migrated.json("schedules", "resume", "hourly", "--json")["changed"] is False


def test_an_emergency_pause_works_while_the_schedules_file_is_broken(migrated: Project) -> None:
    async def seen_by_a_scheduler() -> None:
        async with create_durably(f"sqlite:///{migrated.db}") as d:
            await d.store.advance_cursor("hourly", datetime.now(UTC))

    asyncio.run(seen_by_a_scheduler())
    migrated.write("schedules.yaml", "schedules:\n  hourly: [broken\n")
    result = migrated.ok("schedules", "pause", "hourly", "--reason", "incident")
    assert result.stdout.startswith("schedule 'hourly' paused ")
    assert "warning: schedules.yaml:" in result.stderr and "which the database knows" in result.stderr
    unknown = migrated.run("schedules", "pause", "images")  # never seen by a scheduler
    assert unknown.exit_code == 2
    assert "the database has no schedule of that name" in error_line(unknown)


def test_resume_catchup_runs_the_paused_fire_times_by_the_policy(migrated: Project) -> None:
    migrated.write("schedules.yaml", PER_SECOND)
    paused = migrated.json("schedules", "pause", "fast", "--json")
    since = datetime.fromisoformat(str(paused["paused_at"]).replace("Z", "+00:00"))
    deadline = time.monotonic() + 10
    while datetime.now(UTC) < since + timedelta(seconds=2.2):  # two fire times in the pause
        assert time.monotonic() < deadline
        time.sleep(0.05)
    plain = migrated.ok("schedules", "resume", "fast")
    assert plain.stdout.startswith("schedule 'fast' resumed by ")
    migrated.ok("schedules", "pause", "fast")  # a second pause, caught up this time
    since = datetime.fromisoformat(str(states(migrated)["fast"]["paused_at"]).replace("Z", "+00:00"))
    while datetime.now(UTC) < since + timedelta(seconds=2.2):
        assert time.monotonic() < deadline + 10
        time.sleep(0.05)
    result = migrated.ok("schedules", "resume", "fast", "--catchup")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("schedule 'fast' resumed by ")
    assert lines[1].split() == ["FIRE", "TIME", "OUTCOME", "RUN"]
    triggered = [line for line in lines[2:-1] if " triggered " in line]
    assert len(triggered) >= 2 and len(triggered) == len(lines) - 3
    assert lines[-1] == f"catch-up (catchup: all, catchup_window: 1h): {len(triggered)} triggered"
    # Each caught-up fire time is a run with the scheduler's key, inside the second pause only.
    runs = migrated.json("runs", "list", "--json")
    keys = sorted(r["idempotency_key"] for r in runs)
    assert len(keys) == len(triggered) and all(k.startswith("schedule:fast:") for k in keys)
    first_key_time = datetime.strptime(keys[0].split(":", 2)[2], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert first_key_time >= since.replace(microsecond=0)
    # Again: the last pause is caught up once only.
    again = migrated.ok("schedules", "resume", "fast", "--catchup")
    assert again.stdout.startswith("schedule 'fast' is not paused; catching up its last pause")
    assert again.stdout.splitlines()[-1].endswith(f"{len(triggered)} deduplicated")
    assert len(migrated.json("runs", "list", "--json")) == len(triggered)
