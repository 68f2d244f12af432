"""Serves that share the schedules on PostgreSQL, as real processes: exactly once holds when an
owner is killed with SIGKILL (its schedules fire again within its lease plus a beat and a tick,
nothing lost or doubled), through a rolling restart, and with host clocks 20 s off the database's
(libfaketime): nothing fires early, nothing is delayed.

Every schedule fires every second, so a few seconds show each mechanism; the serves run without a
worker (the runs are counted, not executed) to keep the machine's load down."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from durably_sched.schedule.cron import parse_fire_key
from durably_sched.schedule.ownership import BUCKETS
from durably_sched.store import open_store
from durably_sched.store.base import RunQuery, RunRecord, SchedulerRecord

from .invariants import check_exactly_once
from .serve_procs import Serve, wait_for

pytestmark = [pytest.mark.system, pytest.mark.postgres]

NAMES = [f"s{i:02d}" for i in range(8)]
LEASE = 3.0
SECOND = timedelta(seconds=1)


def schedules_file(tmp_path: Path) -> Path:
    path = tmp_path / "schedules.yaml"
    body = "".join(f"  {n}: {{cron: '* * * * * *', job: tick, input: {{step_seconds: 0}}}}\n" for n in NAMES)
    path.write_text("schedules:\n" + body)
    return path


def new_serve(url: str, tmp_path: Path, made: list[Serve], *prefix: str) -> Serve:
    serve = Serve(
        url,
        schedules_file(tmp_path),
        tmp_path,
        "--no-worker",
        "--scheduler-lease",
        str(LEASE),
        env={"CHAOS_EFFECTS": str(tmp_path / "fx"), "FAKETIME_DONT_FAKE_MONOTONIC": "1"},
        prefix=prefix,
    )
    made.append(serve)
    return serve.start()


async def _read(url: str) -> tuple[list[RunRecord], list[SchedulerRecord]]:
    store = open_store(url)
    await store.connect()
    try:
        runs = await store.list_runs(RunQuery(limit=100_000))
        return runs, await store.list_schedulers()
    finally:
        await store.close()


def read(url: str) -> tuple[list[RunRecord], list[SchedulerRecord]]:
    return asyncio.run(_read(url))


def settled(url: str, count: int) -> list[SchedulerRecord] | None:
    """The live schedulers once ``count`` of them share every bucket."""
    live = [s for s in read(url)[1] if s.live]
    if len(live) == count and all(s.buckets for s in live) and sum(s.buckets for s in live) == BUCKETS:
        return live
    return None


def fire_time(run: RunRecord) -> datetime:
    assert run.idempotency_key is not None
    return parse_fire_key(run.idempotency_key)[1]


def assert_exactly_once(runs: list[RunRecord], first: datetime, last: datetime) -> None:
    for name in NAMES:
        mine = [r for r in runs if r.labels.get("schedule") == name and first <= fire_time(r) <= last]
        report = check_exactly_once(mine, name, first, last, SECOND)
        assert not (report.missing or report.doubled or report.unexpected), f"{name}: {report}"


def whole_second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


def test_kill9_of_an_owner_its_schedules_fire_again_within_its_lease(
    postgres_schema_url: str, tmp_path: Path, serves: list[Serve]
) -> None:
    url = postgres_schema_url
    first = new_serve(url, tmp_path, serves)
    wait_for(first.ready, 30, "the first serve started")  # it migrates the database
    for _ in range(2):
        new_serve(url, tmp_path, serves)
    live = wait_for(lambda: settled(url, 3), 30, "three serves share the buckets")
    start = whole_second(datetime.now(UTC)) + 2 * SECOND
    time.sleep(2)
    # The victim: the serve that owns the most of the schedules.
    owner_of = {s.id: s for s in live}
    victim_id = max(owner_of, key=lambda i: owner_of[i].buckets)
    victim = next(s for s in serves if f"worker id {victim_id}" in s.output())
    victim.kill9()
    killed = datetime.now(UTC)
    # Its buckets go to the two others when its leases run out (by the database's clock).
    wait_for(lambda: settled(url, 2), LEASE + 10, "the two others took over every bucket")
    time.sleep(3)
    end = whole_second(datetime.now(UTC)) - 2 * SECOND
    runs, _ = read(url)
    assert_exactly_once(runs, start, end)
    # The fire times due while nobody held the victim's buckets were fired by the others, within
    # the lease, a beat of a second and a tick (plus scheduling slack on a shared machine).
    late = [
        (r.created_at - fire_time(r)).total_seconds()
        for r in runs
        if fire_time(r) >= killed and r.created_at is not None
    ]
    assert late and max(late) <= LEASE + 1 + 1 + 1.5, sorted(late)[-5:]
    for serve in serves:
        if serve.alive():
            assert serve.stop() == 0, serve.output()[-3000:]


def test_a_rolling_restart_loses_and_doubles_nothing(
    postgres_schema_url: str, tmp_path: Path, serves: list[Serve]
) -> None:
    url = postgres_schema_url
    first = new_serve(url, tmp_path, serves)
    wait_for(first.ready, 30, "the first serve started")
    for _ in range(2):
        new_serve(url, tmp_path, serves)
    wait_for(lambda: settled(url, 3), 30, "three serves share the buckets")
    start = whole_second(datetime.now(UTC)) + SECOND
    for serve in list(serves):  # one at a time: stop (its buckets are freed at once), start again
        assert serve.stop() == 0, serve.output()[-3000:]
        serve.start()
        wait_for(serve.ready, 30, "the restarted serve started")
    wait_for(lambda: settled(url, 3), 30, "three serves share the buckets again")
    end = whole_second(datetime.now(UTC)) - 2 * SECOND
    runs, _ = read(url)
    assert_exactly_once(runs, start, end)
    for serve in serves:
        assert serve.stop() == 0, serve.output()[-3000:]


def faketime() -> str:
    found = shutil.which("faketime")
    if found is None:
        reason = "faketime is not installed (Debian: apt-get install faketime; .ci/run installs it)"
        if os.environ.get("DURABLY_REQUIRE_FAKETIME") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def test_host_clocks_20s_off_fire_nothing_early_and_delay_nothing(
    postgres_schema_url: str, tmp_path: Path, serves: list[Serve]
) -> None:
    tool = faketime()
    url = postgres_schema_url
    ahead = new_serve(url, tmp_path, serves, tool, "-f", "+20s")
    wait_for(ahead.ready, 30, "the serve 20 s ahead started")
    new_serve(url, tmp_path, serves, tool, "-f", "-20s")
    live = wait_for(lambda: settled(url, 2), 30, "both serves share the buckets")
    offsets = sorted(round(s.clock_offset or 0) for s in live)
    assert offsets == [-20, 20], offsets  # measured, and shown by `workers list`
    start = whole_second(datetime.now(UTC)) + SECOND
    time.sleep(5)
    end = whole_second(datetime.now(UTC)) - 2 * SECOND
    runs, _ = read(url)
    assert_exactly_once(runs, start, end)
    lateness = [(r.created_at - fire_time(r)).total_seconds() for r in runs if start <= fire_time(r) <= end]
    assert min(lateness) >= 0, "a run was created before its fire time"
    assert max(lateness) < 2.0, sorted(lateness)[-5:]
    for serve in serves:  # faketime's process and the serve under it: the whole group
        serve.signal(signal.SIGTERM)
    for serve in serves:
        wait_for(lambda serve=serve: "stopped" in serve.output(), 30, "serve stopped")  # type: ignore[misc]
