"""Failures with real `durably-sched serve` processes, on SQLite and PostgreSQL.

What operators rely on:

* SIGTERM during a long run starts no new step, lets the step in flight checkpoint, and releases
  the run at once: another serve resumes it right after its last step, long before its lease
  (a minute here) would have expired.
* kill -9 and an immediate restart on the same host: the restarted serve sees that the dead
  worker's process is gone and resumes its run at once, long before the lease expires, and says
  so; a SIGSTOPped (alive) holder is never taken over before its lease has expired.
* A run of a job no live worker has is reported in the serve log and by `runs show`.
* A full disk and a database locked past the busy budget: serve keeps running, says so in a few
  lines, and recovers by itself when the cause goes away, catching up the fire times it missed.
* A read-only database: serve refuses to start with one line, exit 1.

Leases are generous (a minute) so that "early" cannot be an accident of a loaded machine; every
wait has a deadline; nothing sleeps a fixed time to hope.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from durably_sched import create_durably
from durably_sched.schedule.cron import parse_fire_key
from durably_sched.store.base import NewRun, RunRecord
from tests.filesystems import fill, read_only_tree, small_disk

from .chaos_jobs import chain_job, tick_job
from .invariants import check_exactly_once, effects_of, steps_done_twice
from .serve_procs import HERE, ROOT, Serve, wait_for

pytestmark = pytest.mark.system
CLI = [sys.executable, "-m", "durably_sched.cli"]
LONG_LEASE = ["--polling-interval", "0.1", "--heartbeat-interval", "1", "--stale-threshold", "60"]


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


async def _trigger_chain(url: str, steps: int, step_seconds: float) -> str:
    durably = create_durably(url).register([tick_job, chain_job])
    try:
        await durably.migrate()
        run = await durably.jobs.chain.trigger({"steps": steps, "step_seconds": step_seconds})
        return run.id
    finally:
        await durably.close()


async def _get(url: str, run_id: str) -> RunRecord:
    durably = create_durably(url)
    try:
        await durably.connect()
        return await durably.get_run(run_id)
    finally:
        await durably.close()


async def _attempts(url: str, run_id: str) -> list[tuple[int, str, str | None]]:
    """(number, outcome, worker) of each ended attempt of the run."""
    durably = create_durably(url)
    try:
        await durably.connect()
        return [(a.attempt, a.outcome, a.worker_id) for a in await durably.get_attempts(run_id)]
    finally:
        await durably.close()


async def _wait_final(url: str, run_id: str, timeout: float = 90) -> RunRecord:
    durably = create_durably(url)
    try:
        await durably.connect()
        return await durably.wait_for_run(run_id, timeout=timeout)
    finally:
        await durably.close()


def _setup(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    effects = tmp_path / "effects.log"
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text("schedules: {}\n")
    return effects, schedules, {"CHAOS_EFFECTS": str(effects)}


def _started(effects: Path, run_id: str, pid: int) -> list[int]:
    """Indexes of the steps of ``run_id`` that process ``pid`` started."""
    out = []
    for line in effects_of(effects):
        parts = line.split()
        if len(parts) == 4 and parts[0] == str(pid) and parts[1] == run_id and parts[3] == "start":
            out.append(int(parts[2].split("-")[1]))
    return out


def test_sigterm_starts_no_new_step_and_another_serve_resumes_at_once(database: str, tmp_path: Path) -> None:
    effects, schedules, env = _setup(tmp_path)
    run_id = run_async(_trigger_chain(database, 40, 0.3))
    first = Serve(database, schedules, tmp_path, *LONG_LEASE, "--stop-grace", "30", env=env).start()
    second: Serve | None = None
    try:
        wait_for(lambda: len(_started(effects, run_id, first.pid)) >= 3, 60, "three steps started")
        second = Serve(database, schedules, tmp_path, *LONG_LEASE, env=env).start()
        wait_for(second.ready, 60, "the second serve started")
        before = run_async(_get(database, run_id))
        assert before.worker_id is not None and before.worker_id.split(":")[1] == str(first.pid)
        first.signal(signal.SIGTERM)
        assert first.proc is not None and first.proc.wait(60) == 0
        final = run_async(_wait_final(database, run_id))
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0
    assert final.status == "completed"
    by_first = _started(effects, run_id, first.pid)
    by_second = _started(effects, run_id, second.pid)
    k = max(by_first) + 1  # the step in flight at SIGTERM was finished and checkpointed
    assert by_first == list(range(k)) and by_second == list(range(k, 40)), (by_first, by_second)
    assert steps_done_twice(effects_of(effects)) == {}
    released = re.search(rf"released run {run_id} at step (\d+)", first.output())
    assert released is not None and int(released.group(1)) == k, first.output()[-2000:]
    assert f"resumed run {run_id} at step {k}" in second.output()
    # Released, not expired: the second serve resumed it long before the old lease would have ended.
    assert before.lease_expires_at is not None and final.started_at is not None
    resumed_at = _claim_time(second.output(), run_id)
    assert resumed_at < before.lease_expires_at - timedelta(seconds=30)
    # Both attempts are kept: the released one of the stopped serve, the completed one of the other.
    assert run_async(_attempts(database, run_id)) == [
        (1, "released", before.worker_id),
        (2, "completed", final.worker_id),
    ]


def _claim_time(log: str, run_id: str) -> datetime:
    """When a serve logged that it resumed ``run_id`` (its log lines start with ``date time+zone``)."""
    for line in log.splitlines():
        if f"resumed run {run_id}" in line:
            return datetime.fromisoformat(" ".join(line.split()[:2]))
    raise AssertionError(f"no 'resumed run {run_id}' in:\n{log[-2000:]}")


async def _workers(url: str) -> dict[str, Any]:
    """The registry as `workers list` reads it (its pid checks made here, on the workers' host)."""
    durably = create_durably(url)
    try:
        await durably.connect()
        return {w.id: w for w in await durably.list_workers()}
    finally:
        await durably.close()


def test_kill_9_and_an_immediate_restart_on_this_host_resume_at_once(database: str, tmp_path: Path) -> None:
    effects, schedules, env = _setup(tmp_path)
    run_id = run_async(_trigger_chain(database, 8, 0.5))
    first = Serve(database, schedules, tmp_path, *LONG_LEASE, env=env).start()
    try:
        wait_for(lambda: len(_started(effects, run_id, first.pid)) >= 2, 60, "two steps started")
        held = run_async(_get(database, run_id))
        first.kill9()
    finally:
        first.kill9()
    killed_at = datetime.now(UTC)
    # Before any serve notices, the list already says gone (its pid is checked), holding its run.
    assert held.worker_id is not None
    dead = run_async(_workers(database))[held.worker_id]
    assert (dead.state, dead.process_gone, dead.gone_by, dead.leased) == ("gone", True, None, (run_id,))
    second = Serve(database, schedules, tmp_path, *LONG_LEASE, env=env).start()
    try:
        final = run_async(_wait_final(database, run_id))
        dead = run_async(_workers(database))[held.worker_id]
        assert dead.state == "gone" and dead.gone_by is not None and dead.leased == ()  # holds nothing now
    finally:
        assert second.stop() == 0
    assert final.status == "completed" and steps_done_twice(effects_of(effects)) == {}
    log = second.output()
    assert held.worker_id is not None
    assert f"worker {held.worker_id} (pid {first.pid} on this host) is gone: its run resumes now" in log
    assert re.search(
        rf"resumed run {run_id} at step \d+ \(attempt 2; previous holder {held.worker_id}\)", log
    )
    # Long before the lease of the killed worker would have expired (a minute after its last renewal).
    assert held.lease_expires_at is not None
    assert _claim_time(log, run_id) < held.lease_expires_at - timedelta(seconds=30)
    assert _claim_time(log, run_id) > killed_at - timedelta(seconds=1)
    # The killed worker could not record its attempt: the claim that took the run over did.
    assert run_async(_attempts(database, run_id)) == [
        (1, "lease_lost", held.worker_id),
        (2, "completed", final.worker_id),
    ]


def test_a_stopped_holder_is_never_taken_over_before_its_lease_expires(database: str, tmp_path: Path) -> None:
    effects, schedules, env = _setup(tmp_path)
    lease = ["--polling-interval", "0.1", "--heartbeat-interval", "1", "--stale-threshold", "8"]
    run_id = run_async(_trigger_chain(database, 4, 1.0))
    stalled = Serve(database, schedules, tmp_path, *lease, env=env).start()
    rescuer: Serve | None = None
    try:
        wait_for(lambda: _started(effects, run_id, stalled.pid), 60, "the first step started")
        stalled.signal(signal.SIGSTOP)
        held = run_async(_get(database, run_id))
        assert held.worker_id is not None
        stopped = run_async(_workers(database))[held.worker_id]
        assert stopped.state == "live" and not stopped.process_gone  # stopped is not dead
        rescuer = Serve(database, schedules, tmp_path, *lease, env=env).start()
        final = run_async(_wait_final(database, run_id))
        taken = _claim_time(rescuer.output(), run_id)
    finally:
        stalled.signal(signal.SIGCONT)
        stalled.stop()
        if rescuer is not None:
            rescuer.stop()
    assert final.status == "completed"
    assert "is gone" not in rescuer.output()  # an alive (stopped) process is never declared gone
    assert held.lease_expires_at is not None
    # Taken over only after the lease the stalled worker last renewed had run out.
    assert taken >= held.lease_expires_at - timedelta(seconds=1.0), (taken, held.lease_expires_at)


async def _orphan_run(url: str) -> str:
    durably = create_durably(url)
    try:
        await durably.migrate()
        await durably.connect()
        [(run, _)] = await durably.store.create_runs(
            [NewRun(id=str(uuid.uuid4()), job_name="oops", input={})]
        )
        return run.id
    finally:
        await durably.close()


def test_runs_of_a_job_no_live_worker_has_are_reported(database: str, tmp_path: Path) -> None:
    _, schedules, env = _setup(tmp_path)
    run_id = run_async(_orphan_run(database))
    serve = Serve(database, schedules, tmp_path, "--heartbeat-interval", "1", env=env).start()
    try:
        wait_for(lambda: "of job 'oops' wait" in serve.output(), 60, "the warning in the serve log")
        shown = subprocess.run(
            [*CLI, "--database", database, "runs", "show", run_id],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}"},
        )
    finally:
        assert serve.stop() == 0
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"waiting\s+no live worker has job 'oops'", shown.stdout), shown.stdout
    warnings = [line for line in serve.output().splitlines() if "of job 'oops' wait" in line]
    assert len(warnings) == 1, warnings  # once per job name, not at every check
    assert "1 pending run of job 'oops' wait: no live worker has this job" in warnings[0]
    assert "restart serve after adding or changing job code" in warnings[0]


