"""Pause and resume with real `durably-sched serve` processes, on SQLite and PostgreSQL.

Three serve processes fire one schedule every second. `durably-sched schedules pause` (another
process, as an operator or the HTTP API would) pauses it: every serve process logs that it saw the
pause, and from the fire time after the pause on, no process fires anything: every fire time is
recorded ``paused`` and has no run. `schedules resume` starts it again in all three, and nothing
of the paused span is run behind the operator's back.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from durably_sched import create_durably
from durably_sched.store.base import FireRecord

from .chaos_jobs import chain_job, tick_job
from .serve_procs import HERE, ROOT, Serve, wait_for

pytestmark = pytest.mark.system
SCHEDULE = "every-second"
SCHEDULES = f"""\
schedules:
  {SCHEDULE}:
    cron: "* * * * * *"
    job: tick
    input: {{step_seconds: 0}}
    overlap: allow
    catchup: all
    catchup_window: 1h
"""
OPTIONS = ["--concurrency", "4", "--polling-interval", "0.1", "--stale-threshold", "20", "--stop-grace", "5"]


def records(url: str) -> list[FireRecord]:
    async def read() -> list[FireRecord]:
        durably = create_durably(url).register([tick_job, chain_job])
        try:
            await durably.connect()
            return await durably.store.list_fire_records(SCHEDULE, limit=100_000)
        finally:
            await durably.close()

    return asyncio.run(read())


def run_keys(url: str) -> list[str]:
    async def read() -> list[str]:
        durably = create_durably(url).register([tick_job, chain_job])
        try:
            await durably.connect()
            return [r.idempotency_key or "" for r in await durably.get_runs(schedule=SCHEDULE, limit=100_000)]
        finally:
            await durably.close()

    return asyncio.run(read())


def cli(url: str, schedules: Path, cwd: Path, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "durably_sched.cli", "--database", url, "--jobs", "chaos_jobs"),
            *("--schedules", str(schedules), *args, "--json"),
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}"},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def utc(text: object) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)


def test_a_pause_stops_all_three_serve_processes_within_one_tick(database: str, tmp_path: Path) -> None:
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(SCHEDULES)
    env = {"CHAOS_EFFECTS": str(tmp_path / "effects.log")}
    cli(database, schedules, tmp_path, "schedules", "list")  # nothing to show yet; checks the file
    procs = [Serve(database, schedules, tmp_path, *OPTIONS, env=env).start() for _ in range(3)]
    try:
        for p in procs:
            wait_for(p.ready, 60, "serve started")
        wait_for(
            lambda: sum(r.outcome == "triggered" for r in records(database)) >= 3, 60, "the schedule fires"
        )
        paused = cli(database, schedules, tmp_path, "schedules", "pause", SCHEDULE, "--reason", "system test")
        assert paused["changed"] is True
        paused_at = utc(paused["paused_at"])
        for p in procs:
            wait_for(
                lambda p=p: f"schedule {SCHEDULE} paused (since" in p.output(), 30, f"serve {p.pid} saw it"
            )
        # Every process handles fire times on: they are recorded, as paused.
        horizon = paused_at + timedelta(seconds=1)  # the fire time after the pause: one tick
        wait_for(
            lambda: sum(r.fire_time > horizon for r in records(database)) >= 4,
            60,
            "paused fire times recorded",
        )
        after = [r for r in records(database) if r.fire_time > horizon]
        assert Counter(r.outcome for r in after) == {"paused": len(after)}, after
        assert all(r.run_id is None for r in after)
        keys = run_keys(database)
        fired_after = [k for k in keys if utc(k.split(":", 2)[2]) > horizon]
        assert fired_after == [], "a run was made after the pause"

        resumed = cli(database, schedules, tmp_path, "schedules", "resume", SCHEDULE)
        assert resumed["changed"] is True
        resumed_at = utc(resumed["resumed_at"])
        for p in procs:
            wait_for(
                lambda p=p: f"schedule {SCHEDULE} resumed" in p.output(), 30, f"serve {p.pid} saw the resume"
            )
        wait_for(
            lambda: (
                sum(r.outcome == "triggered" and r.fire_time > resumed_at for r in records(database)) >= 3
            ),
            60,
            "the schedule fires again",
        )
        span = [r for r in records(database) if horizon < r.fire_time <= resumed_at]
        assert span and all(r.outcome == "paused" and r.run_id is None for r in span), span
    finally:
        codes = [p.stop() for p in procs]
    assert codes == [0, 0, 0], [p.output()[-2000:] for p in procs]
    final = records(database)
    assert not [r for r in final if horizon < r.fire_time <= resumed_at and r.outcome != "paused"]
    keys = run_keys(database)
    assert len(keys) == len(set(keys)), "a fire time made two runs"
    assert sum(r.outcome == "triggered" for r in final) == len(keys)
