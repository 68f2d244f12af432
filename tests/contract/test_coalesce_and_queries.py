"""Store contract, continued: coalescing triggers, label filters, log positions, dropping steps.

Run against every backend like test_store_contract.py (whose helpers it uses). What users rely on:

* a trigger with ``coalesce`` joins the pending, never-started run of its job and concurrency key
  instead of queuing another, and two such triggers racing from different connections (or
  processes) make one run between them;
* ``RunQuery.labels`` finds exactly the runs carrying every label given;
* ``last_log_id`` is where "log lines from now on" start;
* ``delete_steps`` only ever drops the checkpoints of a completed run.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from durably_sched.store.base import NewRun, RunQuery, Store
from tests.backends import Backend
from tests.contract.test_store_contract import (
    JOB,
    checkpoint,
    claim_one,
    create,
    log_line,
    new_run,
)


def coalescing(**options: Any) -> NewRun:
    return dataclasses.replace(new_run(**options), coalesce=True)


async def trigger(store: Store, **options: Any) -> tuple[str, str]:
    [(record, disposition)] = await store.create_runs([coalescing(**options)])
    return record.id, disposition


# -- coalescing --------------------------------------------------------------------------------------


async def test_a_coalescing_trigger_joins_the_pending_run_of_its_job_and_key(store: Store) -> None:
    first_id, first = await trigger(store, ckey="K", input={"v": 1})
    assert first == "created"
    again_id, again = await trigger(store, ckey="K", input={"v": 2}, labels={"why": "second"})
    assert (again_id, again) == (first_id, "coalesced")
    joined = await store.get_run(first_id)
    assert joined is not None and joined.input == {"v": 1} and joined.labels == {}  # the first's
    assert len(await store.list_runs(RunQuery())) == 1
    # Another job with the same key, or the same job with another key, is not the same work.
    assert (await trigger(store, job="other", ckey="K"))[1] == "created"
    assert (await trigger(store, ckey="L"))[1] == "created"
    # A trigger without coalesce still queues behind it.
    plain = await create(store, ckey="K")
    assert plain.id != first_id
    assert len(await store.list_runs(RunQuery(job_name=JOB))) == 3


async def test_coalescing_joins_the_oldest_pending_run_of_the_key(store: Store) -> None:
    older = await create(store, ckey="K")
    await create(store, ckey="K")
    assert await trigger(store, ckey="K") == (older.id, "coalesced")


async def test_runs_that_started_or_finished_are_never_joined(store: Store) -> None:
    await create(store, ckey="K")
    running = await claim_one(store)
    # Running: the new trigger's work would not be seen by steps already under way.
    queued_id, disposition = await trigger(store, ckey="K")
    assert disposition == "created" and queued_id != running.id
    # Released (graceful stop) or retried: pending again, but it has already started once.
    await store.release_run(running.id, running.generation)
    assert await trigger(store, ckey="K") == (queued_id, "coalesced")
    cancelled = await store.cancel_run(queued_id)
    assert cancelled is not None and cancelled.status == "cancelled"
    fresh_id, disposition = await trigger(store, ckey="K")
    assert disposition == "created" and fresh_id not in (running.id, queued_id)
    released = await store.get_run(running.id)
    assert released is not None and released.status == "pending" and released.started_at is not None


async def test_an_idempotency_key_match_comes_before_coalescing(store: Store) -> None:
    keyed_id, _ = await trigger(store, ckey="K", key="once")
    pending_id, _ = await trigger(store, ckey="K2")
    # The idempotent run exists: it is returned, whatever is pending for the key.
    assert await trigger(store, ckey="K2", key="once") == (keyed_id, "idempotent")
    assert await trigger(store, ckey="K2", key="new") == (pending_id, "coalesced")


async def test_a_batch_coalesces_onto_a_run_it_created_itself(store: Store) -> None:
    results = await store.create_runs([coalescing(ckey="K", input={"i": i}) for i in range(3)])
    assert [d for _, d in results] == ["created", "coalesced", "coalesced"]
    assert len({r.id for r, _ in results}) == 1
    mixed = await store.create_runs([new_run(ckey="M"), coalescing(ckey="M"), new_run()])
    assert [d for _, d in mixed] == ["created", "coalesced", "created"]
    assert mixed[1][0].id == mixed[0][0].id


async def test_racing_coalescing_triggers_make_one_run(backend: Backend, store: Store) -> None:
    """Six connections trigger the same key at once, twenty rounds; a claimer takes the run between
    rounds, so each round starts with nothing to join. Select-then-insert without the insert's own
    transaction (or the advisory lock on PostgreSQL) makes several runs in a round."""
    stores = [store] + [await backend.open_store(migrate=False) for _ in range(5)]
    for round_no in range(20):
        results = await asyncio.gather(*(trigger(s, ckey="race", input={"r": round_no}) for s in stores))
        dispositions = sorted(d for _, d in results)
        assert dispositions == ["coalesced"] * 5 + ["created"], f"round {round_no}: {dispositions}"
        assert len({run_id for run_id, _ in results}) == 1, f"round {round_no}"
        claimed = await store.claim("w", [JOB], 5, 30)
        assert len(claimed) == 1
        assert await store.complete_run(claimed[0].id, claimed[0].generation, None) == "ok"
    assert len(await store.list_runs(RunQuery(limit=100))) == 20


# -- label filters ------------------------------------------------------------------------------------


async def test_list_runs_by_labels_needs_every_label_with_its_exact_value(store: Store) -> None:
    a = await create(store, labels={"team": "data", "env": "prod"})
    b = await create(store, labels={"team": "data", "env": "dev"})
    c = await create(store, job="other", labels={"team": "web", 'odd "key".x': "v"})

    def ids(**query: Any) -> Any:
        return store.list_runs(RunQuery(**query))

    assert [r.id for r in await ids(labels={"team": "data"})] == [b.id, a.id]
    assert [r.id for r in await ids(labels={"team": "data", "env": "prod"})] == [a.id]
    assert [r.id for r in await ids(labels={'odd "key".x': "v"})] == [c.id]
    assert await ids(labels={"team": "Data"}) == []
    assert await ids(labels={"missing": "x"}) == []
    assert await ids(labels={"team": "data", "env": "qa"}) == []
    assert [r.id for r in await ids(labels={"team": "data"}, job_name=JOB, limit=1)] == [b.id]
    assert await ids(labels={"team": "web"}, job_name=JOB) == []


# -- log positions and dropping steps ----------------------------------------------------------------


async def test_last_log_id_is_the_newest_line_of_the_run(store: Store) -> None:
    await create(store)
    await create(store)
    run = await claim_one(store)
    other = await claim_one(store, "w2")
    assert await store.last_log_id(run.id) == 0
    await store.append_logs(run.id, run.generation, [log_line("a"), log_line("b")])
    await store.append_logs(other.id, other.generation, [log_line("elsewhere")])
    newest = await store.last_log_id(run.id)
    logs = await store.get_logs(run.id)
    assert newest == logs[-1].id and [lg.message for lg in logs] == ["a", "b"]
    await store.append_logs(run.id, run.generation, [log_line("c")])
    assert [lg.message for lg in await store.get_logs(run.id, after_id=newest)] == ["c"]
    assert await store.last_log_id("missing") == 0


async def test_delete_steps_drops_only_the_steps_of_a_completed_run(store: Store) -> None:
    await create(store)
    await create(store)
    done = await claim_one(store)
    failed = await claim_one(store, "w2")
    for run in (done, failed):
        await store.checkpoint(checkpoint(run, "s1", 0))
        await store.checkpoint(checkpoint(run, "s2", 1))
    assert await store.delete_steps(done.id) == 0  # still running: its checkpoints are needed
    assert len(await store.get_steps(done.id)) == 2
    assert await store.complete_run(done.id, done.generation, {"ok": True}) == "ok"
    assert await store.fail_run(failed.id, failed.generation, "boom", "s3") == "ok"
    assert await store.delete_steps(done.id) == 2
    assert await store.get_steps(done.id) == []
    assert await store.delete_steps(failed.id) == 0  # retry resumes from these
    assert [s.name for s in await store.get_steps(failed.id)] == ["s1", "s2"]
    record = await store.get_run(done.id)
    assert record is not None and record.status == "completed" and record.step_count == 2
