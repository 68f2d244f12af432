"""A real `durably-sched serve --http`: what probes, Prometheus and `durably-sched healthcheck` see.

What an operator relies on: the endpoints answer on the address given to --http, /readyz turns 503
and names the check when the database stops being usable for this version, the liveness probe does
not (so the orchestrator does not restart a process that only waits for its database), the run
counters move when runs finish, log lines are JSON with the run's identity, and SIGTERM exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from durably_sched import create_durably
from durably_sched.store.base import NewRun

from .serve_procs import ROOT, wait_for

pytestmark = pytest.mark.system

JOBS = """\
from durably_sched import define_job


async def hello(step, payload):
    await step.run("greet", lambda: "hello")
    return {"greeted": True}


hello_job = define_job(name="hello", run=hello)
"""

SCHEDULES = """\
schedules:
  greeting:
    cron: "0 3 * * *"
    job: hello
"""


def clean_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env["PYTHONPATH"] = f"{workdir}{os.pathsep}{ROOT}"
    return env


def cli(workdir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durably_sched.cli", *args],
        cwd=workdir,
        env=clean_env(workdir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fetch(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


class Process:
    def __init__(self, workdir: Path, database: str) -> None:
        self.log = workdir / "serve.log"
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "durably_sched.cli",
                "--database", database, "--jobs", "opsjobs", "--schedules", "schedules.yaml",
                "serve", "--http", "127.0.0.1:0", "--log-format", "json", "--polling-interval", "0.1",
            ],
            cwd=workdir,
            env=clean_env(workdir),
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )  # fmt: skip

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def port(self) -> int:
        def bound() -> int | None:
            assert self.proc.poll() is None, f"serve exited: {self.log.read_text()}"
            for line in self.lines():
                found = re.search(r"/metrics on http://127\.0\.0\.1:(\d+)", str(line["message"]))
                if found:
                    return int(found.group(1))
            return None

        port = wait_for(bound, 60, "serve listening")
        assert port is not None
        return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Process, str, Path]]:
    (tmp_path / "opsjobs.py").write_text(JOBS)
    (tmp_path / "schedules.yaml").write_text(SCHEDULES)
    database = f"sqlite:///{tmp_path / 'serve.db'}"
    process = Process(tmp_path, database)
    try:
        yield process, database, tmp_path
    finally:
        if process.proc.poll() is None:
            process.proc.send_signal(signal.SIGKILL)
            process.proc.wait(10)


def test_serve_http_endpoints_and_healthcheck(served: tuple[Process, str, Path]) -> None:
    process, database, workdir = served
    port = process.port()

    assert fetch(port, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    status, content_type, body = wait_for(
        lambda: (r := fetch(port, "/readyz"))[0] == 200 and r, 30, "serve ready"
    )
    assert content_type == "application/json"
    assert json.loads(body)["checks"].keys() == {"database", "schema", "scheduler", "worker"}
    assert fetch(port, "/nope")[0] == 404

    async def trigger() -> str:
        # Another process adds a run (through the store: the job is not imported here).
        durably = create_durably(database)
        try:
            await durably.connect()
            ((run, _),) = await durably.store.create_runs([NewRun(id="r-1", job_name="hello", input={})])
            return run.id
        finally:
            await durably.close()

    run_id = asyncio.run(trigger())
    # This process's counter, and the database's count (read at most a second ago).
    counted = (
        'durably_runs_finished_total{job="hello",status="completed"} 1.0',
        'durably_runs{job="hello",status="completed"} 1.0',
    )
    status, content_type, text = wait_for(
        lambda: (r := fetch(port, "/metrics"))[0] == 200 and all(c in r[2] for c in counted) and r,
        30,
        "run counted",
    )
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "durably_queue_depth 0.0" in text
    assert re.search(r'durably_build_info\{python="[\d.]+",version="[^"]+"\} 1\.0', text)

    address = f"127.0.0.1:{port}"
    alive = cli(workdir, "healthcheck", "--http", address)
    assert alive.returncode == 0, alive.stderr
    ready = cli(workdir, "healthcheck", "--http", address, "--ready")
    assert ready.returncode == 0, ready.stderr

    # The database is rolled back to an older schema: not ready (and says why), but alive.
    with sqlite3.connect(workdir / "serve.db") as conn:
        conn.execute("PRAGMA user_version = 0")
    status, _, body = fetch(port, "/readyz")
    assert status == 503
    assert json.loads(body)["checks"]["schema"]["status"] == "fail"
    not_ready = cli(workdir, "healthcheck", "--http", address, "--ready")
    assert not_ready.returncode == 1 and "503" in not_ready.stderr
    assert cli(workdir, "healthcheck", "--http", address).returncode == 0

    # Every log line is one JSON object; the run's lines carry its id and job.
    lines = process.lines()
    (completed,) = [x for x in lines if str(x["message"]).startswith("run completed in")]
    assert completed["run_id"] == run_id and completed["job"] == "hello"
    assert completed["logger"] == "durably_sched.worker" and completed["level"] == "INFO"

    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(60) == 0, process.log.read_text()
    gone = cli(workdir, "healthcheck", "--http", address)
    assert gone.returncode == 1 and "unhealthy" in gone.stderr
