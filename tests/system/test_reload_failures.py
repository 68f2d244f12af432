"""A hostile or broken schedules.yaml reaching a running `serve`: the last good version keeps running.

What operators rely on: replacing schedules.yaml with a 574-byte "billion laughs" file (or any file
that fails to load) never hangs, grows or stops serve; it keeps its schedules, keeps answering
/healthz, stops on SIGTERM, and says what is wrong where they look: a banner on every dashboard
page, `config_errors` in GET /api/schedules, a warning in `schedules list`, and the
durably_schedules_reload_failed gauge. A good file clears all of it.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from typing import Any

from tests.unit.test_config_problems import alias_bomb

from .serve_procs import wait_for
from .test_cli_serve import EVERY_SECOND, Project, project, stop

__all__ = ["project"]

BOMB = alias_bomb().replace("job: cleanup", "job: tick")


def get(port: int, path: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": f"127.0.0.1:{port}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def api_schedules(port: int) -> dict[str, Any]:
    status, body = get(port, "/api/schedules")
    assert status == 200, body
    return dict(json.loads(body))


def test_an_alias_bomb_on_reload_keeps_the_last_good_schedules_and_is_shown(project: Project) -> None:
    project.schedules.write_text(EVERY_SECOND)
    serve = project.serve("--http", "127.0.0.1:0")
    found = re.search(r"on http://127\.0\.0\.1:(\d+)", project.log(serve))
    assert found is not None, project.log(serve)
    port = int(found.group(1))
    wait_for(lambda: project.completed("tick") >= 1, 15, "the first scheduled run")
    assert api_schedules(port)["config_errors"] == []

    assert len(BOMB.encode()) < 1000
    project.schedules.write_text(BOMB)
    written = time.monotonic()
    failure = wait_for(lambda: api_schedules(port)["config_errors"], 15, "the failed reload to be shown")
    print(f"alias bomb reload refused and shown in {time.monotonic() - written:.2f} s")
    [shown] = failure
    assert shown["path"].endswith("schedules.yaml") and shown["line"] == 10
    assert shown["message"].startswith("aliases expand to more than 10,000 nodes")
    assert shown["since"].endswith("Z") and shown["pid"] == serve.pid
    assert [s["name"] for s in api_schedules(port)["schedules"]] == ["tick"]  # the last good ones

    assert get(port, "/healthz")[0] == 200
    status, page = get(port, "/runs")
    assert status == 200 and "data-config-error" in page
    assert "schedules.yaml:10</strong>: aliases expand to more than 10,000 nodes" in page
    assert "The last good version is running." in page
    status, metrics = get(port, "/metrics")
    assert status == 200 and "\ndurably_schedules_reload_failed 1.0\n" in metrics

    (project.root / "good.yaml").write_text(EVERY_SECOND)
    listed = project.cli("--schedules", str(project.root / "good.yaml"), "schedules", "list")
    assert listed.returncode == 0, listed.stderr
    warning = [line for line in listed.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "schedules.yaml:10: aliases expand to more than 10,000 nodes" in warning[0]
    assert warning[0].endswith("the last good version is running")

    before = project.completed("tick")
    wait_for(lambda: project.completed("tick") >= before + 2, 15, "the last good schedule to keep firing")
    assert serve.poll() is None

    project.schedules.write_text(EVERY_SECOND.replace("overlap: allow", "overlap: skip"))
    wait_for(lambda: not api_schedules(port)["config_errors"], 15, "a good reload to clear the error")
    assert "data-config-error" not in get(port, "/runs")[1]
    assert "\ndurably_schedules_reload_failed 0.0\n" in get(port, "/metrics")[1]

    project.schedules.write_text("schedules:\n  deep: " + "[" * 5000 + "]" * 5000 + "\n")
    wait_for(lambda: api_schedules(port)["config_errors"], 15, "deep nesting to be refused")
    assert "nested deeper than 64 levels" in api_schedules(port)["config_errors"][0]["message"]
    assert get(port, "/healthz")[0] == 200

    code, took = stop(serve)
    print(f"SIGTERM after the failed reloads: stopped in {took:.2f} s")
    assert code == 0, project.log(serve)
    assert "Traceback" not in project.log(serve)
    # A clean stop removes this serve's row: `schedules list` warns no more.
    listed = project.cli("--schedules", str(project.root / "good.yaml"), "schedules", "list")
    assert listed.returncode == 0 and "warning" not in listed.stderr, listed.stderr
