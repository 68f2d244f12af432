"""The dashboard's pictures and live pages, through httpx against the ASGI app, on both backends:
the fire-time strip and the durations chart of a schedule, the runs/failures sparklines of the
home page, the runs list's error column; and the SVG builders on their own (escaping, the words
a screen reader gets).

What an operator relies on: each fire time's square has the colour of what became of it (its run's
status now, or the record's outcome) and links to its run; the sparklines count the runs and failed
runs of the last 24 hours per schedule, read in one query however many schedules there are.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from durably_sched import Durably
from durably_sched.store.base import ScheduleActivity, Store
from durably_sched.web import charts
from tests.web.test_api import client, idle  # noqa: F401  (fixture)

# -- the SVG builders ---------------------------------------------------------------------------------


def test_the_strip_escapes_its_text_and_says_what_it_shows() -> None:
    cells = [
        charts.Cell("completed", 'a <script>alert("x")</script>', "/runs/1?a=1&b=2"),
        charts.Cell("failed", "second", None),
        charts.Cell("failed", "third", None),
    ]
    svg = str(charts.fire_strip(cells, label='sched "<b>"'))
    assert "<script>" not in svg and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in svg
    assert '<a href="/runs/1?a=1&amp;b=2">' in svg
    assert svg.startswith('<svg class="chart strip"') and 'role="img"' in svg
    label = re.search(r'aria-label="([^"]*)"', svg)
    assert label is not None
    assert label.group(1) == "sched &#34;&lt;b&gt;&#34;: 3 fire times, oldest first: 1 completed, 2 failed"
    assert [m for m in re.findall(r'class="k-(\w+)"', svg)] == ["completed", "failed", "failed"]
    assert str(charts.fire_strip([], label="x")) == ""


def test_the_durations_chart_scales_to_the_longest_run() -> None:
    bars = [
        charts.Bar(1.0, "completed", "a"),
        charts.Bar(4.0, "failed", "b"),
        charts.Bar(2.0, "running", "c"),
    ]
    svg = str(charts.duration_chart(bars, label="d"))
    heights = [
        float(h)
        for h in re.findall(
            r'<rect class="k-\w+" x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"', svg
        )
    ]
    assert heights[1] == max(heights) and heights[0] == pytest.approx(heights[1] / 4, abs=0.1)
    assert heights[2] == pytest.approx(heights[1] / 2, abs=0.1)
    assert ">4.0 s</text>" in svg and "longest 4.0 s, shortest 1.0 s" in svg


def test_the_sparkline_draws_runs_and_failures_per_bucket() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    activity = ScheduleActivity(since, timedelta(hours=1), (0, 2, 4), (0, 1, 0))
    svg = str(charts.sparkline(activity, 3, label="s"))
    assert 'aria-label="s: 6 runs, 1 failed"' in svg
    assert svg.count('class="k-runs"') == 2 and svg.count('class="k-failed"') == 1
    assert "2026-01-01 01:00 UTC + 1h: 2 runs, 1 failed" in svg
    empty = str(charts.sparkline(None, 24, label="quiet"))
    assert 'aria-label="quiet: 0 runs, 0 failed"' in empty and "k-runs" not in empty


# -- the pages ----------------------------------------------------------------------------------------


async def _settle(durably: Durably, run_ids: list[str]) -> dict[str, str]:
    """Make the four runs completed, failed, cancelled and pending (claimed through the store, one
    at a time as overlap: queue allows, in the order the store hands them out)."""
    store: Store = durably.store
    statuses: dict[str, str] = {}

    async def claim() -> tuple[str, int]:
        [run] = await store.claim("w-test", ["counted"], 1, 30)
        return run.id, run.generation

    done, generation = await claim()
    assert await store.complete_run(done, generation, {"ok": 1}) == "ok"
    bad, generation = await claim()
    assert await store.fail_run(bad, generation, "RuntimeError: boom <b>", "explode") == "ok"
    gone = next(r for r in run_ids if r not in (done, bad))
    await durably.cancel(gone)
    waiting, generation = await claim()
    assert await store.release_run(waiting, generation) == "ok"
    statuses.update({done: "completed", bad: "failed", gone: "cancelled", waiting: "pending"})
    assert set(statuses) == set(run_ids)
    return statuses


@pytest.fixture
def counted_queries(idle: Durably) -> Iterator[list[Any]]:  # noqa: F811
    calls: list[Any] = []
    real = idle.store.schedule_activity

    async def counting(*args: Any) -> Any:
        calls.append(args)
        return await real(*args)

    idle.store.schedule_activity = counting  # type: ignore[method-assign]
    yield calls
    idle.store.schedule_activity = real  # type: ignore[method-assign]


async def test_the_schedule_page_draws_its_fire_times_and_durations(
    idle: Durably,  # noqa: F811
    counted_queries: list[Any],
) -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    async with client(idle) as http:
        made = await http.post(
            "/api/schedules/hourly/backfill",
            json={
                "from": (now - timedelta(hours=4)).isoformat(),
                "to": (now - timedelta(hours=1)).isoformat(),
            },
        )
        assert made.status_code == 200, made.text
        records = await idle.store.list_fire_records("hourly", limit=10)
        run_ids = [r.run_id for r in sorted(records, key=lambda r: r.fire_time) if r.run_id]
        assert len(run_ids) == 4
        statuses = await _settle(idle, run_ids)

        page = (await http.get("/schedules/hourly")).text
        strip = page[page.index('<svg class="chart strip"') : page.index("</svg>", page.index("chart strip"))]
        # Oldest first, each coloured by its run's status; each square links to its run.
        assert re.findall(r'class="k-(\w+)"', strip) == [statuses[r] for r in run_ids]
        assert re.findall(r'<a href="/runs/([0-9a-f-]{36})">', strip) == run_ids
        summary = re.search(r'aria-label="[^"]*: 4 fire times, oldest first: ([^"]*)"', strip)
        assert summary is not None
        assert sorted(summary.group(1).split(", ")) == ["1 cancelled", "1 completed", "1 failed", "1 pending"]
        legend = re.findall(r'<span class="swatch k-(\w+)"></span>(\w+)</span>', page)
        assert [k for k, _ in legend] == ["completed", "failed", "pending", "cancelled"]  # fixed order
        # Durations: the runs that started (completed and failed; the cancelled and the released
        # one never ran to an end here, the released one started and counts up to its release).
        durations = page[page.index('<svg class="chart durations"') :]
        durations = durations[: durations.index("</svg>")]
        assert set(re.findall(r'class="k-(\w+)"', durations)) <= {"completed", "failed", "pending"}
        assert {"completed", "failed"} <= set(re.findall(r'class="k-(\w+)"', durations))
        assert "boom <b>" not in page  # the error is escaped wherever it shows

        # The runs list has the error column: the failed step and the error, escaped.
        runs = (await http.get("/runs")).text
        assert "<th>Error</th>" in runs
        assert '<span class="mono">explode</span>: RuntimeError: boom &lt;b&gt;' in runs
        for hint in re.findall(r'placeholder="([^"]*)"', runs):
            assert hint.startswith("e.g. "), hint

        # The home page: one sparkline per schedule, from one query for all of them.
        home = (await http.get("/")).text
        assert len(counted_queries) == 1
        assert 'aria-label="hourly, last 24 hours: 4 runs, 1 failed"' in home
        assert 'aria-label="skippy, last 24 hours: 0 runs, 0 failed"' in home
