"""Real APScheduler processes on one database: each fire time makes exactly one durable run.

Each process (tests/system/apscheduler_proc.py) runs its own APScheduler with a DurablyExecutor and
fires the same job every second, the way several copies of an app do today (each would run the job
once per process without the bridge). The invariants are checked from the database and from what
each process's APScheduler reported.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from durably_sched import create_durably
from durably_sched.integrations.apscheduler import parse_apscheduler_key
from durably_sched.store.base import RunRecord

from .chaos_jobs import tick_job
from .invariants import steps_done_twice
from .serve_procs import HERE, ROOT, wait_for

pytestmark = pytest.mark.system
JOB_ID = "every-second"


class AppProcess:
    """One apscheduler_proc.py subprocess and the outcomes its APScheduler reported."""

    def __init__(self, url: str, mode: str, workdir: Path, effects: Path, name: str) -> None:
        self.report = workdir / f"{name}.jsonl"
        self.log = workdir / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "apscheduler_proc.py"), url, mode, str(self.report)],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}", "CHAOS_EFFECTS": str(effects)},
        )

    def records(self) -> list[dict[str, Any]]:
        if not self.report.exists():
            return []
        lines = self.report.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]  # a killed writer's last line

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"process exited with {self.proc.returncode}:\n{self.output()}")
        return any("ready" in r for r in self.records())

    def executed(self) -> dict[datetime, dict[str, Any]]:
        return {
            datetime.fromisoformat(r["fire_time"]): r for r in self.records() if r.get("event") == "executed"
        }

    def problems(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") in ("missed", "error")]

    def stop(self) -> int:
        wait_for(self.ready, 60, "process ready")
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"no exit within 60 s of SIGTERM:\n{self.output()[-3000:]}") from None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Outcome:
    runs: list[RunRecord]
    by_fire_time: dict[datetime, RunRecord]
    doubled: dict[datetime, int]


async def _finish_and_read(url: str) -> Outcome:
    """Let a worker finish what the stopped processes left pending (leases of a killed one expire),
    then read every run of the job."""
    durably = create_durably(url, polling_interval=0.1, stale_threshold=10.0).register([tick_job])
    async with durably:
        deadline = asyncio.get_running_loop().time() + 90
        while True:
            runs = await durably.get_runs(limit=100_000)
            if all(r.is_finished for r in runs) or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
    fire_times = Counter(parse_apscheduler_key(r.idempotency_key or "")[1] for r in runs)
    return Outcome(
        runs=runs,
        by_fire_time={parse_apscheduler_key(r.idempotency_key or "")[1]: r for r in runs},
        doubled={t: n for t, n in fire_times.items() if n > 1},
    )


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest | None = None) -> str:
    if backend == "sqlite" or request is None:
        return f"sqlite:///{tmp_path / 'apscheduler.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


def _common(*procs: AppProcess) -> set[datetime]:
    sets = [set(p.executed()) for p in procs]
    return set.intersection(*sets)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_apscheduler_processes_make_one_run_per_fire_time(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _url(backend, tmp_path, request)
    effects = tmp_path / "effects.log"
    monkeypatch.setenv("CHAOS_EFFECTS", str(effects))  # tick's steps record their effects there
    # One AsyncIOScheduler app and one BackgroundScheduler app: both kinds of executor, one database.
    procs = [AppProcess(url, mode, tmp_path, effects, mode) for mode in ("asyncio", "thread")]
    try:
        for proc in procs:
            wait_for(proc.ready, 60, f"{proc.report.stem} ready")
        wait_for(lambda: len(_common(*procs)) >= 6, 90, "six fire times seen by both processes")
    finally:
        codes = [proc.stop() for proc in procs]
    assert codes == [0, 0], [p.output()[-2000:] for p in procs]
    outcome = asyncio.run(_finish_and_read(url))

    seen = [p.executed() for p in procs]
    both = set(seen[0]) & set(seen[1])
    assert len(both) >= 6
    assert outcome.doubled == {}, f"fire times with more than one run: {outcome.doubled}"
    assert {parse_apscheduler_key(r.idempotency_key or "")[0] for r in outcome.runs} == {JOB_ID}
    # Every fire time a process handled has one run, and every run comes from such a fire time.
    assert set(outcome.by_fire_time) == set(seen[0]) | set(seen[1])
    for t, run in outcome.by_fire_time.items():
        reports = [s[t] for s in seen if t in s]
        assert {r["run_id"] for r in reports} == {run.id}, f"{t}: processes saw different runs"
        assert [r["disposition"] for r in reports].count("created") == 1, f"{t}: {reports}"
        assert run.labels["apscheduler_job"] == JOB_ID
        assert run.labels["scheduled_for"] == t.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [p.problems() for p in procs] == [[], []]
    assert Counter(r.status for r in outcome.runs) == {"completed": len(outcome.runs)}
    assert steps_done_twice(effects.read_text().splitlines()) == {}


def test_a_killed_apscheduler_process_neither_doubles_nor_drops_what_the_other_fires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 one of two processes, let the other fire alone, restart the killed one."""
    url = _url("sqlite", tmp_path)
    effects = tmp_path / "effects.log"
    monkeypatch.setenv("CHAOS_EFFECTS", str(effects))  # tick's steps record their effects there
    first = AppProcess(url, "asyncio", tmp_path, effects, "first")
    survivor = AppProcess(url, "thread", tmp_path, effects, "survivor")
    procs = [first, survivor]
    try:
        wait_for(lambda: first.ready() and survivor.ready(), 60, "both ready")
        wait_for(lambda: len(_common(first, survivor)) >= 3, 90, "three fire times seen by both")
        first.kill9()
        killed_at = max(first.executed(), default=None)
        alone_from = len(survivor.executed())
        wait_for(lambda: len(survivor.executed()) >= alone_from + 3, 60, "the survivor fires alone")
        again = AppProcess(url, "asyncio", tmp_path, effects, "restarted")
        procs.append(again)
        wait_for(again.ready, 60, "restarted ready")
        wait_for(lambda: len(_common(again, survivor)) >= 3, 90, "three fire times seen by both again")
    finally:
        codes = [proc.stop() for proc in procs if proc.proc.poll() is None]
    assert codes == [0, 0]
    outcome = asyncio.run(_finish_and_read(url))

    assert outcome.doubled == {}
    reported: dict[datetime, list[dict[str, Any]]] = {}
    for proc in procs:
        for t, record in proc.executed().items():
            reported.setdefault(t, []).append(record)
    # Every fire time any process reported has its run; the survivor's fire times while alone too.
    assert set(reported) <= set(outcome.by_fire_time)
    for t, records in reported.items():
        assert {r["run_id"] for r in records} == {outcome.by_fire_time[t].id}
        assert [r["disposition"] for r in records].count("created") <= 1
    # A run nobody reported can only be the one the killed process stored just before it died.
    unreported = set(outcome.by_fire_time) - set(reported)
    assert killed_at is not None
    assert all(abs((t - killed_at).total_seconds()) <= 5 for t in unreported), (unreported, killed_at)
    assert Counter(r.status for r in outcome.runs) == {"completed": len(outcome.runs)}
