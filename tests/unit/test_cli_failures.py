# ruff: noqa: F811  (test_cli's fixtures are imported by name; tests take them as parameters)
"""The CLI on failures, through click's CliRunner: what an operator sees about a failed, retried,
waiting or held run, and the worker registry.

The project fixture (a jobs package, a schedules file, a SQLite database) is test_cli's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from typing import Any

from durably_sched.store import open_store
from durably_sched.store.base import WorkerInfo
from tests.unit.test_cli import Project, _logging_restored, migrated, project  # noqa: F401

RETRIES = """
from durably_sched import Retry, Step, define_job


async def flaky(step: Step, payload: dict) -> dict:
    await step.run("first", lambda: 1)
    if step.failed_attempts < 1:
        raise ConnectionError("upstream said 503")
    return {"after": step.failed_attempts}


flaky_job = define_job(name="flaky", run=flaky, retry=Retry(max_attempts=3, backoff=0.1, jitter=0))
"""


def _store(project: Project) -> Any:
    return open_store(f"sqlite:///{project.db}")


def test_a_failed_run_under_wait_names_the_line_of_code_and_runs_show_has_the_traceback(
    migrated: Project,
) -> None:
    result = migrated.run("trigger", "boom", "--here")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    run_id = re.search(r"run ([0-9a-f-]{36}) failed", result.stderr).group(1)  # type: ignore[union-attr]
    assert f"error: run {run_id} failed in step 'explode': ValueError: kaboom" in lines
    at = next(line for line in lines if line.startswith("  at "))
    assert re.match(
        rf"  at .*{migrated.jobs}/core\.py:\d+ in explode \(traceback: durably-sched runs show", at
    )
    assert "Traceback" not in result.stderr  # the traceback is in the run, not in the terminal

    shown = migrated.ok("runs", "show", run_id).stdout
    assert "traceback" in shown and "Traceback (most recent call last):" in shown
    assert shown.rstrip().count("ValueError: kaboom") >= 2  # the error row and the traceback's end
    assert re.search(r"\nat\s+.*core\.py:\d+ in explode", shown)
    data = migrated.json("runs", "show", run_id, "--json")
    assert "\nValueError: kaboom\n(5 frames of durably-sched not shown)" in data["traceback"]
    assert data["error_location"].endswith(" in explode") and data["failed_attempts"] == 1
    assert data["waiting"] is None and data["not_before"] is None


def test_a_retried_run_completes_under_wait_and_shows_its_failed_attempt(migrated: Project) -> None:
    migrated.write(f"{migrated.jobs}/retries.py", RETRIES)
    result = migrated.run("trigger", "flaky", "--here", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "completed" and data["output"] == {"after": 1} and data["failed_attempts"] == 1
    shown = migrated.ok("runs", "show", data["id"]).stdout
    assert re.search(r"attempt\s+2 \(1 failed\)", shown)
    # The kept traceback is said to be the earlier attempt's, not the completed run's.
    assert "\ntraceback of the last failed attempt\n" in shown and "\ntraceback\n" not in shown
    # Every attempt, the failed one with its error, next to the counters (issue 25).
    detail = migrated.json("runs", "show", data["id"], "--json")
    assert (detail["attempt"], detail["failed_attempts"]) == (2, 1)
    first, second = detail["attempts"]
    assert (first["attempt"], first["outcome"], first["error"]) == (
        1,
        "failed",
        "ConnectionError: upstream said 503",
    )
    assert first["failed_try"] == "failed try 1 of 3" and "Traceback" in first["traceback"]
    assert (second["attempt"], second["outcome"], second["error"], second["failed_try"]) == (
        2,
        "completed",
        None,
        None,
    )
    assert all(
        a["worker_id"] and a["started_at"] and a["ended_at"] and a["duration"] >= 0 for a in (first, second)
    )


def test_an_attempt_that_ended_after_the_record_was_read_waits_for_the_next_look(tmp_path: Any) -> None:
    """`--wait` reads the run, then its attempts. A run that completed between the two reads must
    not print its last attempt as a line of its own (the final report says it): the CI failure of
    test_wait_prints_each_failed_attempt_as_it_happens was this race."""
    from durably_sched import Retry, create_durably, define_job
    from durably_sched.cli._attempts import AttemptLines

    async def flaky(step: Any, payload: dict[str, Any]) -> dict[str, Any]:
        if step.failed_attempts < 1:
            raise ConnectionError("upstream said 503")
        return {}

    job = define_job(name="flaky", run=flaky, retry=Retry(max_attempts=3, backoff=0.01, jitter=0))

    async def scenario() -> list[list[str]]:
        async with create_durably(f"sqlite:///{tmp_path / 'race.db'}").register([job]) as durably:
            final = await durably.jobs.flaky.trigger_and_wait({}, timeout=10)
            record = await durably.get_run(final.id)
            assert record is not None and record.status == "completed" and record.attempt == 2
            lines = AttemptLines(durably, 3)
            pending = dataclasses.replace(record, status="pending", attempt=1, output=None)
            running = dataclasses.replace(record, status="running", output=None)
            return [
                await lines.new_lines(running),  # stale: attempt 2 ended after this read
                await lines.new_lines(record),  # finished: attempt 2 is the report's
                await AttemptLines(durably, 3).new_lines(pending),  # the retry wait: attempt 1
            ]

    stale, finished, waiting = asyncio.run(scenario())
    assert len(stale) == 1 and stale[0].startswith("attempt 1 failed (failed try 1 of 3)"), stale
    assert finished == []
    assert waiting == stale


def test_wait_prints_each_failed_attempt_as_it_happens(migrated: Project) -> None:
    """Issue 25: `trigger --wait` says what failed on each attempt, not only that a retry waits."""
    migrated.write(f"{migrated.jobs}/retries.py", RETRIES)
    result = migrated.run("trigger", "flaky", "--here")
    assert result.exit_code == 0, result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("attempt ")]
    assert len(failed) == 1, result.stderr
    assert "run failed" not in result.stderr  # the worker's own line would say it a second time
    assert re.fullmatch(
        r"attempt 1 failed \(failed try 1 of 3\) after [0-9.]+m?s on \S+: ConnectionError: upstream said 503",
        failed[0],
    ), failed
    # `runs watch` of the run afterwards tells its history the same way (the completion is the report).
    run_id = re.search(r"run ([0-9a-f-]{36}) completed", result.stderr).group(1)  # type: ignore[union-attr]
    watched = migrated.run("runs", "watch", run_id)
    assert watched.exit_code == 0, watched.stderr
    assert [line for line in watched.stderr.splitlines() if line.startswith("attempt ")] == failed


def test_a_pending_run_says_what_it_waits_for(migrated: Project) -> None:
    run_id = migrated.json("trigger", "plain", "--json")["id"]
    shown = migrated.ok("runs", "show", run_id).stdout
    assert re.search(r"waiting\s+no live worker has job 'plain'", shown), shown
    assert migrated.json("runs", "show", run_id, "--json")["waiting"] == "no live worker has job 'plain'"
    # With a live worker that has the job, the run only waits to be claimed.
    asyncio.run(_register(migrated, "w-live", ("plain",)))
    assert migrated.json("runs", "show", run_id, "--json")["waiting"] == "for a worker to claim it"


async def _register(project: Project, worker_id: str, jobs: tuple[str, ...], lease: float = 30.0) -> None:
    store = _store(project)
    await store.connect()
    try:
        await store.register_worker(
            WorkerInfo(
                id=worker_id,
                host="host-a",
                host_key=None,
                pid=4321,
                process_start=None,
                version="0.1.0",
                jobs=jobs,
                concurrency=2,
                lease_seconds=lease,
            )
        )
    finally:
        await store.close()


async def _claim(project: Project, worker_id: str, job: str) -> str:
    store = _store(project)
    await store.connect()
    try:
        [run] = await store.claim(worker_id, [job], 1, 30)
        await store.renew_leases([(run.id, run.generation)], 30, worker=(worker_id, 1))
        return run.id
    finally:
        await store.close()


def test_a_running_run_shows_its_lease_and_its_holders_heartbeat(migrated: Project) -> None:
    migrated.json("trigger", "plain", "--json")
    asyncio.run(_register(migrated, "w-holder", ("plain",)))
    run_id = asyncio.run(_claim(migrated, "w-holder", "plain"))
    shown = migrated.ok("runs", "show", run_id).stdout
    assert re.search(r"worker\s+w-holder", shown)
    assert re.search(r"lease\s+expires in \d+(\.\d+)?s; heartbeat \d", shown), shown
    holder = migrated.json("runs", "show", run_id, "--json")["holder"]
    assert holder["id"] == "w-holder" and holder["state"] == "live" and holder["runs_held"] == 1


def test_workers_list(migrated: Project) -> None:
    assert "no workers registered" in migrated.ok("workers", "list").stderr
    asyncio.run(_register(migrated, "w-one", ("plain", "boom")))
    asyncio.run(_register(migrated, "w-stale", ("plain",), lease=0.001))
    table = migrated.ok("workers", "list").stdout
    header, *rows = table.strip().splitlines()
    assert header.split() == ["ID", "STATE", "HOST", "PID", "HEARTBEAT", "RUNS", "STARTED", "JOBS"]
    assert any(row.startswith("w-one") and " live " in row and "plain, boom" in row for row in rows)
    assert any(row.startswith("w-stale") and " stale " in row for row in rows)
    data = {w["id"]: w for w in migrated.json("workers", "list", "--json")}
    assert data["w-one"]["jobs"] == ["plain", "boom"] and data["w-one"]["concurrency"] == 2
    assert data["w-one"]["state"] == "live" and data["w-stale"]["state"] == "stale"
    assert set(data["w-one"]) >= {"host", "pid", "heartbeat_at", "heartbeat_age", "runs_held", "gone_by"}


def test_workers_list_on_a_missing_database_is_one_line(project: Project) -> None:
    result = project.run("workers", "list")
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "does not exist" in result.stderr
