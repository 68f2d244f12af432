"""A database made by the first release (0.1.0) upgrades in place, with nothing lost.

The databases are text dumps that the release's own code filled (tests/fixtures/v1/make_v1.py runs
the package as it was at the release commit): runs in every state, steps, logs, fire records and
cursors. Each test loads one into an empty database of its backend, runs this version's
``migrate``, and checks that everything the old code could read is read back the same, and that
the old runs still behave: the pending one runs, the one left running by a dead worker resumes
after its completed step, the failed one can be retried, a recorded fire time stays deduplicated.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from durably_sched import SchemaVersionError, Step, create_durably, define_job
from durably_sched.store._common import SCHEMA_VERSION
from durably_sched.store.base import Fire, NewRun, RunQuery, Store
from tests.backends import Backend, PostgresBackend, SqliteBackend
from tests.helpers import until

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


async def load_v1(backend: Backend, release: str = "v1") -> dict[str, Any]:
    """Restore a release's database (``v1``: 0.1.0; ``v2``: the previous release, schema 5) into
    the backend's empty database; its expected reads."""
    folder = FIXTURES / release
    if isinstance(backend, SqliteBackend):
        conn = sqlite3.connect(backend.path)
        try:
            conn.executescript((folder / "sqlite.sql").read_text(encoding="utf-8"))
        finally:
            conn.close()
        return json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    assert isinstance(backend, PostgresBackend)
    dump = (folder / "postgres.sql").read_text(encoding="utf-8")
    conn = await backend.admin()
    await conn.execute(dump.replace(f"{release}fixture", backend.schema))
    await conn.execute(f'SET search_path = "{backend.schema}"')
    return json.loads((folder / "postgres-expected.json").read_text(encoding="utf-8"))


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()


async def reads(store: Store, ids: dict[str, str]) -> dict[str, Any]:
    """What the release's code read back, read by this version (same shape as expected.json)."""
    out: dict[str, Any] = {"ids": ids, "runs": {}, "steps": {}, "logs": {}}
    for key, run_id in ids.items():
        r = await store.get_run(run_id)
        assert r is not None, key
        out["runs"][key] = {
            "id": r.id,
            "job_name": r.job_name,
            "status": r.status,
            "input": r.input,
            "output": r.output,
            "error": r.error,
            "failed_step_name": r.failed_step_name,
            "idempotency_key": r.idempotency_key,
            "concurrency_key": r.concurrency_key,
            "labels": r.labels,
            "generation": r.generation,
            "worker_id": r.worker_id,
            "step_count": r.step_count,
            "attempt": r.attempt,
            "progress": None
            if r.progress is None
            else [r.progress.current, r.progress.total, r.progress.message],
            "created_at": _iso(r.created_at),
            "started_at": _iso(r.started_at),
            "completed_at": _iso(r.completed_at),
        }
        out["steps"][key] = [
            [s.index, s.name, s.output_json, _iso(s.started_at), _iso(s.completed_at)]
            for s in await store.get_steps(run_id)
        ]
        out["logs"][key] = [
            [lg.step_name, lg.level, lg.message, lg.data, _iso(lg.created_at)]
            for lg in await store.get_logs(run_id)
        ]
    out["fire_records"] = {
        name: [[_iso(f.fire_time), f.outcome, f.run_id] for f in await store.list_fire_records(name)]
        for name in ("nightly", "pulse")
    }
    out["cursors"] = {k: _iso(v) for k, v in sorted((await store.get_cursors()).items())}
    return out


