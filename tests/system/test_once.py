"""One-shot mode as cron-style runners use it: real `serve --once` / `work --until-idle` processes.

What users rely on, on SQLite and PostgreSQL:

* three invocations started together over the same due fire times (a CronJob with
  ``concurrencyPolicy: Allow`` whose previous job is still running, a timer firing twice) make one
  run per fire time, execute each run once, and all exit 0;
* a run that fails makes the invocation exit 1 with one line naming the run, its step and error;
* SIGTERM (a deadline, a node drain) releases the run at its last checkpoint and exits 0; the next
  invocation resumes it after that step;
* concurrent coalescing triggers from separate processes make one run.

Conditions are awaited with deadlines; the database is the judge.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from durably_sched import create_durably
from durably_sched.store.base import RunRecord

from .chaos_jobs import chain_job, tick_job
from .invariants import check_exactly_once, steps_done_twice
from .serve_procs import HERE, ROOT, wait_for

pytestmark = pytest.mark.system

JOBS = """
import time
from durably_sched import Step, define_job


async def boom(step: Step, payload: dict) -> dict:
    await step.run("fetch", lambda: 1)
    await step.run("parse", lambda: int("not a number"))
    return {}


async def steps(step: Step, payload: dict) -> dict:
    done = []
    for i in range(int(payload["count"])):
        done.append(await step.run(f"step-{i}", lambda i=i: time.sleep(float(payload["seconds"])) or i))
    return {"done": len(done)}


boom_job = define_job(name="boom", run=boom)
steps_job = define_job(name="steps", run=steps)
"""
FAST = ["--heartbeat-interval", "0.5", "--stale-threshold", "10", "--stop-grace", "2"]


class Runner:
    """Invocations of the CLI in ``root`` (jobs from tests/system/chaos_jobs.py and ``oncejobs``)."""

    def __init__(self, root: Path, database: str) -> None:
        self.root = root
        self.database = database
        self.schedules = root / "schedules.yaml"
        self.effects = root / "effects.log"
        (root / "oncejobs.py").write_text(JOBS)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
        self.env.update(
            {
                "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}{os.pathsep}{root}",
                "PYTHONUNBUFFERED": "1",
                "CHAOS_EFFECTS": str(self.effects),
            }
        )
        self.count = 0

    def argv(self, jobs: str, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "durably_sched.cli",
            "--database",
            self.database,
            "--jobs",
            jobs,
            "--schedules",
            str(self.schedules),
            *args,
        ]

    def start(
        self, jobs: str, *args: str, barrier: Path | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        self.count += 1
        log = self.root / f"once-{self.count}.log"
        argv = self.argv(jobs, *args)
        if barrier is not None:  # the same command line, through the barrier wrapper
            argv = [sys.executable, str(HERE / "once_barrier.py"), str(barrier), *argv[3:]]
        proc = subprocess.Popen(
            argv,
            cwd=self.root,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        return proc, log

    def run(self, jobs: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(jobs, *args),
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _prepare(url: str, cursors: dict[str, datetime]) -> None:
    """Migrate and place the schedules' cursors in the past, as a previous invocation would have."""
    durably = create_durably(url).register([tick_job, chain_job])
    try:
        await durably.migrate()
        for name, cursor in cursors.items():
            await durably.store.advance_cursor(name, cursor)
    finally:
        await durably.close()


async def _runs(url: str) -> list[RunRecord]:
    durably = create_durably(url)
    try:
        await durably.connect()
        return await durably.get_runs(limit=100_000)
    finally:
        await durably.close()


def test_three_concurrent_serve_once_make_one_run_per_due_fire_time(database: str, tmp_path: Path) -> None:
    runner = Runner(tmp_path, database)
    runner.schedules.write_text(
        "schedules:\n"
        "  fast:\n"
        '    cron: "*/5 * * * * *"\n'
        "    job: tick\n"
        "    overlap: allow\n"
        "    catchup: all\n"
        "    catchup_window: 1h\n"
        "    input: {step_seconds: 0.05}\n"
        "  queued:\n"
        '    cron: "*/15 * * * * *"\n'
        "    job: tick\n"
        "    overlap: queue\n"
        "    catchup: all\n"
        "    catchup_window: 1h\n"
        "    input: {step_seconds: 0.05}\n"
    )
    now = datetime.now(UTC).replace(microsecond=0)
    since = now - timedelta(seconds=now.second % 15) - timedelta(minutes=1)
    _run(_prepare(database, {"fast": since, "queued": since}))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        runner.start("chaos_jobs", "serve", "--once", "--concurrency", "2", *FAST, barrier=barrier)
        for _ in range(3)
    ]
    try:
        # All three have read the cursors before any of them fires: they race for every fire time.
        wait_for(lambda: len(list(barrier.glob("ready-*"))) == 3, timeout=60, what="three schedulers loaded")
        (barrier / "go").touch()
        codes = [proc.wait(120) for proc, _ in procs]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    logs = [log.read_text() for _, log in procs]
    assert codes == [0, 0, 0], logs
    runs = _run(_runs(database))
    for name, period in (("fast", timedelta(seconds=5)), ("queued", timedelta(seconds=15))):
        mine = [r for r in runs if r.labels.get("schedule") == name]
        latest = max(datetime.fromisoformat(r.labels["scheduled_for"]) for r in mine)
        report = check_exactly_once(mine, name, since + period, latest, period)
        assert report.ok, f"{name}: {report}"
        assert len(report.expected) >= 60 // period.seconds
    # Between them the three triggered each fire time once; the others found it deduplicated.
    triggered = [_count(text, r"fire times: [^;]*?(\d+) triggered") for text in logs]
    deduplicated = [_count(text, r"fire times: [^;]*?(\d+) deduplicated") for text in logs]
    assert sum(triggered) == len(runs), (triggered, len(runs))
    assert sum(deduplicated) >= 2 * len(runs) - 6, (deduplicated, len(runs))  # all saw (nearly) all
    executed = [_count(text, r"runs executed here: (\d+)") for text in logs]
    assert sum(executed) == len(runs), executed
    assert steps_done_twice(runner.effects.read_text().splitlines()) == {}
    # Nothing is left for the next invocation but fire times that came due meanwhile.
    again = runner.run("chaos_jobs", "serve", "--once", *FAST)
    assert again.returncode == 0, again.stderr
    assert len(_run(_runs(database))) == len(runs) + _count(again.stderr, r"(\d+) triggered")


