"""The run page of a waiting run in a real headless Chromium against a real `durably-sched serve
--http` (issue 24): it says what the run waits for, links a parent to its children and a child to
its parent, and a cancel from the page cancels the parent and its children."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_dashboard import CHROMIUM, FLAGS
from tests.system.serve_procs import HERE, ROOT, http_base, wait_for

pytestmark = pytest.mark.system
TOKEN = "waits-browser-token-0123456789"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    pytest.importorskip("playwright.sync_api")
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "schedules.yaml").write_text("schedules: {}\n")
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env.update(PYTHONPATH=f"{HERE}{os.pathsep}{ROOT}", CHAOS_EFFECTS=str(tmp_path / "effects"))
    database = f"sqlite:///{tmp_path / 'd.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "durably_sched.cli", "--database", database, "--jobs", "wait_jobs",
         "serve", "--no-scheduler", "--http", "127.0.0.1:0", "--http-token-file", str(tmp_path / "token"),
         "--polling-interval", "0.1"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip

    try:
        yield http_base(proc, log), tmp_path
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _api(page: Any, base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if body is None:
        return page.request.get(base + path, headers=headers).json()
    return page.request.post(base + path, headers=headers, data=json.dumps(body)).json()


def test_the_run_page_shows_the_wait_and_links_parent_and_children(served: tuple[str, Path]) -> None:
    from playwright.sync_api import sync_playwright

    base, work = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.set_default_timeout(20_000)
            page.on("dialog", lambda dialog: dialog.accept())
            parent = _api(page, base, "/api/jobs/parent/trigger", {"input": {"n": 2}})["run"]["id"]
            wait_for(
                lambda: _api(page, base, f"/api/runs/{parent}")["run"]["status"] == "completed", 30, "done"
            )
            # A child that waits for an event: a parent of one approval.
            page.goto(base + "/")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(base + "/")
            run = _api(page, base, "/api/jobs/approval/trigger", {"input": {"key": "approve:x"}})["run"]["id"]
            wait_for(
                lambda: _api(page, base, f"/api/runs/{run}")["run"]["status"] == "waiting", 30, "waiting"
            )
            page.goto(f"{base}/runs/{run}")
            waiting = page.locator('[data-field="waiting-for"]').inner_text()
            assert (
                waiting.startswith("waiting for event approve:x (until ") and "(step 'approval')" in waiting
            )
            assert page.locator(".status.big").inner_text() == "waiting"
            page.screenshot(path=str(work / "waiting-run.png"), full_page=True)  # for a person to look at
            # A completed parent lists its children; a child links back to its parent.
            page.goto(f"{base}/runs/{parent}")
            links = page.locator('[data-field="children"] a')
            assert links.count() == 2
            links.first.click()
            page.wait_for_url(re.compile(r"/runs/"))
            page.locator('[data-field="parent"] a').click()
            page.wait_for_url(f"{base}/runs/{parent}")
            # Cancel the waiting run from its page.
            page.goto(f"{base}/runs/{run}")
            page.click('button[data-action="cancel"]')
            wait_for(
                lambda: _api(page, base, f"/api/runs/{run}")["run"]["status"] == "cancelled", 20, "cancel"
            )
        finally:
            browser.close()