async def test_a_release_database_upgrades_with_every_record_intact(backend: Backend) -> None:
    expected = await load_v1(backend)
    store = await backend.open_store(migrate=False)
    if SCHEMA_VERSION > 1:
        with pytest.raises(SchemaVersionError, match="older than"):
            await store.check_schema()  # the old schema is recognised as old, not as foreign
    assert await store.migrate() == SCHEMA_VERSION
    await store.check_schema()
    assert await store.migrate() == SCHEMA_VERSION  # idempotent on an upgraded database
    assert await reads(store, expected["ids"]) == expected
    # What later migrations index for old rows: run-id prefixes and labels.
    ids = expected["ids"]
    assert await store.find_run_ids(ids["pending"], 5) == [ids["pending"]]
    assert len(await store.find_run_ids(ids["pending"][:24], 10)) == len(ids)
    by_label = await store.list_runs(RunQuery(labels={"source": "api"}))
    assert [r.id for r in by_label] == [ids["pending"]]
    scheduled = await store.list_runs(RunQuery(labels={"schedule": "nightly"}))
    assert [r.id for r in scheduled] == [ids["scheduled"]]
    # What the failures migration adds has sensible values for the old rows.
    for key, run_id in expected["ids"].items():
        record = await store.get_run(run_id)
        assert record is not None
        assert (record.traceback, record.not_before, record.retry_policy, record.timeout) == (None,) * 4, key
        # The run that failed under 0.1.0 failed once; nothing else used up a retry budget.
        assert record.failed_attempts == (1 if record.status == "failed" else 0), key
    assert await store.list_workers() == []  # the 0.1.0 workers never registered
    assert await store.list_config_errors() == []  # no reload failed before the upgrade


