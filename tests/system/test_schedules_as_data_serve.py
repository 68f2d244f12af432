"""Schedules as data with two real serves on PostgreSQL: a schedule created from the CLI fires
without a restart (whichever serve owns it), exactly once per fire time; an update of its cron is
applied by the serves within a second; a delete stops it. The serves run without a worker (runs are
counted from the database, not executed)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from durably_sched.schedule.cron import parse_fire_key
from durably_sched.store import open_store
from durably_sched.store.base import RunQuery, RunRecord

from .serve_procs import HERE, ROOT, Serve, wait_for

pytestmark = [pytest.mark.system, pytest.mark.postgres]


def cli(url: str, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durably_sched.cli", "--database", url, "--jobs", "chaos_jobs", *args],
        cwd=workdir, env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def _runs(url: str, name: str) -> list[RunRecord]:
    store = open_store(url)
    await store.connect()
    try:
        runs = await store.list_runs(RunQuery(limit=100_000))
        return [r for r in runs if r.labels.get("schedule") == name]
    finally:
        await store.close()


def runs_of(url: str, name: str) -> list[RunRecord]:
    return asyncio.run(_runs(url, name))


def fire_time(run: RunRecord) -> datetime:
    assert run.idempotency_key is not None
    return parse_fire_key(run.idempotency_key)[1]


def test_a_schedule_created_updated_and_deleted_from_the_cli_takes_effect_in_every_serve(
    postgres_schema_url: str, tmp_path: Path, serves: list[Serve]
) -> None:
    url = postgres_schema_url
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(
        "schedules:\n  from-file: {cron: '0 0 1 1 *', job: tick, input: {step_seconds: 0}}\n"
    )
    for i in range(2):
        serve = Serve(url, schedules, tmp_path, "--no-worker", "--scheduler-lease", "3", env={})
        serves.append(serve.start())
        wait_for(serve.ready, 30, f"serve {i} started")
    made = cli(url, tmp_path, "schedules", "create", "live", "--cron", "* * * * * *", "--job", "tick",
               "--input", '{"step_seconds": 0}', "--note", "system test")  # fmt: skip
    assert made.returncode == 0, made.stderr
    created = datetime.now(UTC)
    # It fires without a restart, every second, once per fire time, whichever serve owns it.
    wait_for(lambda: len(runs_of(url, "live")) >= 4, 15, "the created schedule fired")
    times = [fire_time(r) for r in runs_of(url, "live")]
    assert len(times) == len(set(times)), "a fire time fired twice"
    assert min(times) >= created.replace(microsecond=0) - timedelta(seconds=1)
    # An update to every 5 seconds: within a second no serve fires a time off the new cron.
    updated = cli(url, tmp_path, "schedules", "update", "live", "--cron", "*/5 * * * * *", "--note", "slower")
    assert updated.returncode == 0, updated.stderr
    changed_at = datetime.now(UTC)
    time.sleep(7)
    after = [fire_time(r) for r in runs_of(url, "live") if fire_time(r) > changed_at + timedelta(seconds=1)]
    assert after and all(t.second % 5 == 0 for t in after), after
    versions = {
        r.schedule_version for r in runs_of(url, "live") if fire_time(r) > changed_at + timedelta(seconds=1)
    }
    assert versions == {2}
    # A delete stops it within a second: no fire time after that.
    deleted = cli(url, tmp_path, "schedules", "delete", "live", "--note", "done")
    assert deleted.returncode == 0, deleted.stderr
    gone_at = datetime.now(UTC)
    time.sleep(6)
    late = [t for t in (fire_time(r) for r in runs_of(url, "live")) if t > gone_at + timedelta(seconds=1)]
    assert late == []
    all_times = [fire_time(r) for r in runs_of(url, "live")]
    assert len(all_times) == len(set(all_times))
    for serve in serves:
        assert serve.stop() == 0, serve.output()[-3000:]
