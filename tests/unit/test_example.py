"""The example in the repository: the jobs in jobs/ and the schedules the quick start runs.

What a new user relies on:

* the shipped ``schedules.yaml`` loads and validates against the shipped jobs, whatever schedules the
  user has added to it since (its contents are the user's: nothing here asserts them);
* the example as it ships (the tests' copy, tests/fixtures/example/schedules.yaml) shows a run within
  half a minute of a fresh `serve`, but the log stays readable at a terminal (no schedule fires more
  often than every 30 seconds, and on average a few fire times per minute);
* a misspelt input field (``{"cnt": 3}``) is refused with one line naming it, not silently replaced
  by the field's default: the example jobs' input models forbid unknown fields.

(That the demo draws a visible progress bar is checked on a terminal by tests/system/test_readme.py.)
"""

from __future__ import annotations

import heapq
import itertools
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from click.testing import CliRunner

from durably_sched.cli import main
from durably_sched.cli._loader import job_inputs, load_jobs
from durably_sched.errors import ConfigError, InputValidationError
from durably_sched.jobs import JobDefinition
from durably_sched.schedule.config import SchedulesConfig, load_schedules, parse_schedules
from durably_sched.schedule.cron import fire_times

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "example" / "schedules.yaml"
DAY = timedelta(days=1)
Jobs: TypeAlias = dict[str, JobDefinition[Any, Any]]


@pytest.fixture
def example_jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Jobs]:
    """The jobs package in jobs/, imported as `serve` imports it from the repository root."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield load_jobs("jobs")
    for name in [m for m in sys.modules if m == "jobs" or m.startswith("jobs.")]:
        del sys.modules[name]


@pytest.fixture
def example(example_jobs: Jobs) -> SchedulesConfig:
    return load_schedules(FIXTURE, job_inputs(example_jobs))


def test_the_shipped_example_files_load_and_validate(example_jobs: Jobs) -> None:
    assert example_jobs, "jobs/ defines no job"
    config = load_schedules(ROOT / "schedules.yaml", job_inputs(example_jobs))
    names = {job.name for job in example_jobs.values()}
    for entry in config.schedules.values():
        assert entry.job in names, f"schedule {entry.name}: job {entry.job!r} is not in jobs/"


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


def test_every_example_job_refuses_a_misspelt_input_field(
    example_jobs: Jobs, example: SchedulesConfig
) -> None:
    """Next to an input its schedule uses (so the rest of it is valid), an unknown key is an error
    that names it, for every example job."""
    valid = {entry.job: dict(entry.input or {}) for entry in example.schedules.values()}
    for job in example_jobs.values():
        assert job.name in valid, f"the example schedules do not use job {job.name}"
        job.validate_input(valid[job.name])  # the input as scheduled is fine
        with pytest.raises(InputValidationError) as refused:
            job.validate_input({**valid[job.name], "cnt": 3})
        assert "'cnt'" in str(refused.value) and "\n" not in str(refused.value), refused.value


def test_a_misspelt_field_is_refused_by_trigger_with_one_line(
    example_jobs: Jobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("DURABLY_")]:
        monkeypatch.delenv(key)
    db = tmp_path / "example.db"
    url = f"sqlite:///{db}"
    result = CliRunner().invoke(
        main, ["--database", url, "trigger", "many-steps", "--input", '{"cnt": 3}'], catch_exceptions=False
    )
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: job 'many-steps': invalid input: field 'cnt': Extra inputs are not permitted"]
    assert result.stdout == "" and not db.exists(), "a refused trigger writes nothing"


def test_a_misspelt_field_in_a_schedule_is_refused_with_its_line(
    example_jobs: Jobs,
) -> None:
    text = 'schedules:\n  batch:\n    cron: "*/5 * * * *"\n    job: many-steps\n    input: {cnt: 3}\n'
    with pytest.raises(ConfigError) as refused:
        parse_schedules(text, "schedules.yaml", job_inputs(example_jobs))
    assert str(refused.value) == "schedules.yaml:5: schedule 'batch': input.cnt: unknown key"
