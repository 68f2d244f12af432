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


def start_worker(db_url: str, effects: Path, stale: float = 2.5) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "crash_worker.py"), db_url, str(effects)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parent.parent), "CRASH_WORKER_STALE": str(stale)},
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