EVERY_SECOND = """\
schedules:
  every-second:
    cron: "* * * * * *"
    job: tick
    overlap: allow
    catchup: all
    catchup_window: 1h
"""


async def _prepare_schedule(url: str, cursor: datetime) -> None:
    durably = create_durably(url).register([tick_job, chain_job])
    try:
        await durably.migrate()
        await durably.store.advance_cursor("every-second", cursor)
    finally:
        await durably.close()


async def _all_runs(url: str) -> list[RunRecord]:
    durably = create_durably(url)
    try:
        await durably.connect()
        return await durably.get_runs(limit=100_000)
    finally:
        await durably.close()


def _exactly_once_until(url: str, start: datetime, last: datetime) -> Any:
    """Every fire time in (start, last] has exactly one completed run (later ones are ignored)."""
    runs = [r for r in run_async(_all_runs(url)) if r.idempotency_key and _fire_time(r) <= last]
    return check_exactly_once(runs, "every-second", start + timedelta(seconds=1), last, timedelta(seconds=1))


def _fire_time(run: RunRecord) -> datetime:
    assert run.idempotency_key is not None
    return parse_fire_key(run.idempotency_key)[1]


def test_serve_lives_through_a_full_disk_and_catches_up(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "6m") as disk:
        url = f"sqlite:///{disk / 'serve.db'}"
        effects = tmp_path / "effects.log"
        schedules = tmp_path / "schedules.yaml"
        schedules.write_text(EVERY_SECOND)
        start = datetime.now(UTC).replace(microsecond=0)
        run_async(_prepare_schedule(url, start))
        serve = Serve(
            url, schedules, tmp_path, "--polling-interval", "0.2", "--heartbeat-interval", "1",
            env={"CHAOS_EFFECTS": str(effects)},
        ).start()  # fmt: skip
        try:
            wait_for(lambda: len(run_async(_all_runs(url))) >= 3, 60, "the schedule fires")
            filler = fill(disk)
            wait_for(lambda: "is full" in serve.output(), 60, "serve reports the full disk")
            assert serve.alive()
            filler.unlink()
            last = datetime.now(UTC).replace(microsecond=0)
            # A run whose checkpoint hit the full disk is given back as soon as the store takes the
            # release again, not when its lease (30 s) runs out: well within 20 s of the space freed.
            wait_for(
                lambda: _exactly_once_until(url, start, last).ok,
                20,
                "every fire time of the outage caught up, run once and completed",
            )
            assert serve.alive()
        finally:
            assert serve.stop() == 0
        errors = [line for line in serve.output().splitlines() if "is full" in line]
        # Said, not shouted: repeated identical warnings are rate-limited.
        assert len(errors) < 40, "\n".join(errors[:50])
        assert "Traceback" not in "\n".join(errors)


