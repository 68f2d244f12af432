# ruff: noqa: F811  (test_cli's fixtures are imported by name; tests take them as parameters)
"""``workers list`` tells the truth now: a worker killed a moment ago on this host says gone at
once (its pid is checked when the list is read), and RUNS counts the runs a worker holds now, not
what its last heartbeat said. The worker here is a real process, killed with SIGKILL."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from durably_sched.registry import host_identity, process_start
from durably_sched.store.base import WorkerInfo
from tests.unit.test_cli import Project, _logging_restored, migrated, project  # noqa: F401
from tests.unit.test_cli_failures import _store


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def _register_and_claim(project: Project, pid: int) -> str:
    me = host_identity()
    store = _store(project)
    await store.connect()
    try:
        await store.register_worker(
            WorkerInfo(
                id="w-child",
                host=me.host,
                host_key=me.host_key,
                pid=pid,
                process_start=process_start(pid),
                version="0.1.0",
                jobs=("plain",),
                concurrency=4,
                lease_seconds=30.0,
            )
        )
        [run] = await store.claim("w-child", ["plain"], 1, 30)
        await store.renew_leases([(run.id, run.generation)], 30, worker=("w-child", 1))
        return run.id
    finally:
        await store.close()


async def _take_over(project: Project) -> list[str]:
    store = _store(project)
    await store.connect()
    try:
        return await store.take_over_worker("w-child", "w-other")
    finally:
        await store.close()


def _row(project: Project, worker_id: str) -> str:
    table = project.ok("workers", "list").stdout
    return next(line for line in table.splitlines() if line.startswith(worker_id))


def test_a_killed_worker_on_this_host_is_gone_at_once_and_holds_no_run_once_taken_over(
    migrated: Project, child: subprocess.Popen[bytes]
) -> None:
    if host_identity().host_key is None:
        pytest.skip("no host key on this platform (no /proc): pids are never compared")
    migrated.json("trigger", "plain", "--json")
    run_id = asyncio.run(_register_and_claim(migrated, child.pid))

    row = _row(migrated, "w-child")
    assert " live " in row and f"1/4 {run_id[:8]}" in row, row
    [worker] = migrated.json("workers", "list", "--json")
    assert (worker["state"], worker["process_gone"], worker["runs"]) == ("live", False, [run_id])

    child.kill()
    child.wait()
    # No serve has noticed (nothing took it over): the list checks the pid itself.
    row = _row(migrated, "w-child")
    assert re.search(r"\sgone \(its process ended; not yet taken over\)\s", row), row
    assert f"1/4 {run_id[:8]}" in row  # its run is still under its lease until a worker takes over
    [worker] = migrated.json("workers", "list", "--json")
    assert (worker["state"], worker["process_gone"], worker["gone_by"]) == ("gone", True, None)

    assert asyncio.run(_take_over(migrated)) == [run_id]
    row = _row(migrated, "w-child")
    assert "gone (found by w-other)" in row and " 0/4 " in f"{row} ", row
    [worker] = migrated.json("workers", "list", "--json")
    assert (worker["runs_held"], worker["runs"], worker["heartbeat_runs_held"]) == (0, [], 1)
    # A pending run of its job is no longer served by it.
    migrated.json("trigger", "plain", "--json")
    pending = migrated.json("runs", "list", "--status", "pending", "--json")
    waiting = migrated.json("runs", "show", pending[0]["id"], "--json")["waiting"]
    assert waiting == "no live worker has job 'plain'"


async def _schedulers(project: Project) -> None:
    from durably_sched.store.base import SchedulerInfo

    store = _store(project)
    await store.connect()
    try:
        await store.balance_buckets(SchedulerInfo("sched-a", "host-a", 11, 40, 20.4), 30.0, 256)
        await store.balance_buckets(SchedulerInfo("sched-b", "host-b", 12, 40, -0.01), 30.0, 256)
        await store.balance_buckets(SchedulerInfo("sched-a", "host-a", 11, 40, 20.4), 30.0, 256)
        await store.balance_buckets(SchedulerInfo("sched-b", "host-b", 12, 40, -0.01), 30.0, 256)
    finally:
        await store.close()


def test_workers_list_shows_who_owns_how_many_schedule_buckets_and_their_clocks(
    migrated: Project,
) -> None:
    asyncio.run(_schedulers(migrated))
    out = migrated.ok("workers", "list").stdout
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("sched-")}
    assert "BUCKETS" in out and "CLOCK" in out
    assert re.search(r"live\s+host-a\s+11\s+128/256\s+40\s+20\.4s ahead", rows["sched-a"]), out
    assert re.search(r"live\s+host-b\s+12\s+128/256\s+40\s+0\.0s", rows["sched-b"]), out
