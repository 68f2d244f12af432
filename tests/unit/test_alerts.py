"""Per-schedule metrics and the shipped Prometheus alert rules (deploy/prometheus/alerts.yaml).

What operators rely on: the gauges say, for every schedule of the file, whether it is paused (and
by pause_after_failures), how many runs failed in a row, when it last succeeded, when its newest run
was made and when its next fire time is due, the same from every instance; the alert rules are valid
Prometheus rules, behave as their promtool unit tests say (series that must and must not alert), and
use only metrics that durably-sched really exports.

promtool comes from Debian's ``prometheus`` package (``.ci/run`` installs it); without it the
promtool tests are skipped with that reason, unless DURABLY_REQUIRE_PROMTOOL=1 (CI) makes it a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from durably_sched import Durably, Step, create_durably, define_job
from durably_sched.ops.metrics import Metrics
from durably_sched.schedule.config import parse_schedules
from durably_sched.schedule.scheduler import Scheduler
from tests.helpers import FakeClock

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = RULES_DIR / "alerts.yaml"
RULE_TESTS = RULES_DIR / "alerts.test.yaml"
REQUIRE_ENV = "DURABLY_REQUIRE_PROMTOOL"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (Debian: apt-get install prometheus; .ci/run installs it)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} and {REQUIRE_ENV}=1", pytrace=False)
        pytest.skip(reason)
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_alert_rules_are_valid_prometheus_rules() -> None:
    result = run_promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = run_promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_test_that_fires_it_and_one_where_it_stays_quiet() -> None:
    rules = yaml.safe_load(RULES.read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert fires == names and quiet == names


async def report(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("fail"):
        raise ValueError("no data")
    return {}


REPORT = define_job(name="report", run=report)
SCHEDULES = """
schedules:
  good: {cron: "* * * * *", job: report}
  bad: {cron: "* * * * *", job: report, input: {fail: true}, pause_after_failures: 1}
  held: {cron: "*/5 * * * *", job: report}
"""


@pytest.fixture
async def durably(tmp_path: Path) -> AsyncIterator[Durably]:
    d = create_durably(f"sqlite:///{tmp_path / 'metrics.db'}", polling_interval=0.05).register([REPORT])
    await d.init()
    yield d
    await d.close()


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def gauge(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, schedule: str
) -> float | None:
    return found.get((name, frozenset({("schedule", schedule)})))


async def test_schedule_metrics_come_from_the_database_and_this_scheduler(durably: Durably) -> None:
    start = (datetime.now(UTC) + timedelta(minutes=3)).replace(second=30, microsecond=0)
    clock = FakeClock(start)
    config = parse_schedules(SCHEDULES, job_inputs={"report": None})
    scheduler = Scheduler(durably, config, clock=clock)
    metrics = Metrics(durably, scheduler, cache_seconds=0)
    await scheduler.load()
    durably.schedule_clock = clock
    await metrics.refresh()
    before = samples(metrics)
    # Before anything ran: zeros, no success or fire yet, next fire times from this scheduler.
    assert gauge(before, "durably_schedule_paused", "good") == 0
    assert gauge(before, "durably_schedule_consecutive_failures", "bad") == 0
    assert gauge(before, "durably_schedule_last_success_timestamp_seconds", "good") is None
    assert gauge(before, "durably_schedule_last_fire_timestamp_seconds", "good") is None
    next_minute = start.replace(second=0) + timedelta(minutes=1)
    assert gauge(before, "durably_schedule_next_fire_timestamp_seconds", "good") == next_minute.timestamp()
    # The first miss must be visible to increase(): the series exists at 0 from the start.
    assert before[("durably_fire_times_total", frozenset({("schedule", "bad"), ("outcome", "missed")}))] == 0

    await durably.pause_schedule("held", reason="maintenance")
    clock.advance(minutes=1)
    fired = {name: result for name, _, result in await scheduler.tick()}
    for name in ("good", "bad"):
        run = fired[name].run
        assert run is not None
        await durably.wait_for_run(run.id, timeout=20)
    clock.advance(minutes=1)
    await scheduler.tick()  # bad failed once: pause_after_failures: 1 pauses it here
    await metrics.refresh()
    after = samples(metrics)
    good_run = await durably.get_run(fired["good"].run.id)  # type: ignore[union-attr]
    assert good_run.completed_at is not None
    assert gauge(after, "durably_schedule_last_success_timestamp_seconds", "good") == pytest.approx(
        good_run.completed_at.timestamp()
    )
    runs_of_good = await durably.get_runs(schedule="good")
    assert gauge(after, "durably_schedule_last_fire_timestamp_seconds", "good") == pytest.approx(
        max(r.created_at for r in runs_of_good).timestamp()
    )
    assert gauge(after, "durably_schedule_consecutive_failures", "bad") == 1
    assert gauge(after, "durably_schedule_paused", "bad") == 1
    assert gauge(after, "durably_schedule_auto_paused", "bad") == 1
    assert gauge(after, "durably_schedule_paused", "held") == 1
    assert gauge(after, "durably_schedule_auto_paused", "held") == 0
    assert gauge(after, "durably_schedule_paused", "good") == 0
    pauses = "durably_schedule_pauses_total"
    assert after[(pauses, frozenset({("schedule", "held"), ("kind", "manual")}))] == 1
    assert after[(pauses, frozenset({("schedule", "bad"), ("kind", "auto")}))] == 1
    paused_fire = "durably_fire_times_total"
    assert after[(paused_fire, frozenset({("schedule", "bad"), ("outcome", "paused")}))] == 1
    metrics.close()


async def test_the_rules_use_only_metrics_that_durably_sched_exports(durably: Durably) -> None:
    scheduler = Scheduler(durably, parse_schedules(SCHEDULES, job_inputs={"report": None}))
    ownership = scheduler.share("s1")  # a serve's scheduler: its buckets and its clock's offset
    metrics = Metrics(durably, scheduler)
    await ownership.run_once()
    await scheduler.load()
    await scheduler.tick()
    await metrics.refresh()
    exported = set(re.findall(r"^# HELP (\w+)", metrics.render().decode(), re.M))
    expressions = " ".join(
        rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    )
    used = set(re.findall(r"\bdurably_\w+", expressions))
    assert used and used <= exported, sorted(used - exported)
    tests = RULE_TESTS.read_text()
    assert set(re.findall(r"\bdurably_\w+", tests)) <= exported | {"durably_runs"}
    metrics.close()