def test_serve_lives_through_a_database_locked_past_its_budget(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}?busy_timeout=1"
    effects = tmp_path / "effects.log"
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(EVERY_SECOND)
    start = datetime.now(UTC).replace(microsecond=0)
    run_async(_prepare_schedule(url, start))
    serve = Serve(
        url, schedules, tmp_path, "--polling-interval", "0.2", "--heartbeat-interval", "1",
        env={"CHAOS_EFFECTS": str(effects)},
    ).start()  # fmt: skip
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(run_async(_all_runs(url))) >= 3, 60, "the schedule fires")
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("lock\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"
        wait_for(lambda: "stayed locked" in serve.output(), 60, "serve reports the lock")
        assert serve.alive()
        holder.stdin.write("unlock\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "unlocked"
        last = datetime.now(UTC).replace(microsecond=0)
        wait_for(lambda: _exactly_once_until(url, start, last).ok, 90, "caught up after the lock")
    finally:
        holder.kill()
        holder.wait(10)
        assert serve.stop() == 0
    errors = [line for line in serve.output().splitlines() if "stayed locked" in line]
    assert 0 < len(errors) < 40 and "Traceback" not in "\n".join(errors)


_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
for line in sys.stdin:
    if line.strip() == "lock":
        conn.execute("BEGIN IMMEDIATE")
        print("locked", flush=True)
    elif line.strip() == "unlock":
        conn.execute("ROLLBACK")
        print("unlocked", flush=True)
"""


def test_serve_on_a_read_only_database_refuses_with_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    url = f"sqlite:///{folder / 'ro.db'}"
    run_async(_prepare_schedule(url, datetime.now(UTC)))
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text("schedules: {}\n")
    with read_only_tree(folder):
        done = subprocess.run(
            [*CLI, "--database", url, "--jobs", "chaos_jobs", "--schedules", str(schedules), "serve"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}"},
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "not writable" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert sqlite3.connect(folder / "ro.db").execute("SELECT count(*) FROM runs").fetchone() == (0,)
