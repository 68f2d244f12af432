"""`schedules backfill --dry-run`, through CliRunner.

What operators rely on: a dry-run backfill says which fire times would run and which are already
recorded, from one read, and never creates the database.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from durably_sched.store.sqlite import SqliteStore
from tests.unit.test_cli import Project

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
