"""Several processes triggering and working on one SQLite file at the same time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from durably_sched import create_durably

from .test_crash_resume import HERE, effect_lines, start_worker


@pytest.mark.system
def test_four_triggering_and_three_working_processes_lose_and_double_nothing(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    effects = tmp_path / "effects.log"
    per_process, triggerers = 500, 4
    workers = [start_worker(db_url, effects, stale=15.0) for _ in range(3)]
    try:
        env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent.parent}"}
        procs = [
            subprocess.Popen(
                [sys.executable, str(HERE / "trigger_proc.py"), db_url, str(per_process), f"p{n}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for n in range(triggerers)
        ]
        outputs = [p.communicate(timeout=240) for p in procs]
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert "locked" not in err, err
            assert proc.returncode == 0, err
            assert out.strip() == f"ok {per_process}"

        async def settle() -> list[tuple[str, int]]:
            durably = create_durably(db_url)
            try:
                await durably.connect()
                deadline = asyncio.get_running_loop().time() + 120
                while True:
                    runs = await durably.get_runs(limit=10_000)
                    if (
                        all(r.status == "completed" for r in runs)
                        or asyncio.get_running_loop().time() > deadline
                    ):
                        return [(r.status, r.attempt) for r in runs] + [(r.id, 0) for r in runs]
                    await asyncio.sleep(0.2)
            finally:
                await durably.close()

        result = asyncio.run(settle())
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(20)
    total = per_process * triggerers
    statuses = [s for s, n in result[: len(result) // 2]]
    run_ids = [s for s, _ in result[len(result) // 2 :]]
    assert len(run_ids) == total
    assert Counter(statuses) == {"completed": total}
    done = Counter(line.split()[0] for line in effect_lines(effects) if line.endswith(" done"))
    assert set(done) == set(run_ids)
    assert set(done.values()) == {1}, "a step ran twice"
    for worker in workers:
        assert worker.returncode == 0
