"""Schedules and failures: one broken schedule never holds back the others, and a schedule's
``retry:`` and ``timeout:`` reach the runs it fires (SQLite, injected clock)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from durably_sched import Durably, Retry, Step, create_durably, define_job
from durably_sched.schedule.config import SchedulesConfig, parse_schedules
from durably_sched.schedule.scheduler import Scheduler
from tests.helpers import FakeClock


async def report(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True}


REPORT = define_job(name="report", run=report, retry=Retry(max_attempts=2, backoff=10, max_backoff="1h"))
LATER = define_job(name="later", run=report)
T0 = datetime(2026, 1, 5, 10, 0, 30, tzinfo=UTC)


def config(text: str) -> SchedulesConfig:
    return parse_schedules(text, job_inputs={"report": None, "later": None})


@pytest.fixture
async def durably(tmp_path: Path) -> AsyncIterator[Durably]:
    d = create_durably(f"sqlite:///{tmp_path / 'sched.db'}", polling_interval=0.05).register([REPORT])
    await d.migrate()
    await d.start(worker=False)
    yield d
    await d.close()


TWO = """
schedules:
  healthy:
    cron: "* * * * *"
    job: report
  broken:
    cron: "* * * * *"
    job: later
    catchup: all
"""


async def test_one_failing_schedule_does_not_delay_or_back_off_the_others(
    durably: Durably, caplog: pytest.LogCaptureFixture
) -> None:
    # "broken" names a job this process does not have (yet): every fire of it fails.
    clock = FakeClock(T0)
    scheduler = Scheduler(durably, config(TWO), clock=clock)
    await scheduler.load()
    with caplog.at_level(logging.ERROR, logger="durably_sched.scheduler"):
        for minute in (1, 2, 3):
            clock.advance(minutes=1)
            fired = await scheduler.tick()  # never raises
            assert [(name, result.outcome) for name, _, result in fired] == [("healthy", "triggered")]
            assert f"10:0{minute}" in str(fired[0][1])
    failures = [r for r in caplog.records if "schedule broken: could not handle" in r.getMessage()]
    assert failures and "unknown job 'later'" in failures[0].getMessage()
    assert len(failures) == 1  # the same error again within a minute is counted, not repeated
    # The healthy schedule's next fire time is due as planned; the broken one retries on its own.
    due = dict((name, when) for when, name in scheduler.next_due())
    assert due["healthy"] == datetime(2026, 1, 5, 10, 4, tzinfo=UTC)
    # Once the job exists, the broken schedule catches up every fire time it missed, in order.
    durably.register([LATER])
    clock.advance(seconds=31)
    fired = await scheduler.tick()
    caught_up = [when.strftime("%H:%M") for name, when, result in fired if name == "broken"]
    assert caught_up == ["10:01", "10:02", "10:03", "10:04"]
    assert all(result.outcome == "triggered" for _, _, result in fired)


async def test_a_schedule_retry_and_timeout_reach_its_runs(durably: Durably) -> None:
    text = """
schedules:
  nightly:
    cron: "* * * * *"
    job: report
    retry: {max_attempts: 5, backoff: 30s}
    timeout: 2h
  plain:
    cron: "* * * * *"
    job: report
"""
    clock = FakeClock(T0)
    scheduler = Scheduler(durably, config(text), clock=clock)
    await scheduler.load()
    clock.advance(minutes=1)
    fired = {name: result.run for name, _, result in await scheduler.tick()}
    nightly, plain = fired["nightly"], fired["plain"]
    assert nightly is not None and plain is not None
    policy = nightly.retry_policy
    assert policy is not None
    # The schedule's fields, and the job's for the rest.
    assert (policy["max_attempts"], policy["backoff"], policy["max_backoff"]) == (5, 30.0, 3600.0)
    assert Retry.from_json(policy).retry_on == ("builtins.Exception",)
    assert nightly.timeout == 7200.0
    assert (plain.retry_policy, plain.timeout) == (None, None)  # the job's own policy applies
