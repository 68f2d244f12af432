"""`durably-sched serve` and `trigger --wait` as real processes.

What users rely on: `serve` fires schedules and executes their runs; `trigger --wait` from another
shell is executed by that `serve` and exits with the run's outcome; `--here` runs it without any
`serve`; editing schedules.yaml takes effect without a restart and a broken edit changes nothing;
SIGTERM stops within the grace with no run left `running`; a second signal exits at once.
Conditions are awaited with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .serve_procs import wait_for

pytestmark = pytest.mark.system

JOBS = """
import time
from pydantic import BaseModel
from durably_sched import Step, define_job


class CountIn(BaseModel):
    count: int = 3


async def tick(step: Step, payload: dict) -> dict:
    return {"at": await step.run("tick", time.time)}


async def counter(step: Step, payload: CountIn) -> dict:
    total = 0
    for i in range(payload.count):
        total += await step.run(f"add-{i}", lambda i=i: i)
        await step.progress(i + 1, payload.count, f"added {i}")
    step.log.info("counted", total=total)
    return {"total": total}


async def slow(step: Step, payload: dict) -> dict:
    await step.run("long", lambda: time.sleep(float(payload.get("seconds", 30))))
    return {}


def explode() -> None:
    raise RuntimeError("exploded on purpose")


async def boom(step: Step, payload: dict) -> dict:
    await step.run("fuse", lambda: 1)
    await step.run("explode", explode)
    return {}


async def flaky(step: Step, payload: dict) -> dict:
    await step.run("prepare", lambda: 1)
    if step.attempt == 1:
        raise RuntimeError("fails on its first attempt")
    return {"attempt": step.attempt}


tick_job = define_job(name="tick", run=tick)
flaky_job = define_job(name="flaky", run=flaky)
other_job = define_job(name="other", run=tick)
counter_job = define_job(name="counter", input=CountIn, run=counter)
slow_job = define_job(name="slow", run=slow)
boom_job = define_job(name="boom", run=boom)
"""

EVERY_SECOND = """\
schedules:
  tick:
    cron: "*/1 * * * * *"
    job: tick
    overlap: allow
