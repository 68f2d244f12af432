"""The dashboard in a real headless Chromium against a real `durably-sched serve --http`.

What an operator relies on: logging in with the token, seeing the example schedules with their next
fire times, triggering a multi-step job from its form and watching its progress bar move without
reloading, cancelling and retrying it, reading its steps and logs, and finding a skipped tick in a
schedule's history. Screenshots of the main pages are saved under the test's tmp dir
(``screenshots/``) for a person to look at.

Needs Debian's chromium (``/usr/bin/chromium``; ``.ci/run`` installs it) and the ``playwright``
package (its own browser download is never used).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.serve_procs import ROOT, http_base

pytestmark = pytest.mark.system
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TOKEN = "browser-test-token-0123456789"
EXTRA_SCHEDULE = """
  # Added by the browser test: a slow run every 2 s with overlap: skip, so ticks get skipped.
  slow:
    cron: "*/2 * * * * *"
    job: many-steps
    input: {count: 4, step_seconds: 1}
    overlap: skip
    catchup: none
"""
FLAKY_JOB = """
# Added by the browser test: fails its first attempt when told to, finishes its retry when told to.
import asyncio
from pathlib import Path

from durably_sched import Retry, Step, define_job


async def _until(path: Path) -> None:
    while not path.exists():
        await asyncio.sleep(0.05)


async def flaky(step: Step, payload: dict) -> dict:
    if step.failed_attempts == 0:
        await _until(Path(payload["fail"]))
        raise ConnectionError("upstream said 503")
    await _until(Path(payload["finish"]))
    return {"attempt": step.attempt}


flaky_job = define_job(name="browser-flaky", run=flaky, retry=Retry(max_attempts=3, backoff=3, jitter=0))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does it)")
    pytest.importorskip("playwright.sync_api")
    work = tmp_path_factory.mktemp("dashboard")
    shutil.copytree(ROOT / "jobs", work / "jobs")
    # The tests' own copy of the example schedules: the shipped schedules.yaml is the user's to edit.
    example = ROOT / "tests" / "fixtures" / "example" / "schedules.yaml"
    (work / "schedules.yaml").write_text(example.read_text() + EXTRA_SCHEDULE)
    (work / "jobs" / "browser_flaky.py").write_text(FLAKY_JOB)
    (work / "token").write_text(TOKEN + "\n")
    log = work / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env.update(PYTHONPATH=f"{work}{os.pathsep}{ROOT}", DURABLY_EXAMPLE_DATA=str(work / "data"))
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "durably_sched.cli", "--database", f"sqlite:///{work / 'd.db'}",
            "serve", "--http", "127.0.0.1:0", "--http-token-file", str(work / "token"),
            "--polling-interval", "0.1", "--concurrency", "6",
        ],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip

    try:
        yield http_base(proc, log), work
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        # No traceback but the one the retry test's job fails with on purpose (logged as it is retried).
        text = log.read_text()
        unexpected = [b for b in text.split("Traceback")[1:] if "browser_flaky.py" not in b[:1500]]
        assert not unexpected, text[-3000:]


@pytest.fixture(scope="module")
def browser(served: tuple[str, Path]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    _, work = served
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(work / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 900},
            bypass_csp=True,  # for the test's own wait_for_function predicates; the app's scripts are files
        )
        context.strict = p.chromium  # for a second, CSP-enforcing context in the test
        try:
            yield context
        finally:
            context.close()