async def test_old_runs_still_behave_after_the_upgrade(backend: Backend) -> None:
    expected = await load_v1(backend)
    ids = expected["ids"]
    await (await backend.open_store(migrate=False)).migrate()
    calls: list[str] = []

    async def thumbs(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        pixels = await step.run("load", lambda: calls.append(f"load {payload['file']}") or "pixels")
        await step.run("save", lambda: calls.append(f"save {payload['file']}"))
        return {"file": payload["file"], "pixels": pixels}

    async def report(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("fetch", lambda: calls.append("fetch") or [1, 2])
        await step.run("render", lambda: calls.append("render"))
        return {"pages": 1}

    durably = create_durably(
        backend.url, polling_interval=0.05, heartbeat_interval=0.2, stale_threshold=1.0, max_concurrent_runs=4
    ).register([define_job(name="thumbs", run=thumbs), define_job(name="report", run=report)])
    await durably.start()
    try:
        # The run a dead 0.1.0 worker held: its lease expired long ago; it resumes after "load".
        running = await durably.wait_for_run(ids["running"], timeout=20)
        assert running.status == "completed" and running.output == {"file": "b.ppm", "pixels": "pixels"}
        pending = await durably.wait_for_run(ids["pending"], timeout=20)
        assert pending.status == "completed"
        scheduled = await durably.wait_for_run(ids["scheduled"], timeout=20)
        assert scheduled.status == "completed"
        # The failed run resumes after its completed step when retried.
        await durably.retry(ids["failed"])
        failed = await durably.wait_for_run(ids["failed"], timeout=20)
        assert failed.status == "completed"
        assert [s.name for s in await durably.get_steps(ids["failed"])] == ["fetch", "render"]
        # The idempotency key recorded by 0.1.0 still holds.
        again = await durably.jobs.thumbs.trigger({"file": "c.ppm"}, idempotency_key="c-once")
        assert again.disposition == "idempotent" and again.id == ids["pending"]
        # A fire time recorded by 0.1.0 is still deduplicated.
        fire_time = dt.datetime(2026, 11, 20, 2, tzinfo=dt.UTC)
        result = await durably.fire(Fire("nightly", fire_time, NewRun(id="new", job_name="report", input={})))
        assert (
            result.outcome == "deduplicated" and result.run is not None and result.run.id == ids["scheduled"]
        )
    finally:
        await durably.close()
    assert "load b.ppm" not in calls  # completed by the old worker, never run again
    assert calls.count("fetch") == 1  # only the scheduled run fetched; the failed one replayed it
    assert {"save b.ppm", "load c.ppm", "save c.ppm", "render"} <= set(calls)


OLD_SCHEDULED_RUNS = [
    # (id, schedule, status, completed at): as the release left them, oldest first
    (
        "00000000-0000-4000-8000-0000000000a1",
        "nightly",
        "completed",
        dt.datetime(2026, 11, 17, 2, 5, tzinfo=dt.UTC),
    ),
    (
        "00000000-0000-4000-8000-0000000000a2",
        "nightly",
        "failed",
        dt.datetime(2026, 11, 18, 2, 5, tzinfo=dt.UTC),
    ),
    (
        "00000000-0000-4000-8000-0000000000a3",
        "nightly",
        "cancelled",
        dt.datetime(2026, 11, 18, 9, 0, tzinfo=dt.UTC),
    ),
    (
        "00000000-0000-4000-8000-0000000000a4",
        "nightly",
        "failed",
        dt.datetime(2026, 11, 19, 2, 5, tzinfo=dt.UTC),
    ),
    (
        "00000000-0000-4000-8000-0000000000a5",
        "pulse",
        "failed",
        dt.datetime(2026, 11, 20, 11, 0, tzinfo=dt.UTC),
    ),
]


async def add_old_scheduled_runs(backend: Backend) -> None:
    """Finished scheduled runs written into the release's schema, before the upgrade."""
    for run_id, schedule, status, done in OLD_SCHEDULED_RUNS:
        labels = json.dumps({"schedule": schedule, "scheduled_for": done.strftime("%Y-%m-%dT02:00:00Z")})
        if isinstance(backend, SqliteBackend):
            ms = int(done.timestamp() * 1000)
            backend._execute(
                "INSERT INTO runs (id, job_name, status, input, labels, schedule_name, generation, "
                "created_at, started_at, completed_at, updated_at) "
                "VALUES (?, 'report', ?, '{}', ?, ?, 1, ?, ?, ?, ?)",
                (run_id, status, labels, schedule, ms, ms, ms, ms),
            )
        else:
            assert isinstance(backend, PostgresBackend)
            conn = await backend.admin()
            await conn.execute(
                "INSERT INTO runs (id, job_name, status, input, labels, schedule_name, generation, "
                "created_at, started_at, completed_at, updated_at) "
                "VALUES ($1, 'report', $2, '{}', $3, $4, 1, $5, $5, $5, $5)",
                run_id,
                status,
                labels,
                schedule,
                done,
            )


async def test_schedule_states_start_from_the_runs_the_release_finished(backend: Backend) -> None:
    """0004 (schedule states): old databases get failure counts and last successes from their runs,
    their fire records accept the new 'paused' outcome, and counting goes on from there."""
    expected = await load_v1(backend)
    await add_old_scheduled_runs(backend)
    store = await backend.open_store(migrate=False)
    await store.migrate()
    states = await store.get_schedule_states()
    assert set(states) == {"nightly", "pulse"}
    nightly, pulse = states["nightly"], states["pulse"]
    # nightly: completed, failed, cancelled (not counted), failed -> two failures since the success.
    assert (nightly.consecutive_failures, nightly.last_failed_run_id) == (2, OLD_SCHEDULED_RUNS[3][0])
    assert nightly.last_success_at == OLD_SCHEDULED_RUNS[0][3]
    assert nightly.last_failure_at == OLD_SCHEDULED_RUNS[3][3]
    assert (pulse.consecutive_failures, pulse.last_success_at) == (1, None)
    assert not nightly.paused and not pulse.paused and nightly.paused_at is None
    assert await store.get_schedule_states(attention_only=True) == states  # both are failing
    # Everything the release wrote still reads back the same.
    assert await reads(store, expected["ids"]) == expected
    # The new outcome is accepted next to the old records, and pausing works on the old schedules.
    paused = await store.fire(Fire("pulse", dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC), None, "paused"))
    assert paused.outcome == "paused"
    assert (await store.pause_schedule("nightly", reason="after the upgrade", by="ops")).changed
    # The count goes on from the backfilled value as runs finish (the pending scheduled run, here).
    [run] = await store.claim("w-new", ["report"], 1, 30, run_ids=[expected["ids"]["scheduled"]])
    assert await store.fail_run(run.id, run.generation, "ValueError: still down", None) == "ok"
    after = await store.get_schedule_state("nightly")
    assert after is not None and after.consecutive_failures == 3 and after.paused


# -- the previous release (schema 5, tests/fixtures/v2) ---------------------------------------------


async def reads_v2(store: Store, ids: dict[str, str]) -> dict[str, Any]:
    """What the previous release's code read back, read by this version (expected.json's shape)."""
    out = await reads(store, ids)
    for key, run_id in ids.items():
        r = await store.get_run(run_id)
        assert r is not None
        out["runs"][key].update(
            traceback=r.traceback,
            failed_attempts=r.failed_attempts,
            not_before=_iso(r.not_before),
            retry_policy=r.retry_policy,
            timeout=r.timeout,
        )
    out["schedule_states"] = {
        name: [
            s.paused,
            _iso(s.paused_at),
            s.paused_by,
            s.pause_reason,
            s.auto_paused,
            s.consecutive_failures,
            s.failures_at_resume,
            _iso(s.last_success_at),
            _iso(s.last_failure_at),
            s.last_failed_run_id,
        ]
        for name, s in sorted((await store.get_schedule_states()).items())
    }
    out["workers"] = [
        [
            w.id,
            w.host,
            w.host_key,
            w.pid,
            w.process_start,
            w.version,
            list(w.jobs),
            w.concurrency,
            w.lease_seconds,
            w.runs_held,
            _iso(w.started_at),
            _iso(w.heartbeat_at),
            _iso(w.gone_at),
            w.gone_by,
        ]
        for w in await store.list_workers()
    ]
    return out


async def test_the_previous_release_database_upgrades_with_every_record_intact(backend: Backend) -> None:
    expected = await load_v1(backend, "v2")
    store = await backend.open_store(migrate=False)
    with pytest.raises(SchemaVersionError, match="older than"):
        await store.check_schema()
    assert await store.migrate() == SCHEMA_VERSION
    await store.check_schema()
    assert await store.migrate() == SCHEMA_VERSION  # idempotent on an upgraded database
    assert await reads_v2(store, expected["ids"]) == expected
    assert expected["runs"]["failed"]["traceback"].endswith("ValueError: bad day\n")  # the fixture has it
    assert expected["schedule_states"]["pulse"][0] is True  # ... and a paused schedule
    # v15: the label `schedule` is answered from the schedule column; the release's scheduled runs
    # are still found by it, and by the label they carry besides.
    ids = expected["ids"]
    nightly = [ids["scheduled"], ids["scheduled_failed"]]
    assert [r.id for r in await store.list_runs(RunQuery(labels={"schedule": "nightly"}))] == nightly
    assert [r.id for r in await store.list_runs(RunQuery(schedule="nightly"))] == nightly
    for_day = RunQuery(labels={"schedule": "nightly", "scheduled_for": "2026-12-01T02:00:00Z"})
    assert [r.id for r in await store.list_runs(for_day)] == [ids["scheduled"]]


async def test_an_upgraded_run_shows_the_last_attempt_the_release_stored(backend: Backend) -> None:
    """0007: a run finished (or waiting for a retry) under the previous release shows one attempt,
    made from what the run kept: its last one, with the error and traceback of a failure; its start
    only when it was the first attempt. Earlier attempts were never stored and are not invented."""
    expected = await load_v1(backend, "v2")
    ids, runs = expected["ids"], expected["runs"]
    store = await backend.open_store(migrate=False)
    await store.migrate()
    shown = {key: await store.get_attempts(run_id) for key, run_id in ids.items()}
    assert {key: [(a.attempt, a.outcome) for a in found] for key, found in shown.items()} == {
        "completed": [(1, "completed")],
        "failed": [(1, "failed")],
        "retrying": [(1, "failed")],  # waiting for its backoff
        "retried": [(2, "completed")],  # its failed first attempt was not kept by the release
        "cancelled": [],
        "running": [],  # still running: nothing ended yet
        "pending": [],
        "scheduled": [],
        "scheduled_failed": [(1, "failed")],
    }
    [failed] = shown["failed"]
    assert (failed.error, failed.failed_step_name, failed.traceback) == (
        runs["failed"]["error"],
        "render",
        runs["failed"]["traceback"],
    )
    assert failed.worker_id == "w-old:1:aaaa"
    assert _iso(failed.started_at) == runs["failed"]["started_at"]
    assert _iso(failed.ended_at) == runs["failed"]["completed_at"]
    [retrying] = shown["retrying"]
    assert (retrying.error, retrying.failed_step_name) == ("TimeoutError: upstream slow", "fetch")
    [retried] = shown["retried"]
    assert retried.started_at is None and retried.error is None  # its start is not known
    assert _iso(retried.ended_at) == runs["retried"]["completed_at"]


async def test_a_run_the_previous_release_left_running_records_its_lost_attempt_on_resume(
    backend: Backend,
) -> None:
    expected = await load_v1(backend, "v2")
    ids = expected["ids"]
    await (await backend.open_store(migrate=False)).migrate()

    async def thumbs(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        pixels = await step.run("load", lambda: "fresh")
        await step.run("save", lambda: None)
        return {"file": payload["file"], "pixels": pixels}

    durably = create_durably(
        backend.url, polling_interval=0.05, heartbeat_interval=0.2, stale_threshold=1.0, max_concurrent_runs=4
    ).register([define_job(name="thumbs", run=thumbs)])
    await durably.start()
    try:
        running = await durably.wait_for_run(ids["running"], timeout=20)
        assert running.status == "completed" and running.output == {"file": "b.ppm", "pixels": "pixels"}
        attempts = await durably.get_attempts(ids["running"])
    finally:
        await durably.close()
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "lease_lost"), (2, "completed")]
    assert attempts[0].worker_id == "w-old:2:bbbb" and attempts[1].worker_id not in (None, "w-old:2:bbbb")
    assert _iso(attempts[0].started_at) == expected["runs"]["running"]["started_at"]


