"""examples/fastapi_app.py under a real uvicorn: the host app's endpoint triggers a durable job,
the lifespan's worker runs it, the mounted dashboard and API show it, the scheduler is ready, and
the app stops cleanly on SIGTERM (the host server owns the signals), and durably-sched's own log lines
about the run are on the host server's stderr, once each."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .serve_procs import ROOT, wait_for

pytestmark = pytest.mark.system


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_fastapi_example_runs_jobs_and_serves_the_dashboard(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env.update(
        PYTHONPATH=str(ROOT),
        DURABLY_DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}",
        DURABLY_HTTP_TOKEN="example-token-0123456789",
    )
    log = tmp_path / "uvicorn.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip
    auth = {"Authorization": "Bearer example-token-0123456789"}
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(base + "/durably/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "the example app listening")
        with httpx.Client(base_url=base, timeout=10, follow_redirects=True) as http:
            run_id = http.post("/reports", params={"days": 3}).json()["run_id"]
            run = wait_for(
                lambda: (
                    (r := http.get(f"/durably/api/runs/{run_id}", headers=auth).json()["run"])["status"]
                    == "completed"
                    and r
                ),
                30,
                "report completed",
            )
            assert run["output"] == {"lines": 33} and run["progress"]["current"] == 3
            assert http.get(f"/durably/api/runs/{run_id}").status_code == 401  # the token is required
            ready = http.get("/durably/readyz").json()
            assert ready["status"] == "ready" and ready["checks"]["scheduler"]["status"] == "ok"
            schedules = http.get("/durably/api/schedules", headers=auth).json()["schedules"]
            assert [s["name"] for s in schedules] == ["daily-report"]
            login = http.get("/durably/")
            assert login.status_code == 200 and 'action="/durably/login"' in login.text  # redirected
            page = http.post(
                "/durably/login", content="token=example-token-0123456789&next=/durably/runs",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
            assert page.status_code == 200 and run_id[:8] in page.text
            assert re.search(r'href="/durably/runs/' + run_id, page.text)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    # uvicorn re-raises the signal it caught once its shut-down is complete, so the exit status is
    # "terminated by SIGTERM" after a clean lifespan shut-down.
    assert code in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()
    completed = re.findall(rf"INFO  report {run_id[:8]}: run completed in ", log.read_text())
    assert len(completed) == 1, log.read_text()