"""
FAST = [
    "--polling-interval",
    "0.1",
    "--heartbeat-interval",
    "0.5",
    "--stale-threshold",
    "5",
    "--retention",
    "off",
]


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "serve.db"
        self.url = f"sqlite:///{self.db}"
        self.schedules = root / "schedules.yaml"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
        self.env.update(
            {"DURABLY_DATABASE_URL": self.url, "DURABLY_JOBS": "servejobs", "PYTHONUNBUFFERED": "1"}
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "durably_sched.cli", *args]

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def serve(self, *extra: str) -> subprocess.Popen[bytes]:
        log = self.root / f"serve-{len(self.procs)}.log"
        proc = subprocess.Popen(
            self.argv("serve", *FAST, *extra),
            cwd=self.root,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        proc.log_path = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        wait_for(lambda: "serve started" in self.log(proc) or proc.poll() is not None, 20, "serve to start")
        assert proc.poll() is None, self.log(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        path: Path = proc.log_path  # type: ignore[attr-defined]
        return path.read_text(errors="replace") if path.exists() else ""

    def runs(self, where: str = "1=1") -> list[sqlite3.Row]:
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(f"SELECT * FROM runs WHERE {where} ORDER BY seq").fetchall()
        except sqlite3.OperationalError:  # schema not created yet
            return []
        finally:
            conn.close()

    def completed(self, schedule: str) -> int:
        return len(self.runs(f"schedule_name = '{schedule}' AND status = 'completed'"))


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    (tmp_path / "servejobs").mkdir()
    (tmp_path / "servejobs" / "__init__.py").write_text("")
    (tmp_path / "servejobs" / "jobs.py").write_text(JOBS)
    p = Project(tmp_path)
    yield p
    for proc in p.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(sig)
    code = proc.wait(timeout)
    return code, time.monotonic() - started


def test_serve_fires_a_schedule_every_second_and_stops_on_sigterm(project: Project) -> None:
    project.schedules.write_text(EVERY_SECOND)
    serve = project.serve("--http", "127.0.0.1:0")
    started = project.log(serve)
    for fragment in (
        "database sqlite:///",
        "6 jobs from 'servejobs': boom, counter, flaky, other, slow, tick",
        "1 schedule from schedules.yaml: tick",
        "next fire time: tick at ",
        "serve started: scheduler + worker (4 runs at a time), worker id ",
    ):
        assert fragment in started, started
    assert "1 schedules" not in started
    wait_for(lambda: project.completed("tick") >= 3, 15, "three completed scheduled runs")
    keys = [r["idempotency_key"] for r in project.runs("schedule_name = 'tick'")]
    assert all(re.fullmatch(r"schedule:tick:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", k) for k in keys)
    assert len(keys) == len(set(keys))

    port = re.search(r"on http://127\.0\.0\.1:(\d+)", project.log(serve))
    assert port is not None, project.log(serve)
    health = project.cli("healthcheck", "--http", f"0.0.0.0:{port.group(1)}")
    assert health.returncode == 0, health.stderr
    ready = project.cli("healthcheck", "--http", f"127.0.0.1:{port.group(1)}", "--ready")
    assert ready.returncode == 0, ready.stderr

    code, took = stop(serve)
    assert code == 0, project.log(serve)
    assert took < 5
    assert "stopped" in project.log(serve)
    assert not project.runs("status = 'running'")


def test_trigger_wait_is_executed_by_serve_in_another_process(project: Project) -> None:
    serve = project.serve("--no-scheduler")
    done = project.cli("trigger", "counter", "--input", '{"count": 4}', "--wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"total": 6}
    assert "counted" in done.stderr  # the run's log, read from the database
    (run,) = project.runs("job_name = 'counter'")
    assert run["worker_id"].split(":")[1] == str(serve.pid), "serve, not the CLI, executed the run"

    failed = project.cli("trigger", "boom", "--wait")
    assert failed.returncode == 1
    assert "failed in step 'explode': RuntimeError: exploded on purpose" in failed.stderr
    assert failed.stdout == ""

    as_json = project.cli("trigger", "counter", "--input", '{"count": 2}', "--wait", "--json")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert (
        result["status"] == "completed"
        and result["output"] == {"total": 1}
        and result["disposition"] == "created"
    )
    assert stop(serve)[0] == 0


def test_retry_and_retrigger_wait_for_the_run_and_label_its_durations(project: Project) -> None:
    serve = project.serve("--no-scheduler")
    failed = project.cli("trigger", "flaky", "--wait")
    assert failed.returncode == 1 and "fails on its first attempt" in failed.stderr
    run_id = failed.stderr.split()[1]
    retried = project.cli("runs", "retry", run_id[:8], "--wait")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout) == {"attempt": 2}
    assert f"run {run_id} is pending again (1 step done" in retried.stderr
    assert re.search(
        rf"run {run_id} completed in [\d.]+s total, from its first start \(attempt 2\)", retried.stderr
    )
    # serve logs the attempt's own time, and the total since the first start.
    wait_for(
        lambda: f"flaky {run_id[:8]}: run completed in" in project.log(serve), 10, "the completion log line"
    )
    assert re.search(
        rf"flaky {run_id[:8]}: run completed in [\d.]+s this attempt "
        r"\(attempt 2; [\d.]+s since the first start\)",
        project.log(serve),
    ), project.log(serve)
    shown = project.cli("runs", "show", run_id[:8]).stdout
    assert re.search(r"total time\s+\S+ \(first start to finish, 2 attempts\)", shown), shown
    assert json.loads(project.cli("runs", "show", run_id[:8], "--json").stdout)["total_duration"] > 0

    done = project.cli("trigger", "counter", "--input", '{"count": 2}', "--json")
    copy = project.cli("runs", "retrigger", json.loads(done.stdout)["id"][:8], "--wait", "--json")
    assert copy.returncode == 0, copy.stderr
    result = json.loads(copy.stdout)
    assert result["status"] == "completed" and result["output"] == {"total": 1} and result["attempt"] == 1
    assert stop(serve)[0] == 0


def test_trigger_wait_here_needs_no_serve(project: Project) -> None:
    assert project.cli("migrate").returncode == 0
    other = project.cli("trigger", "counter", "--json")  # stays pending: nothing runs it
    done = project.cli("trigger", "counter", "--input", '{"count": 3}', "--wait", "--here")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"total": 3}
    statuses = {r["id"]: r["status"] for r in project.runs()}
    assert statuses[json.loads(other.stdout)["id"]] == "pending"
    assert sorted(statuses.values()) == ["completed", "pending"]


def _start_cli(project: Project, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        project.argv(*args),
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_while_waiting_stops_waiting_not_the_run(project: Project) -> None:
    assert project.cli("migrate").returncode == 0
    waiting = _start_cli(project, "trigger", "counter", "--wait")
    assert waiting.stderr is not None
    assert "created (counter)" in waiting.stderr.readline()  # printed once Ctrl-C is handled
    waiting.send_signal(signal.SIGINT)
    _, err = waiting.communicate(timeout=10)
    assert waiting.returncode == 130, err
    assert "stopped waiting; run" in err and "continues (pending)" in err and "runs watch" in err
    assert [r["status"] for r in project.runs()] == ["pending"]


def test_ctrl_c_with_here_releases_the_run(project: Project) -> None:
    assert project.cli("migrate").returncode == 0
    here = _start_cli(project, "trigger", "slow", "--input", '{"seconds": 30}', "--here")
    wait_for(lambda: project.runs("status = 'running'"), 10, "the run to start here")
    here.send_signal(signal.SIGINT)
    _, err = here.communicate(timeout=15)
    assert here.returncode == 130, err
    assert "released" in err
    (run,) = project.runs()
    assert run["status"] == "pending" and run["worker_id"] is None


def test_schedules_reload_without_restart_and_a_broken_file_changes_nothing(project: Project) -> None:
    project.schedules.write_text(EVERY_SECOND)
    serve = project.serve()
    wait_for(lambda: project.completed("tick") >= 1, 10, "the first schedule to fire")

    project.schedules.write_text(EVERY_SECOND + '  second:\n    cron: "*/1 * * * * *"\n    job: other\n')
    wait_for(lambda: project.completed("second") >= 2, 10, "the added schedule to fire")
    assert "schedules reloaded from schedules.yaml: added second; 2 schedules" in project.log(serve)

    project.schedules.write_text(EVERY_SECOND + "  broken:\n    cron: nope\n    job: other\n")
    wait_for(lambda: "schedules not reloaded" in project.log(serve), 10, "the reload error to be logged")
    errors = [line for line in project.log(serve).splitlines() if "schedules not reloaded" in line]
    assert len(errors) == 1 and "schedules.yaml:" in errors[0] and "cron" in errors[0], errors
    before = project.completed("tick"), project.completed("second")
    wait_for(
        lambda: project.completed("tick") > before[0] + 1 and project.completed("second") > before[1] + 1,
        10,
        "the last good schedules to keep firing",
    )
    assert not project.runs("schedule_name = 'broken'")

    # The reload line names what changed; moving a schedule to another line is no change.
    project.schedules.write_text("# moved down\n" + EVERY_SECOND.replace("overlap: allow", "overlap: skip"))
    wait_for(lambda: "removed second" in project.log(serve), 10, "the next reload to be logged")
    reloaded = [line for line in project.log(serve).splitlines() if "schedules reloaded" in line]
    assert reloaded[-1].endswith(
        "schedules reloaded from schedules.yaml: removed second; changed tick (overlap); 1 schedule"
    )
    assert stop(serve)[0] == 0


def test_sigterm_releases_a_run_whose_step_outlasts_the_grace(project: Project) -> None:
    serve = project.serve("--no-scheduler", "--stop-grace", "1")
    trigger = project.cli("trigger", "slow", "--input", '{"seconds": 30}', "--json")
    run_id = json.loads(trigger.stdout)["id"]
    wait_for(lambda: project.runs(f"id = '{run_id}' AND status = 'running'"), 10, "the run to start")
    code, took = stop(serve)
    assert code == 0, project.log(serve)
    assert took < 4, f"stopping took {took:.1f}s with --stop-grace 1"
    (run,) = project.runs(f"id = '{run_id}'")
    assert run["status"] == "pending" and run["worker_id"] is None, "the lease was not released"
    # The sync step still sleeping on its thread is found and reported, not silently cut off.
    assert "1 step(s) still running after the graceful stop" in project.log(serve)


def test_a_second_sigint_exits_at_once(project: Project) -> None:
    serve = project.serve("--no-scheduler", "--stop-grace", "30")
    trigger = project.cli("trigger", "slow", "--input", '{"seconds": 30}', "--json")
    run_id = json.loads(trigger.stdout)["id"]
    wait_for(lambda: project.runs(f"id = '{run_id}' AND status = 'running'"), 10, "the run to start")
    serve.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping gracefully" in project.log(serve), 5, "the graceful stop to begin")
    assert serve.poll() is None  # the 30 s step holds the graceful stop
    code, took = stop(serve, signal.SIGINT, timeout=5)
    assert code == 130
    assert took < 2
    assert "exiting at once" in project.log(serve)


def test_serve_with_an_invalid_schedules_file_exits_2_with_one_line(project: Project) -> None:
    project.schedules.write_text(EVERY_SECOND.replace("job: tick", "job: nope"))
    proc = project.cli("serve", *FAST, timeout=20)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "schedules.yaml:4" in lines[0] and "unknown job 'nope'" in lines[0], (
        proc.stderr
    )
    assert not project.db.exists()
