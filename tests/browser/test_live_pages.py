"""Pages that stay live, and the pictures, in a real headless Chromium against a real `serve --http`
(the fixtures of test_dashboard: the example project plus a `slow` schedule every 2 s).

What an operator relies on: a running run's duration counts up without a reload, and a finished run's
step timeline spans the run however late its page is opened; the workers page follows heartbeats and
schedule buckets by itself; a schedule's page
shows new fire times in its strip, its durations chart and its history without a reload; the home
page has a sparkline per schedule; the runs list shows why a run failed; the filter boxes' hints do
not look like values. Screenshots (``screenshots/live-*.png`` in the test's tmp dir) are for a person
to look at.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from durably_sched.store import open_store
from durably_sched.store.base import NewRun
from tests.browser.test_dashboard import TOKEN, browser, served, shot  # noqa: F401  (fixtures)

STRIP_SQUARES = "document.querySelectorAll('svg.chart.strip rect').length"


def _api_trigger(page: Any, job: str, payload: dict[str, Any]) -> str:
    run_id: str = page.evaluate(
        """async ([job, input]) => {
            const csrf = document.querySelector('meta[name=durably-csrf]').content;
            const r = await fetch(`/api/jobs/${job}/trigger`, {method: 'POST', credentials: 'same-origin',
                headers: {'Content-Type': 'application/json', 'X-Durably-CSRF': csrf},
                body: JSON.stringify({input})});
            return (await r.json()).run.id;
        }""",
        [job, payload],
    )
    return run_id


async def _failed_run(db: Path) -> str:
    """A failed run written through the store (serve's log stays free of tracebacks): a job this
    serve does not have, claimed and failed here."""
    store = open_store(f"sqlite:///{db}")
    await store.connect()
    try:
        run = NewRun(id=str(uuid.uuid4()), job_name="offline-job", input={})
        [(record, _)] = await store.create_runs([run])
        [claimed] = await store.claim("w-browser-test", ["offline-job"], 1, 30)
        await store.fail_run(claimed.id, claimed.generation, "ConnectionError: upstream said <503>", "fetch")
        return record.id
    finally:
        await store.close()


def test_live_pages_and_pictures(served: tuple[str, Path], browser: Any) -> None:  # noqa: F811
    base, work = served
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(base + "/login")
    if "/login" in page.url:
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")

    # A failing run (a missing image file) for the error column; a slow run to watch.
    with ThreadPoolExecutor(1) as pool:  # playwright's sync API holds this thread's event loop
        failing = pool.submit(asyncio.run, _failed_run(work / "d.db")).result()
    slow = _api_trigger(page, "many-steps", {"count": 12, "step_seconds": 0.5})

    # The run page: the duration counts up while the run runs, without a reload.
    page.goto(f"{base}/runs/{slow}")
    page.wait_for_function("document.querySelector('[data-field=status]')?.textContent === 'running'")
    page.evaluate("window.__sameDocument = true")
    first = page.locator('[data-field="duration"]').inner_text()
    page.wait_for_function(
        "([before]) => document.querySelector('[data-field=duration]').textContent !== before",
        arg=[first],
    )
    assert re.match(r"\d", page.locator('[data-field="duration"]').inner_text())
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator('[data-field="status"]').inner_text() == "running"
    shot(page, work, "live-run-ticking")

    # The schedule page: new fire times arrive in the strip, the chart and the history by themselves.
    page.goto(base + "/schedules/slow")
    page.wait_for_function(f"{STRIP_SQUARES} >= 3")
    page.evaluate("window.__sameDocument = true")
    squares = page.evaluate(STRIP_SQUARES)
    rows = page.locator("table.history tbody tr").count()
    page.wait_for_function(f"{STRIP_SQUARES} > {squares} || {STRIP_SQUARES} === 50")
    page.wait_for_function(
        f"document.querySelectorAll('table.history tbody tr').length > {rows} || {rows} === 50"
    )
    assert page.evaluate("window.__sameDocument") is True
    assert int(page.get_attribute("[data-live-schedule]", "data-refreshes") or 0) >= 1
    strip = page.locator("svg.chart.strip")
    assert strip.get_attribute("role") == "img"
    assert re.match(
        r"Recent fire times of slow: \d+ fire times, oldest first: ", strip.get_attribute("aria-label") or ""
    )
    kinds = set(
        page.evaluate("[...document.querySelectorAll('svg.chart.strip rect')].map(r => r.classList[0])")
    )
    assert kinds & {"k-completed", "k-running"} and kinds & {"k-skipped"}, kinds  # overlap: skip
    legend = page.locator(".legend").inner_text()
    assert "skipped" in legend
    assert page.locator("svg.chart.durations rect").count() >= 1
    # Colour comes from the stylesheet: a completed square is green, a skipped one orange.
    fill = page.evaluate("getComputedStyle(document.querySelector('svg.chart.strip rect.k-skipped')).fill")
    assert fill == "rgb(255, 146, 43)", fill
    shot(page, work, "live-schedule")

    # The home page: a sparkline per schedule, the slow one with runs.
    page.goto(base + "/")
    spark = page.locator('tr[data-schedule="slow"] svg.chart.spark')
    label = spark.get_attribute("aria-label") or ""
    found = re.match(r"slow, last 24 hours: (\d+) runs, (\d+) failed", label)
    assert found and int(found.group(1)) >= 1, label
    total = page.locator('tr[data-schedule="slow"] [data-field="spark-total"]').inner_text()
    assert total.startswith(f"{found.group(1)} run"), total
    assert page.locator("svg.chart.spark").count() == page.locator("table.schedules tbody tr").count()
    shot(page, work, "live-home")

    # The runs list: the failed run's error; hints, not values, in the filter boxes.
    page.goto(f"{base}/runs/{failing}")
    page.wait_for_function("document.querySelector('[data-field=status]')?.textContent === 'failed'")
    page.goto(base + "/runs")
    error = page.locator(f'tr[data-run-id="{failing}"] [data-field="error"]').inner_text()
    assert error == "fetch: ConnectionError: upstream said <503>", error
    for box in page.locator("form[data-filters] input[placeholder]").all():
        assert (box.get_attribute("placeholder") or "").startswith("e.g. ")
        assert box.input_value() == ""
        style = box.evaluate("b => getComputedStyle(b, '::placeholder').fontStyle")
        assert style == "italic", style
    shot(page, work, "live-runs")
    # The workers page reads itself again every few seconds (heartbeats, buckets), without a reload;
    # the serve's scheduler owns every schedule bucket.
    page.goto(base + "/workers")
    page.evaluate("window.__sameDocument = true")
    page.wait_for_function(
        "Number(document.querySelector('[data-live-workers]').dataset.refreshes || 0) >= 1"
    )
    assert page.evaluate("window.__sameDocument") is True
    buckets = page.locator('tr[data-scheduler] [data-field="buckets"]').all_inner_texts()
    assert buckets == ["256 / 256"], buckets
    assert page.locator("tr[data-worker]").count() >= 1
    shot(page, work, "live-workers")

    # The finished slow run's page, opened as if ten minutes after it ended (the browser's clock is
    # moved, the server's is not): its step timeline spans the run, so the last step's bar ends at
    # the right edge, where the page rendered by the server put it too.
    page.goto(f"{base}/runs/{slow}")
    page.wait_for_function("document.querySelector('[data-field=status]')?.textContent === 'completed'")
    late = browser.new_page()
    late.clock.set_fixed_time(datetime.now(UTC) + timedelta(minutes=10))
    late.goto(f"{base}/runs/{slow}", wait_until="networkidle")  # its stream closes after the snapshot
    ends = late.evaluate(
        "[...document.querySelectorAll('[data-steps] .bar')]"
        ".map(b => parseFloat(b.style.marginLeft) + parseFloat(b.style.width))"
    )
    assert len(ends) == 12 and max(ends) > 90, ends
    late.close()