def shot(page: Any, work: Path, name: str) -> None:
    folder = work / "screenshots"
    folder.mkdir(exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


PAUSE_REASON = "browser test: warehouse migration"


def answer(dialog: Any) -> None:
    if dialog.type == "prompt":
        dialog.accept(PAUSE_REASON)
    else:
        dialog.accept()


def test_an_operators_day(served: tuple[str, Path], browser: Any) -> None:
    base, work = served
    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.on("dialog", answer)  # the confirmations of cancel/retry/delete, the pause reason prompt

    # Log in: the dashboard sends a fresh browser to the login page.
    page.goto(base + "/")
    assert "/login" in page.url
    shot(page, work, "login")
    page.fill("#token", "wrong-token-000000000")
    page.click("button[type=submit]")
    assert page.locator(".error").inner_text().startswith("That token is not valid")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")

    # The example schedules with their next fire times, in the schedule's zone and the viewer's.
    rows = page.locator("table.schedules tbody tr")
    names = [rows.nth(i).get_attribute("data-schedule") for i in range(rows.count())]
    assert names[:4] == ["nightly-report", "thumbnails", "batch", "pulse"]
    nightly = page.locator('tr[data-schedule="nightly-report"] td:nth-child(4) time')
    assert re.match(r"\d{4}-\d\d-\d\d 02:00:00\+0[12]:00 · your time ", nightly.inner_text())

    # Pause it from the dashboard (a confirmation, then the reason prompt): the badge says who,
    # when and why; every scheduler sees the pause in the database. Then resume it.
    row = page.locator('tr[data-schedule="nightly-report"]')
    row.locator('button[data-action="pause"]').click()
    row.locator('[data-field="paused"]').wait_for()
    note = row.locator('[data-field="pause-note"]').inner_text()
    assert "paused by http:127.0.0.1" in note and PAUSE_REASON in note, note
    assert re.search(r"· \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", note), note  # when, in the viewer's time
    shot(page, work, "schedules-paused")
    page.goto(base + "/schedules/nightly-report")
    assert page.locator('[data-field="paused"]').inner_text() == "paused"
    assert PAUSE_REASON in page.locator('[data-field="pause-note"]').inner_text()
    shot(page, work, "schedule-paused")
    page.click('button[data-action="resume"]:not([data-catchup])')
    page.locator('[data-field="active"]').wait_for()
    assert page.locator('button[data-action="pause"]').count() == 1
    page.goto(base + "/")
    assert row.locator('[data-field="active"]').count() == 1

    # The workers page: this serve's worker, live, with the example jobs; no warning.
    page.goto(base + "/workers")
    worker = page.locator("table.workers tbody tr[data-worker]")
    assert worker.count() == 1 and worker.locator(".badge.worker").inner_text() == "live"
    assert "many-steps" in worker.inner_text() and page.locator(".banner.warn").count() == 0
    shot(page, work, "workers")

    # Trigger a multi-step job from its form and watch the progress bar advance without a reload.
    page.goto(base + "/jobs")
    shot(page, work, "jobs")
    form = page.locator('form[data-trigger-job="many-steps"]')
    form.locator('input[name="count"]').fill("40")
    form.locator('input[name="step_seconds"]').fill("0.1")
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}$"))
    run_url = page.url
    page.evaluate("window.__sameDocument = true")
    page.wait_for_function("document.querySelector('progress[data-field=bar]')?.value >= 3")
    first = page.evaluate("document.querySelector('progress[data-field=bar]').value")
    page.wait_for_function(f"document.querySelector('progress[data-field=bar]')?.value > {first}")
    assert page.evaluate("window.__sameDocument") is True  # live, not reloaded
    assert page.locator('[data-field="status"]').inner_text() == "running"
    shot(page, work, "run-running")

    # Cancel it (after its current step), then retry it: it resumes and completes. (Both actions
    # reload the page: the predicates must hold across a document without the element.)
    page.click('button[data-action="cancel"]')
    page.wait_for_function("document.querySelector('[data-field=status]')?.textContent === 'cancelled'")
    page.goto(run_url)
    done_before_retry = page.locator("tbody[data-steps] tr").count()
    assert 0 < done_before_retry < 40
    page.click('button[data-action="retry"]')
    page.wait_for_load_state()
    page.wait_for_function(
        "document.querySelector('[data-field=status]')?.textContent === 'completed'", timeout=60_000
    )
    page.goto(run_url)
    assert page.locator('[data-field="status"]').inner_text() == "completed"
    assert page.locator("tbody[data-steps] tr").count() == 40
    assert "all steps done" in page.locator("tbody[data-logs]").inner_text()
    assert '"steps": 40' in page.locator('[data-field="output"]').inner_text()
    assert page.locator('[data-field="attempt"]').inner_text() == "2"
    shot(page, work, "run-done")

    # The runs list, live; then a schedule whose history shows skipped ticks.
    page.goto(base + "/runs")
    assert page.locator("table.runs tbody tr").count() > 1
    shot(page, work, "runs")
    page.goto(base + "/schedules/slow")
    for _ in range(60):
        if "skipped" in page.locator("table.history").inner_text():
            break
        page.wait_for_timeout(500)
        page.reload()
    assert "skipped" in page.locator("table.history").inner_text()
    shot(page, work, "schedule")
    page.goto(base + "/")
    shot(page, work, "dashboard")

    # The pages' own scripts run under the Content-Security-Policy (the context above bypasses it
    # for the test's predicates): same session, a browser that enforces it, no console errors.
    strict = browser.strict.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
    try:
        checked = strict.new_context()
        checked.add_cookies(browser.cookies())
        errors: list[str] = []
        view = checked.new_page()
        view.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        view.on("pageerror", lambda exc: errors.append(str(exc)))
        for path in ("/runs", run_url.removeprefix(base), "/schedules/slow", "/jobs", "/workers", "/"):
            view.goto(base + path)
            view.wait_for_timeout(300)  # let app.js run and its streams connect
        assert "your time" in view.content()  # app.js ran on the dashboard
        assert not errors, errors
    finally:
        strict.close()


