"""Crash resume with real processes: a worker killed with SIGKILL mid-step; another resumes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from durably_sched import create_durably

from .crash_worker import chain_job

HERE = Path(__file__).parent


def start_worker(db_url: str, effects: Path, stale: float = 2.5, trigger: int = 0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent), "CRASH_WORKER_STALE": str(stale)}
    if trigger:
        env["CRASH_WORKER_TRIGGER"] = str(trigger)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "crash_worker.py"), db_url, str(effects)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def wait_for(predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


def effect_lines(effects: Path) -> list[str]:
    return effects.read_text().splitlines() if effects.exists() else []


@pytest.mark.system
@pytest.mark.parametrize("kill_during_step", [0, 2, 4])
def test_kill_9_mid_step_then_resume_runs_no_completed_step_twice(
    tmp_path: Path, kill_during_step: int
) -> None:
    db_url = f"sqlite:///{tmp_path / 'crash.db'}"
    effects = tmp_path / "effects.log"
    steps = 5

    async def trigger() -> str:
        async with create_durably(db_url).register([chain_job]) as durably:
            await durably.stop()
            run = await durably.jobs.chain.trigger({"steps": steps, "step_seconds": 0.3})
            return run.id

    first = start_worker(db_url, effects)
    try:
        run_id = asyncio.run(trigger())
        # Kill the worker while step k is executing (started, not done).
        wait_for(lambda: f"{run_id} {kill_during_step} start" in effect_lines(effects))
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert f"{run_id} {kill_during_step} done" not in effect_lines(effects)

    second = start_worker(db_url, effects)
    try:

        async def finished() -> tuple[str, object, list[str]]:
            durably = create_durably(db_url).register([chain_job])
            try:
                await durably.connect()
                record = await durably.wait_for_run(run_id, timeout=30)
                steps_done = [s.name for s in await durably.get_steps(run_id)]
                return record.status, record.output, steps_done
            finally:
                await durably.close()

        status, output, steps_done = asyncio.run(finished())
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(10)
    assert status == "completed"
    assert output == {"total": sum(range(steps))}
    assert steps_done == [f"step-{i}" for i in range(steps)]
    done = Counter(line for line in effect_lines(effects) if line.endswith(" done"))
    # Every step completed exactly once; only the interrupted step started twice.
    assert sorted(done) == sorted(f"{run_id} {i} done" for i in range(steps))
    assert set(done.values()) == {1}
    starts = Counter(line for line in effect_lines(effects) if line.endswith(" start"))
    assert starts[f"{run_id} {kill_during_step} start"] == 2
    assert all(n == 1 for key, n in starts.items() if key != f"{run_id} {kill_during_step} start")


@pytest.mark.system
@pytest.mark.postgres
def test_a_run_created_already_claimed_and_killed_is_taken_over_and_completes_once(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    """``trigger_and_wait`` in a process whose worker has a free slot inserts its run already
    claimed by that worker (one statement, no claim). Killed with SIGKILL mid-step, that process
    leaves a run held under a lease nobody renews: another worker takes it over when the lease
    expires and completes it, every completed step executed once."""
    effects = tmp_path / "effects.log"
    steps, kill_during_step = 3, 1
    first = start_worker(postgres_schema_url, effects, trigger=steps)
    try:
        line = wait_for(
            lambda: next((x for x in effect_lines(effects) if x.endswith(f" {kill_during_step} start")), None)
        )
        run_id = line.split()[0]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()

    async def first_attempt() -> tuple[object, object, object, int]:
        async with create_durably(postgres_schema_url).register([chain_job]) as durably:
            await durably.stop()
            record = await durably.get_run(run_id)
            return record.status, record.created_at, record.started_at, record.attempt

    status, created_at, started_at, attempt = asyncio.run(first_attempt())
    # Created already claimed: running from its insert on (the insert's own time), first attempt.
    assert (status, attempt) == ("running", 1) and started_at == created_at

    second = start_worker(postgres_schema_url, effects)
    try:

        async def finished() -> tuple[str, object, int]:
            async with create_durably(postgres_schema_url).register([chain_job]) as durably:
                await durably.stop()
                record = await durably.wait_for_run(run_id, timeout=30)
                return record.status, record.output, record.attempt

        status, output, attempt = asyncio.run(finished())
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(10)
    assert (status, output, attempt) == ("completed", {"total": sum(range(steps))}, 2)
    done = Counter(x for x in effect_lines(effects) if x.endswith(" done"))
    assert done == Counter(f"{run_id} {i} done" for i in range(steps))
    starts = Counter(x for x in effect_lines(effects) if x.endswith(" start"))
    assert starts == Counter(
        {**{f"{run_id} {i} start": 1 for i in range(steps)}, f"{run_id} {kill_during_step} start": 2}
    )