@pytest.mark.parametrize("release", ["v1", "v2"])
async def test_an_upgraded_database_has_free_buckets_for_its_schedulers(
    backend: Backend, release: str
) -> None:
    """0010 (schedulers share the schedules): every bucket exists, free; the first scheduler to
    beat after the upgrade owns them all, and its cursors and fire records are the release's."""
    await load_v1(backend, release)
    store = await backend.open_store(migrate=False)
    await store.migrate()
    cursors = await store.get_cursors()
    assert cursors  # the release's cursors are there
    assert await store.list_schedulers() == []
    from durably_sched.schedule.ownership import BUCKETS
    from durably_sched.store.base import SchedulerInfo

    lease = await store.balance_buckets(SchedulerInfo("s", "h", 1, 2, None), 30.0, BUCKETS)
    assert lease.buckets == frozenset(range(BUCKETS))
    assert await store.get_cursors() == cursors


@pytest.mark.parametrize("release", ["v1", "v2"])
async def test_a_release_database_upgrades_to_durable_waits(backend: Backend, release: str) -> None:
    """The old runs have no wait, parent or children; new runs sleep, wait for events and start
    children on the upgraded database, and the attempt that waits is recorded as suspended."""
    expected = await load_v1(backend, release)
    store = await backend.open_store(migrate=False)
    assert await store.migrate() == SCHEMA_VERSION
    for run_id in expected["ids"].values():
        old = await store.get_run(run_id)
        assert old is not None and (old.wait, old.parent_run_id, old.waiting_for) == (None, None, None)
        assert await store.list_children(run_id) == []

    async def kid(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {"n": payload["n"]}

    async def flow(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.sleep("nap", 0.1)
        data = await step.wait_for_event("go", f"go:{release}", timeout="1h")
        return {"data": data, "kid": await step.run_job("kid", "kid", {"n": 1})}

    durably = create_durably(backend.url, polling_interval=0.05).register(
        [define_job(name="flow", run=flow), define_job(name="kid", run=kid)]
    )
    await durably.start()
    try:
        run = await durably.trigger("flow")

        async def waiting_for_event() -> bool:
            waiting = (await durably.get_run(run.id)).waiting_for
            return waiting is not None and waiting["kind"] == "event"

        await until(waiting_for_event, 20, "the run waits for its event")
        assert await durably.send_event(f"go:{release}", [1]) == 1
        done = await durably.wait_for_run(run.id, timeout=20)
        attempts = await durably.get_attempts(run.id)
    finally:
        await durably.close()
    assert done.output == {"data": [1], "kid": {"n": 1}}
    assert [a.outcome for a in attempts] == ["suspended", "suspended", "suspended", "completed"]


@pytest.mark.parametrize("release", ["v1", "v2"])
async def test_the_first_sync_makes_a_release_s_yaml_schedules_version_1_with_their_state_kept(
    backend: Backend, release: str
) -> None:
    """0011 (schedules as data): the release kept schedules only in its file. The first scheduler
    to load the file after the upgrade syncs each entry as version 1 (op ``sync``, source yaml);
    the pause, the cursors and the fire records the release stored stay as they were (the cursor
    is not moved: the catch-up policy still applies from it), and the old runs have no version."""
    expected = await load_v1(backend, release)
    store = await backend.open_store(migrate=False)
    await store.migrate()
    cursors = await store.get_cursors()
    states = await store.get_schedule_states()
    names = sorted(cursors)
    records = {name: await store.list_fire_records(name, limit=1000) for name in names}
    from durably_sched.store.schedule_defs import SyncEntry

    definition = {"cron": "0 2 * * *", "job": "report"}
    entries = [SyncEntry(name, definition, "schedules.yaml", 3 + i) for i, name in enumerate(names)]
    result = await store.sync_schedules(entries, by="serve-1")
    assert sorted((v.name, v.version, v.op, v.source) for v in result.versions) == [
        (name, 1, "sync", "yaml") for name in names
    ]
    assert await store.get_cursors() == cursors
    assert await store.get_schedule_states() == states
    for name in names:
        assert await store.list_fire_records(name, limit=1000) == records[name]
    for run_id in expected["ids"].values():
        old = await store.get_run(run_id)
        assert old is not None and old.schedule_version is None
    # 0014 (the sync mark) on the upgraded database: a second serve with the same file writes
    # nothing; a changed file does, and so does the first file again.
    seq = await store.schedule_seq()
    assert (await store.sync_schedules(entries, by="serve-2")).versions == []
    assert await store.schedule_seq() == seq
    changed = [SyncEntry(names[0], {**definition, "cron": "0 3 * * *"}, "schedules.yaml", 3)]
    assert [
        (v.name, v.version) for v in (await store.sync_schedules(changed + entries[1:], by="s")).versions
    ] == [(names[0], 2)]
    assert (await store.sync_schedules(entries, by="serve-1")).versions[0].version == 3


@pytest.mark.parametrize("release", ["v1", "v2"])
async def test_an_upgraded_database_streams_the_old_runs_from_now_on(backend: Backend, release: str) -> None:
    """0012 (the run stream): the release's runs keep their data and simply have no past
    transitions; a subscriber of one of them gets its events from now on (the run the release left
    running resumes, ends, and says so), and the transition log is new and empty before that."""
    expected = await load_v1(backend, release)
    store = await backend.open_store(migrate=False)
    assert await store.migrate() == SCHEMA_VERSION
    ids = expected["ids"]
    assert await store.get_run_events_since(dict.fromkeys(ids.values(), 0)) == {}
    assert await store.last_run_event_id() == 0
    for run_id in ids.values():
        assert await store.get_run(run_id) is not None  # the data is kept

    async def thumbs(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("load", lambda: "fresh")
        await step.run("save", lambda: None)
        return {"file": payload["file"]}

    def make() -> Any:
        return create_durably(
            backend.url, polling_interval=0.05, heartbeat_interval=0.2, stale_threshold=1.0
        ).register([define_job(name="thumbs", run=thumbs)])

    watcher, executor = make(), make()
    await watcher.start(worker=False)
    try:
        ends = {"completed": "run:complete", "failed": "run:fail", "cancelled": "run:cancel"}
        for key, end in ends.items():  # a finished run's stream is its end, at once
            if key in ids:
                assert [event.type async for event in watcher.subscribe(ids[key])] == [end]
        if "running" in ids:
            subscription = watcher.subscribe(ids["running"])
            await until(lambda: subscription.position is not None, 10, "the subscriber's first read")
            await executor.start()
            types = [event.type async for event in subscription]
            assert types[0] == "run:start" and types[-1] == "run:complete"
            assert "step:complete" in types
    finally:
        await watcher.close()
        await executor.close()