TRIGGER_FLAKY = """async ([fail, finish]) => {
  const csrf = document.querySelector('meta[name="durably-csrf"]').content;
  const response = await fetch("/api/jobs/browser-flaky/trigger", {
    method: "POST", body: JSON.stringify({input: {fail, finish}}),
    headers: {"Content-Type": "application/json", "X-Durably-CSRF": csrf},
  });
  return (await response.json()).run.id;
}"""


def test_a_retry_says_the_error_box_is_the_previous_attempts(served: tuple[str, Path], browser: Any) -> None:
    """Issue 25: while a retry waits and then runs, the run page heads the red box "Attempt 1 failed
    (failed try 1 of 3)" and says what the run does now, updated live when the retry starts; the
    attempts table keeps the failure after the run completed."""
    base, work = served
    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.goto(base + "/")
    if "/login" in page.url:  # this test alone: log in
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
    fail, finish = work / "flaky.fail", work / "flaky.finish"
    run_id = page.evaluate(TRIGGER_FLAKY, [str(fail), str(finish)])
    page.goto(f"{base}/runs/{run_id}")
    page.wait_for_function("document.querySelector('[data-field=status]')?.textContent === 'running'")
    assert page.locator("[data-failure]").count() == 0
    fail.touch()  # attempt 1 fails: the page reloads to show its error, while the retry waits
    page.wait_for_function(
        "document.querySelector('[data-field=retry-note]')?.textContent.includes('waits for its backoff')"
    )
    box = page.locator("[data-failure]")
    assert "Attempt 1 failed" in box.inner_text() and "failed try 1 of 3" in box.inner_text()
    assert "ConnectionError: upstream said 503" in box.inner_text()
    page.evaluate("window.__sameDocument = true")
    page.wait_for_function(  # the retry starts (3 s backoff): said live, without a reload
        "document.querySelector('[data-field=retry-note]')?.textContent === 'retrying: attempt 2 is running'"
    )
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator('[data-field="status"]').inner_text() == "running"
    shot(page, work, "run-retrying")
    finish.touch()
    page.wait_for_function("document.querySelector('[data-field=status]')?.textContent === 'completed'")
    page.goto(f"{base}/runs/{run_id}")
    assert page.locator("[data-failure]").count() == 0  # the run completed: no error box
    rows = page.locator("table.attempts tbody tr")
    assert rows.count() == 2
    assert "failed try 1 of 3" in rows.nth(0).inner_text() and "upstream said 503" in rows.nth(0).inner_text()
    assert "completed" in rows.nth(1).inner_text()
    shot(page, work, "run-retried")