def _count(text: str, pattern: str) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else 0


def test_a_failed_run_makes_the_invocation_exit_1_naming_it(database: str, tmp_path: Path) -> None:
    runner = Runner(tmp_path, database)
    runner.schedules.write_text("schedules: {}\n")
    assert runner.run("oncejobs", "migrate").returncode == 0
    created = runner.run("oncejobs", "trigger", "boom")
    assert created.returncode == 0, created.stderr
    run_id = created.stdout.split()[1]
    ok = runner.run("oncejobs", "trigger", "steps", "--input", '{"count": 1, "seconds": 0}')
    assert ok.returncode == 0, ok.stderr
    proc = runner.run("oncejobs", "serve", "--once", *FAST)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: 1 of 2 runs executed here failed: {run_id} (boom, step 'parse'): ValueError"
    )
    # The failure's traceback is in serve's ERROR record for the run (docs/failures.md, "Tracebacks"),
    # and it is the job's own: the invocation itself did not crash.
    before_summary = proc.stderr.strip().splitlines()[:-1]
    assert "Traceback (most recent call last):" in before_summary
    assert proc.stderr.count("Traceback (most recent call last):") == 1
    assert "oncejobs.py" in proc.stderr
    # Nothing left: the next invocation executes nothing and succeeds.
    proc = runner.run("oncejobs", "work", "--until-idle", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "runs executed here: 0" in proc.stderr


def test_sigterm_releases_the_run_and_the_next_invocation_resumes_it(database: str, tmp_path: Path) -> None:
    runner = Runner(tmp_path, database)
    runner.schedules.write_text("schedules: {}\n")
    assert runner.run("oncejobs", "migrate").returncode == 0
    created = runner.run("oncejobs", "trigger", "steps", "--input", '{"count": 40, "seconds": 0.1}')
    assert created.returncode == 0, created.stderr
    run_id = created.stdout.split()[1]
    proc, log = runner.start("oncejobs", "work", "--until-idle", "--stop-grace", "0.5", *FAST[:4])

    def progressed() -> bool:
        return any(r.id == run_id and r.step_count >= 3 for r in _run(_runs(database)))

    try:
        wait_for(progressed, timeout=60, what="three steps checkpointed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    [record] = [r for r in _run(_runs(database)) if r.id == run_id]
    assert record.status == "pending" and record.worker_id is None, log.read_text()
    stopped_at = record.step_count
    assert 3 <= stopped_at < 40
    assert "stopped: signal" in log.read_text() and "released after" in log.read_text()
    resumed = runner.run("oncejobs", "work", "--until-idle", *FAST)
    assert resumed.returncode == 0, resumed.stderr
    [record] = [r for r in _run(_runs(database)) if r.id == run_id]
    assert record.status == "completed" and record.output == {"done": 40} and record.step_count == 40
    assert record.attempt == 2  # the second invocation resumed it: steps before it were replayed


def test_coalescing_triggers_from_separate_processes_make_one_run(database: str, tmp_path: Path) -> None:
    runner = Runner(tmp_path, database)
    runner.schedules.write_text("schedules: {}\n")
    assert runner.run("oncejobs", "migrate").returncode == 0
    args = ("trigger", "steps", "--input", '{"count": 1, "seconds": 0}', "--concurrency-key", "tenant-7")
    for round_no in range(3):
        procs = [
            subprocess.Popen(
                runner.argv("oncejobs", *args, "--coalesce", "skip", "--json"),
                cwd=tmp_path,
                env=runner.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [proc.communicate(timeout=60) for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * 4, outputs
        results = [json.loads(out) for out, _ in outputs]
        assert sorted(r["disposition"] for r in results) == ["coalesced"] * 3 + ["created"], round_no
        assert len({r["id"] for r in results}) == 1
        done = runner.run("oncejobs", "work", "--until-idle", *FAST)
        assert done.returncode == 0 and "runs executed here: 1 " in done.stderr, done.stderr
    assert len(_run(_runs(database))) == 3
