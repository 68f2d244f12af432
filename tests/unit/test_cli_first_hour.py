"""What a new user hit in their first hour (issue 15), through the CLI as they would type it.

What users rely on: the 8-character ids that tables and logs show work wherever a run id is taken;
every time is shown in one zone (this machine's, or UTC with --utc) with its offset, and a time
typed without an offset is read in that zone; `runs retry|retrigger --wait` behave as
`trigger --wait`; a dry-run backfill says which fire times would run and which are already
recorded; a sync job function is refused when the jobs are loaded, not at its first run.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest

from durably_sched.cli import main
from durably_sched.store.base import NewRun
from durably_sched.store.sqlite import SqliteStore
from tests.unit.test_cli import Project, error_line

# --- short run ids ----------------------------------------------------------------------------------


def _insert_runs(p: Project, *ids: str, job: str = "plain") -> None:
    """Runs with chosen ids (uuid4 ids sharing a 6-character prefix would need ~5,000 runs)."""

    async def insert() -> None:
        store = SqliteStore(f"sqlite:///{p.db}")
        await store.connect()
        try:
            await store.create_runs([NewRun(id=run_id, job_name=job, input={}) for run_id in ids])
        finally:
            await store.close()

    asyncio.run(insert())


def test_a_short_id_names_the_run_in_every_runs_command(migrated: Project) -> None:
    p = migrated
    run_id = p.json("trigger", "plain", "--input", '{"n": 1}', "--here", "--json")["id"]
    short = p.ok("runs", "list").stdout.splitlines()[1].split()[0]
    assert short == run_id[:8]  # what the table shows is what the commands take
    assert p.json("runs", "show", short, "--json")["id"] == run_id
    assert p.json("runs", "show", run_id[:6], "--json")["id"] == run_id
    assert json.loads(p.ok("runs", "watch", short).stdout) == {"got": {"n": 1}}
    copy = p.ok("runs", "retrigger", short).stdout
    assert f"retrigger of {run_id}" in copy
    copy_id = copy.split()[1]
    assert p.ok("runs", "cancel", copy_id[:7]).stdout.strip() == f"run {copy_id} cancelled"
    assert p.ok("runs", "retry", copy_id[:8]).stdout.startswith(f"run {copy_id} is pending again")
    p.ok("runs", "cancel", copy_id[:8])
    assert p.ok("runs", "delete", copy_id[:8]).stdout.strip() == f"run {copy_id} deleted"


@pytest.mark.parametrize("command", ["show", "watch", "retry", "retrigger", "cancel", "delete"])
def test_short_id_mistakes_are_one_line_exit_2(migrated: Project, command: str) -> None:
    _insert_runs(migrated, "33fc6f80-aaaa", "33fc6f80-bbbb", "33fc6f9a-cccc")
    result = migrated.run("runs", command, "33fc6")
    assert result.exit_code == 2
    assert error_line(result) == "error: no run with id '33fc6' (a short id needs at least 6 characters)"
    result = migrated.run("runs", command, "33fc6f80")
    assert result.exit_code == 2
    assert error_line(result) == (
        "error: run id prefix '33fc6f80' matches 2 runs: 33fc6f80-aaaa, 33fc6f80-bbbb; give more characters"
    )
    result = migrated.run("runs", command, "44fc6f80")
    assert result.exit_code == 2
    assert error_line(result) == "error: no run with id or id prefix '44fc6f80'"


def test_an_ambiguous_prefix_lists_at_most_ten_candidates(migrated: Project) -> None:
    _insert_runs(migrated, *(f"abcdef-{i:02d}" for i in range(12)))
    line = error_line(migrated.run("runs", "show", "abcdef"))
    assert (
        "matches 10+ runs: abcdef-00, abcdef-01," in line and "abcdef-09, ...; give more characters" in line
    )
    assert "abcdef-10" not in line
    assert migrated.json("runs", "show", "abcdef-11", "--json")["id"] == "abcdef-11"


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


# --- runs retry / retrigger --wait -----------------------------------------------------------------


def test_retry_and_retrigger_wait_like_trigger_wait(migrated: Project) -> None:
    p = migrated
    failed = json.loads(p.run("trigger", "boom", "--here", "--json").stdout)["id"]
    # Nothing executes runs here: --wait follows the run and gives up at --timeout with 124.
    result = p.run("runs", "retry", failed[:8], "--wait", "--timeout", "0.3")
    assert result.exit_code == 124, result.output
    assert result.stdout == ""  # stdout is kept for the run's output
    assert f"run {failed} is pending again" in result.stderr
    assert "timed out waiting; run" in result.stderr and f"runs watch {failed}" in result.stderr

    p.ok("runs", "cancel", failed[:8])
    result = p.run("runs", "retrigger", failed[:8], "--wait", "--timeout", "0.3", "--json")
    assert result.exit_code == 124
    shown = json.loads(result.stdout)
    assert shown["status"] == "pending" and shown["action"] == "retrigger" and shown["retrigger_of"] == failed
    assert p.json("runs", "retry", failed[:8], "--json") == {
        "id": failed,
        "job_name": "boom",
        "status": "pending",
        "action": "retry",
    }
    result = p.run("runs", "retry", failed[:8], "--timeout", "3")
    assert result.exit_code == 2 and "--timeout only applies with --wait" in error_line(result)


# --- backfill --dry-run ----------------------------------------------------------------------------


def test_dry_run_backfill_marks_recorded_fire_times_from_one_read(
    migrated: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = migrated
    first = p.json(
        "schedules",
        "backfill",
        "hourly",
        "--from",
        "2026-01-01T02:00Z",
        "--to",
        "2026-01-01T03:00Z",
        "--json",
    )
    p.ok("runs", "cancel", first[0]["run_id"])
    before = p.db.read_bytes()

    reads: list[Any] = []
    real = SqliteStore.list_fire_records

    async def counted(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(SqliteStore, "list_fire_records", counted)
    args = ("schedules", "backfill", "hourly", "--from", "2026-01-01T00:00Z", "--to", "2026-01-01T05:00Z")
    plan = p.json(*args, "--dry-run", "--json")
    assert len(reads) == 1, "one read of the range, not one per fire time"
    assert [(x["fire_time"][11:16], x["action"], x["recorded_outcome"], x["run_status"]) for x in plan] == [
        ("00:00", "trigger", None, None),
        ("01:00", "trigger", None, None),
        ("02:00", "deduplicate", "triggered", "cancelled"),
        ("03:00", "deduplicate", "triggered", "pending"),
        ("04:00", "trigger", None, None),
        ("05:00", "trigger", None, None),
    ]
    assert [x["run_id"] for x in plan if x["run_id"]] == [first[0]["run_id"], first[1]["run_id"]]

    human = p.run("--utc", *args, "--dry-run")
    assert human.exit_code == 0
    rows = [line.split() for line in human.stdout.splitlines()]
    assert rows[0] == ["FIRE", "TIME", "WOULD", "RECORDED", "RUN", "IDEMPOTENCY", "KEY"]
    assert rows[3][2:6] == ["deduplicate", "triggered", first[0]["run_id"][:8], "(cancelled)"]
    assert rows[1][2:5] == ["trigger", "-", "-"]
    assert human.stderr.strip() == (
        "dry run: 6 fire times of schedule 'hourly': 4 would be triggered, 2 already recorded "
        "(deduplicated); nothing written"
    )
    assert p.db.read_bytes() == before  # nothing written
    with sqlite3.connect(p.db) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2

    # The real backfill does what the dry run said.
    done = p.json(*args, "--json")
    assert [x["outcome"] for x in done] == [
        "triggered" if x["action"] == "trigger" else "deduplicated" for x in plan
    ]


def test_dry_run_backfill_never_creates_the_database(project: Project) -> None:
    args = ("schedules", "backfill", "hourly", "--from", "2026-01-01T00:00Z", "--to", "2026-01-01T01:00Z")
    plan = project.json(*args, "--dry-run", "--json")
    assert [x["action"] for x in plan] == ["trigger", "trigger"]
    assert not project.db.exists()


# --- sync job functions ------------------------------------------------------------------------------


def test_a_sync_job_function_is_refused_when_the_jobs_load(project: Project) -> None:
    project.write(
        f"{project.jobs}/sync.py",
        "from durably_sched import define_job\n\n"
        "def report(step, payload):\n"
        "    return {}\n\n"
        "report_job = define_job(name='report', run=report)\n",
    )
    result = project.run("trigger", "plain")
    assert result.exit_code == 2
    line = error_line(result)
    assert (
        f"jobs module '{project.jobs}.sync' failed to import: TypeError: job 'report': run must be an "
        in line
    )
    assert "async function (async def report(step, payload)), but report is a plain function" in line
    assert "await step.run('name', sync_function) runs it in a thread" in line
    assert f"{project.jobs}/sync.py:6" in line
    assert not project.db.exists()
