"""Times in the CLI, through CliRunner.

What users rely on: every time is shown in one zone (this machine's, or UTC with --utc) with its
offset, and a time typed without an offset is read in that zone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from durably_sched.cli import main
from tests.unit.test_cli import Project, error_line

# --- one time rule ----------------------------------------------------------------------------------


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This machine's time zone is America/New_York (UTC-5 in winter) for the test."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


TIMED = [
    ("runs", "list"),
    ("runs", "show"),
    ("runs", "watch"),
    ("runs", "retry"),
    ("runs", "retrigger"),
    ("trigger",),
    ("schedules", "list"),
    ("schedules", "next"),
    ("schedules", "history"),
    ("schedules", "backfill"),
    ("serve",),
]


@pytest.mark.parametrize("path", TIMED, ids=[" ".join(p) for p in TIMED])
def test_every_command_with_times_states_the_rule_and_takes_utc(path: tuple[str, ...]) -> None:
    from click.testing import CliRunner

    text = " ".join(CliRunner().invoke(main, [*path, "--help"]).stdout.split())
    assert "--utc" in text
    assert "shown in this machine's time zone with their UTC offset, or in UTC with --utc" in text
    assert "a time typed without an offset is read in that same zone" in text
    assert "--json always writes UTC" in text


def test_times_are_shown_in_the_machines_zone_with_offsets_or_in_utc(
    migrated: Project, new_york: None
) -> None:
    p = migrated
    # 2026-01-01T10:00Z, a fire time of `hourly`, is 05:00 in New York.
    p.ok("trigger", "--schedule", "hourly", "--at", "2026-01-01T10:00Z")
    (run,) = p.json("runs", "list", "--json")
    assert run["labels"]["scheduled_for"] == "2026-01-01T10:00:00Z" and run["created_at"].endswith("Z")

    listed = p.ok("runs", "list").stdout.splitlines()[1]
    assert listed.split()[5].endswith("-05:00")  # CREATED, local with its offset
    assert p.ok("--utc", "runs", "list").stdout.splitlines()[1].split()[5].endswith("+00:00")
    assert p.ok("runs", "list", "--utc").stdout.splitlines()[1].split()[5].endswith("+00:00")

    history = p.ok("schedules", "history", "hourly").stdout.splitlines()[1].split()
    assert history[:2] == ["2026-01-01", "05:00:00-05:00"] and history[-1].endswith("-05:00")
    history = p.ok("--utc", "schedules", "history", "hourly").stdout.splitlines()[1].split()
    assert history[:2] == ["2026-01-01", "10:00:00+00:00"] and history[-1].endswith("+00:00")
    last = p.ok("schedules", "list").stdout
    assert "triggered 2026-01-01 05:00:00-05:00" in last  # LAST OUTCOME in the same zone as NEXT
    assert "triggered 2026-01-01 10:00:00+00:00" in p.ok("--utc", "schedules", "list").stdout

    shown = p.ok("runs", "show", run["id"][:8]).stdout
    created = next(line for line in shown.splitlines() if line.startswith("created"))
    assert created.rstrip().endswith("-05:00")


def test_times_typed_without_an_offset_are_read_in_the_display_zone(
    migrated: Project, new_york: None
) -> None:
    p = migrated
    local = p.json("trigger", "--schedule", "hourly", "--at", "2026-01-01T05:00", "--json")
    assert local["idempotency_key"] == "schedule:hourly:2026-01-01T10:00:00Z"
    utc = p.json("--utc", "trigger", "--schedule", "hourly", "--at", "2026-01-01T05:00", "--json")
    assert utc["idempotency_key"] == "schedule:hourly:2026-01-01T05:00:00Z"

    after = p.json("schedules", "next", "hourly", "--after", "2026-01-01T05:00", "--count", "1", "--json")
    assert after[0]["fire_time"] == "2026-01-01T11:00:00.000Z"
    plan_args = ("schedules", "backfill", "hourly", "--from", "2026-01-01", "--to", "2026-01-01T01:00")
    plan = p.json(*plan_args, "--dry-run", "--json")
    assert [x["fire_time"] for x in plan] == ["2026-01-01T05:00:00.000Z", "2026-01-01T06:00:00.000Z"]
    plan = p.json(*plan_args, "--dry-run", "--json", "--utc")
    assert [x["fire_time"] for x in plan] == ["2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00.000Z"]

    # An error names the time as the user meant it, in the display zone.
    result = p.run("trigger", "--schedule", "hourly", "--at", "2026-01-01T05:30")
    assert result.exit_code == 2
    assert "--at 2026-01-01 05:30:00-05:00 is not a fire time" in error_line(result)
    assert "before: 2026-01-01 05:00:00-05:00, after: 2026-01-01 06:00:00-05:00" in error_line(result)
