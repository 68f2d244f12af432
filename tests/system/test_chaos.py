"""Exactly-once under what production does: kill -9, restarts, outages, stalled processes.

Real `durably-sched serve` processes on one database; invariants are checked from the database.
DURABLY_SOAK_SECONDS=600 turns the churn test into a ten-minute soak.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from durably_sched import create_durably
from durably_sched.store.base import RunRecord

from .chaos_jobs import chain_job, tick_job
from .invariants import ExactlyOnceReport, check_exactly_once, effects_of, steps_done_twice
from .serve_procs import Serve, wait_for

pytestmark = pytest.mark.system
SOAK_SECONDS = float(os.environ.get("DURABLY_SOAK_SECONDS", "0"))
FAST = [
    "--polling-interval",
    "0.1",
    "--heartbeat-interval",
    "0.5",
    "--stale-threshold",
    "4",
    "--stop-grace",
    "2",
]


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


async def _all_runs(url: str) -> list[RunRecord]:
    durably = create_durably(url).register([tick_job, chain_job])
    try:
        await durably.connect()
        return await durably.get_runs(limit=1_000_000)
    finally:
        await durably.close()


async def _prepare(url: str, schedule: str | None = None, cursor: datetime | None = None) -> None:
    durably = create_durably(url).register([tick_job, chain_job])
    try:
        await durably.migrate()
        if schedule is not None and cursor is not None:
            await durably.store.advance_cursor(schedule, cursor)
    finally:
        await durably.close()


def test_exactly_once_under_churn(database: str, tmp_path: Path) -> None:
    """Three serve processes, a schedule firing every second, kill -9 + restarts and a full outage."""
    effects = tmp_path / "effects.log"
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(
        "schedules:\n"
        "  every-second:\n"
        '    cron: "* * * * * *"\n'
        "    job: tick\n"
        "    overlap: allow\n"
        "    catchup: all\n"
        "    catchup_window: 1h\n"
    )
    start = datetime.now(UTC).replace(microsecond=0)
    run_async(_prepare(database, "every-second", start))
    env = {"CHAOS_EFFECTS": str(effects)}
    procs = [
        Serve(database, schedules, tmp_path, "--concurrency", "4", *FAST, env=env).start() for _ in range(3)
    ]
    rng = random.Random(7)
    churn = SOAK_SECONDS or 24.0
    outage_at, outage_for = churn / 2, 4.0
    kills = 0
    try:
        t0 = time.monotonic()
        outage_done = False
        while time.monotonic() - t0 < churn:
            time.sleep(rng.uniform(1.5, 3.0))
            if not outage_done and time.monotonic() - t0 >= outage_at:
                for p in procs:
                    p.kill9()
                time.sleep(outage_for)  # nobody is scheduling: the fire times must be caught up
                for p in procs:
                    p.start()
                outage_done = True
                continue
            victim = rng.choice(procs)
            victim.kill9()
            kills += 1
            victim.start()
        last = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)

        def report() -> ExactlyOnceReport:
            runs = run_async(_all_runs(database))
            in_range = [r for r in runs if _fire_time(r) <= last]
            return check_exactly_once(
                in_range, "every-second", start + timedelta(seconds=1), last, timedelta(seconds=1)
            )

        try:
            wait_for(lambda: report().ok, timeout=90, what="all fire times run exactly once and completed")
        except AssertionError:
            final = report()
            logs = "\n".join(line for p in procs for line in p.output().splitlines() if "ERROR" in line)
            raise AssertionError(
                f"exactly-once violated after {kills} kills: {final}\nerrors logged:\n{logs[-4000:]}"
            ) from None
    finally:
        codes = [p.stop() for p in procs]
    assert codes == [0, 0, 0], [p.output()[-2000:] for p in procs]
    runs = run_async(_all_runs(database))
    # Fire times up to `last` were checked above. Later ones may have been caught by the final stop:
    # a graceful stop gives them back as pending (no lease left behind), it never fails them.
    leftover = [r.status for r in runs if r.status != "completed"]
    assert set(leftover) <= {"pending"}, leftover
    assert kills >= 3


def _fire_time(run: RunRecord) -> datetime:
    from durably_sched.schedule.cron import parse_fire_key

    assert run.idempotency_key is not None
    return parse_fire_key(run.idempotency_key)[1]


async def _trigger_chain(url: str, steps: int, step_seconds: float) -> str:
    durably = create_durably(url).register([tick_job, chain_job])
    try:
        await durably.migrate()
        run = await durably.jobs.chain.trigger({"steps": steps, "step_seconds": step_seconds})
        return run.id
    finally:
        await durably.close()


async def _final(url: str, run_id: str) -> tuple[RunRecord, list[Any], list[Any]]:
    durably = create_durably(url).register([tick_job, chain_job])
    try:
        await durably.connect()
        record = await durably.wait_for_run(run_id, timeout=60)
        return record, await durably.get_steps(run_id), await durably.get_logs(run_id)
    finally:
        await durably.close()


def _worker_only(tmp_path: Path) -> tuple[str, Path, Path, dict[str, str]]:
    """A SQLite database, an effects file, an empty schedules file and the serve environment."""
    effects = tmp_path / "effects.log"
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text("schedules: {}\n")
    return f"sqlite:///{tmp_path / 'chaos.db'}", effects, schedules, {"CHAOS_EFFECTS": str(effects)}


@pytest.mark.parametrize("k", [0, 2, 4])
def test_kill_9_during_step_k_resumes_without_repeating_completed_steps(tmp_path: Path, k: int) -> None:
    database, effects, schedules, env = _worker_only(tmp_path)
    run_id = run_async(_trigger_chain(database, 5, 0.4))
    first = Serve(database, schedules, tmp_path, *FAST, env=env).start()
    try:
        wait_for(
            lambda: any(line.endswith(f"{run_id} step-{k} start") for line in effects_of(effects)),
            what=f"step {k} started",
        )
        first.kill9()
    finally:
        first.kill9()
    assert not any(line.endswith(f"{run_id} step-{k} done") for line in effects_of(effects))
    second = Serve(database, schedules, tmp_path, *FAST, env=env).start()
    try:
        record, steps, _ = run_async(_final(database, run_id))
    finally:
        assert second.stop() == 0
    assert record.status == "completed"
    assert [s.name for s in steps] == [f"step-{i}" for i in range(5)]
    assert steps_done_twice(effects_of(effects)) == {}
    starts = [line for line in effects_of(effects) if line.endswith(" start")]
    assert len(starts) == 6  # five steps, the interrupted one started twice
    pids = record.output["pids"]
    assert pids[:k] == [first.pid] * k and pids[k:] == [second.pid] * (5 - k)


def test_a_stalled_worker_writes_nothing_after_its_lease_is_taken(tmp_path: Path) -> None:
    """SIGSTOP a worker mid-step past the stale threshold; another completes the run; SIGCONT."""
    database, effects, schedules, env = _worker_only(tmp_path)
    run_id = run_async(_trigger_chain(database, 3, 1.0))
    stalled = Serve(database, schedules, tmp_path, *FAST, env=env).start()
    rescuer: Serve | None = None
    try:
        wait_for(
            lambda: any(line.endswith(f"{run_id} step-1 start") for line in effects_of(effects)),
            what="step 1 started",
        )
        stalled.signal(signal.SIGSTOP)
        rescuer = Serve(database, schedules, tmp_path, *FAST, env=env).start()
        record, steps, logs = run_async(_final(database, run_id))
        assert record.status == "completed"
        snapshot = (record, [(s.name, s.output_json) for s in steps], [lg.id for lg in logs])
        stalled.signal(signal.SIGCONT)
        # The stalled process finishes its step (its side effect happens) and then must write nothing.
        wait_for(
            lambda: (
                sum(line.startswith(f"{stalled.pid} {run_id} step-1 done") for line in effects_of(effects))
                == 1
            ),
            what="the stalled worker resumed",
        )
        time.sleep(1.0)  # give a wrong write every chance to land before checking
        after, steps_after, logs_after = run_async(_final(database, run_id))
    finally:
        if rescuer is not None:
            assert rescuer.stop() == 0
        stalled.signal(signal.SIGCONT)
        stalled.stop()
    assert after == snapshot[0]  # no status change, no output change, same generation and lease fields
    assert [(s.name, s.output_json) for s in steps_after] == snapshot[1]
    assert [lg.id for lg in logs_after] == snapshot[2]
    assert after.output["finished_by"] == rescuer.pid
    assert stalled.pid not in after.output["pids"][1:]
