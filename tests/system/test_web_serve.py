"""`serve --http` across processes, and its refusals.

What users rely on: a run executing in a second `serve` process (here: a worker-only process on the
same database) streams its progress, steps and end to a client of the first; a non-loopback --http
without a token is refused with one line, before anything starts; SIGTERM with open streams still
exits 0 promptly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .serve_procs import ROOT, wait_for

pytestmark = pytest.mark.system

JOBS = """\
import asyncio

from durably_sched import define_job


async def slow(step, payload):
    for i in range(payload.get("count", 5)):
        await step.run(f"s{i}", lambda i=i: i)
        step.log.info("step done", i=i)
        await step.progress(i + 1, payload.get("count", 5))
        await asyncio.sleep(payload.get("pause", 0.3))
    return {"ok": True}


slow_job = define_job(name="slow", run=slow)
"""


def env_for(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env["PYTHONPATH"] = f"{workdir}{os.pathsep}{ROOT}"
    return env


def start(workdir: Path, database: str, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = workdir / f"{name}.log"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "durably_sched.cli", "--database", database, "--jobs", "webjobs",
            "--schedules", str(workdir / "none.yaml"), "serve", "--polling-interval", "0.1",
            "--stale-threshold", "30", *args,
        ],
        cwd=workdir, env=env_for(workdir), stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip
    return proc, log


def stop(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError(
            f"serve did not stop within {timeout}s of SIGTERM:\n{log.read_text()[-3000:]}"
        ) from None


def sse_events(response: httpx.Response) -> list[tuple[str, Any]]:
    """A server-sent event stream read to its end: (event type, its data decoded)."""
    events: list[tuple[str, Any]] = []
    kind = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[6:])))
    return events


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "webjobs.py").write_text(JOBS)
    return tmp_path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, workdir: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{workdir / 'web.db'}"
    else:
        yield request.getfixturevalue("postgres_schema_url")


def test_a_run_in_another_serve_streams_to_a_client_of_the_first(workdir: Path, database: str) -> None:
    # The first process serves HTTP with a worker of one slot that a blocking run keeps busy; the
    # second process only works, so it executes the watched run.
    web, web_log = start(
        workdir, database, "web", "--no-scheduler", "--http", "127.0.0.1:0", "--concurrency", "1",
        "--stop-grace", "2",
    )  # fmt: skip
    worker, worker_log = None, None
    try:
        port = wait_for(lambda: _port(web, web_log), 60, "web serve listening")
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=60, headers={"X-Durably-CSRF": "1"}
        ) as http:
            # The web process's own worker is kept busy, so the second process executes the run.
            blocker = http.post("/api/jobs/slow/trigger", json={"input": {"count": 1, "pause": 30}})
            assert blocker.status_code == 201
            wait_for(
                lambda: (
                    http.get(f"/api/runs/{blocker.json()['run']['id']}").json()["run"]["status"] == "running"
                ),
                30,
                "blocker running",
            )
            # Only now the second process: the blocker is held by the first, whose one slot is full.
            # It takes over the blocker when the first stops: a short grace, or its stop waits for it.
            worker, worker_log = start(workdir, database, "worker", "--no-scheduler", "--stop-grace", "1")
            wait_for(lambda: "serve started" in worker_log.read_text(), 60, "worker serve started")
            made = http.post("/api/jobs/slow/trigger", json={"input": {"count": 6, "pause": 0.3}}).json()[
                "run"
            ]
            with http.stream("GET", f"/api/runs/{made['id']}/events") as response:
                events = sse_events(response)
            kinds = [k for k, _ in events]
            assert kinds[0] == "run:snapshot" and kinds[-1] == "run:complete", kinds
            progress = [d["progress"]["current"] for k, d in events if k == "run:progress"]  # type: ignore[index]
            assert len(progress) >= 3 and progress == sorted(progress) and progress[-1] == 6, kinds
            assert len([k for k in kinds if k == "log:write"]) >= 3
            final = http.get(f"/api/runs/{made['id']}").json()["run"]
            assert final["status"] == "completed" and final["worker_id"] is not None
            blocker_run = http.get(f"/api/runs/{blocker.json()['run']['id']}").json()["run"]
            assert final["worker_id"] != blocker_run["worker_id"]  # executed by the other process
            # An open stream does not hold up a graceful stop.
            with http.stream("GET", "/api/runs/events") as response:
                assert response.status_code == 200
                started = time.monotonic()
                web.send_signal(signal.SIGTERM)
                for _ in response.iter_lines():
                    pass  # the stream ends when the server stops
            assert web.wait(60) == 0, web_log.read_text()[-3000:]
            assert time.monotonic() - started < 30
    finally:
        stop(web, web_log)
        if worker is not None and worker_log is not None:
            stop(worker, worker_log)
    assert "Traceback" not in web_log.read_text(), web_log.read_text()[-3000:]


def test_a_dashboard_only_serve_streams_the_runs_a_worker_serve_executes(
    workdir: Path, database: str
) -> None:
    # `serve --no-scheduler --no-worker --http`: the dashboard and the API in a process of their own,
    # so that their streams do not take the workers' CPU (docs/deploying.md).
    web, web_log = start(workdir, database, "web", "--no-scheduler", "--no-worker", "--http", "127.0.0.1:0")
    worker, worker_log = start(workdir, database, "worker", "--no-scheduler", "--stop-grace", "1")
    try:
        port = wait_for(lambda: _port(web, web_log), 60, "dashboard serve listening")
        wait_for(lambda: "serve started" in worker_log.read_text(), 60, "worker serve started")
        assert "serve started: dashboard and API only (no scheduler, no worker)" in web_log.read_text()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=60, headers={"X-Durably-CSRF": "1"}
        ) as http:
            ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert set(ready.json()["checks"]) == {"database", "schema"}  # no worker to wait for
            made = http.post("/api/jobs/slow/trigger", json={"input": {"count": 4, "pause": 0.2}})
            assert made.status_code == 201, made.text
            run_id = made.json()["run"]["id"]
            with http.stream("GET", f"/api/runs/{run_id}/events") as response:
                metrics = http.get("/metrics").text
                assert re.search(r"^durably_stream_subscribers 1\.0$", metrics, re.M), metrics
                events = sse_events(response)
            kinds = [k for k, _ in events]
            assert kinds[0] == "run:snapshot" and kinds[-1] == "run:complete", kinds
            # Every step once: those done before the stream opened in its snapshot, the rest streamed.
            names = [s["name"] for s in events[0][1]["steps"]]
            names += [d["step_name"] for k, d in events if k == "step:complete"]
            assert names == ["s0", "s1", "s2", "s3"], kinds
            workers = http.get("/api/workers").json()["workers"]
            assert len(workers) == 1, workers  # the dashboard serve executes nothing, so is no worker
            assert http.get(f"/api/runs/{run_id}").json()["run"]["worker_id"] == workers[0]["id"]
    finally:
        assert stop(web, web_log) == 0
        stop(worker, worker_log)
    assert "Traceback" not in web_log.read_text(), web_log.read_text()[-3000:]


def _port(proc: subprocess.Popen[bytes], log: Path) -> int | None:
    assert proc.poll() is None, log.read_text()
    found = re.search(r"/metrics on http://127\.0\.0\.1:(\d+)", log.read_text())
    return int(found.group(1)) if found else None


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--http", "0.0.0.0:0"], {}, "--http 0.0.0.0:0: not a loopback address"),
        (["--http", "192.0.2.1:8080"], {}, "give a token with --http-token-file FILE or DURABLY_HTTP_TOKEN"),
        (
            ["--http", "0.0.0.0:0"],
            {"DURABLY_HTTP_TOKEN": "short"},
            "DURABLY_HTTP_TOKEN: a token must be at least 16",
        ),
        (
            ["--http", "0.0.0.0:0", "--http-token-file", "missing.txt"],
            {},
            "--http-token-file: cannot read missing.txt",
        ),
        (["--http-token-file", "token.txt"], {}, "need --http HOST:PORT"),
        (
            ["--http", "127.0.0.1:0", "--http-read-token-file", "token.txt"],
            {},
            "--http-read-token-file needs --http-token-file",
        ),
    ],
)
def test_serve_refuses_an_open_network_bind(
    workdir: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    (workdir / "token.txt").write_text("a-long-enough-token-123\n")
    result = subprocess.run(
        [
            sys.executable, "-m", "durably_sched.cli", "--database", f"sqlite:///{workdir / 'x.db'}",
            "--jobs", "webjobs", "serve", *args,
        ],
        cwd=workdir, env={**env_for(workdir), **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (workdir / "x.db").exists()  # refused before anything was created
