"""The example in the repository (jobs/ and schedules.yaml), as the quick start runs it.

What a new user relies on: a fresh `serve` shows a run within half a minute, but the log stays
readable at a terminal (no schedule fires more often than every 30 seconds, and on average a few
fire times per minute). (That the demo draws a visible progress bar is checked on a terminal by
tests/system/test_readme.py.)
"""

from __future__ import annotations

import heapq
import itertools
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from durably_sched.cli._loader import job_inputs, load_jobs
from durably_sched.schedule.config import SchedulesConfig, load_schedules
from durably_sched.schedule.cron import fire_times

ROOT = Path(__file__).resolve().parents[2]
DAY = timedelta(days=1)


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[SchedulesConfig]:
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    jobs = load_jobs("jobs")
    yield load_schedules(ROOT / "schedules.yaml", job_inputs(jobs))
    for name in [m for m in sys.modules if m == "jobs" or m.startswith("jobs.")]:
        del sys.modules[name]


def merged_fire_times(config: SchedulesConfig, start: datetime, end: datetime) -> list[datetime]:
    streams = [fire_times(e.cron, e.timezone, start, end) for e in config.schedules.values() if e.enabled]
    return [t.astimezone(UTC) for t in heapq.merge(*(iter(s) for s in streams), key=lambda t: t.timestamp())]


@pytest.mark.parametrize(
    "start", [datetime(2026, 3, 29, 0, 0, 7, tzinfo=UTC), datetime(2026, 11, 21, 13, 59, 59, tzinfo=UTC)]
)
def test_the_example_is_lively_but_readable(example: SchedulesConfig, start: datetime) -> None:
    times = merged_fire_times(example, start, start + DAY)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise([start, *times])]
    assert max(gaps) <= 30, "a fresh serve must show a run within 30 s, whenever it starts"
    per_minute = len(times) / (DAY.total_seconds() / 60)
    assert per_minute <= 2.5, f"{per_minute:.2f} fire times a minute floods the terminal"
    for entry in example.schedules.values():
        own = list(itertools.islice(fire_times(entry.cron, entry.timezone, start), 50))
        shortest = min((b - a).total_seconds() for a, b in itertools.pairwise(own))
        assert shortest >= 30, f"schedule {entry.name} fires every {shortest:.0f}s"
