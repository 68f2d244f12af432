"""The store contract for schedule states (pause, resume, failure counts), on every backend.

What the scheduler, the CLI and the metrics rely on: a pause or resume happens once however many
processes ask at the same time; an automatic pause re-checks the failure count in the statement
that pauses; the database itself counts consecutive failures as runs of a schedule finish, so every
process reads the same number; a resume moves the cursor past the paused span; a paused fire
record is turned into a run once, never twice, when a catch-up replaces it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from durably_sched.store.base import Fire, RunRecord, Store
from tests.backends import Backend
from tests.contract.test_store_contract import create, fire, is_utc, slot

T = datetime(2030, 1, 1, 12, 30, tzinfo=UTC)


async def finish(store: Store, schedule: str, status: str) -> RunRecord:
    """A run of the schedule, claimed and finished with ``status`` (completed, failed, cancelled)."""
    run = await create(store, labels={"schedule": schedule}, job="j-" + schedule)
    [held] = await store.claim("w", ["j-" + schedule], 1, 30)
    assert held.id == run.id
    if status == "completed":
        assert await store.complete_run(held.id, held.generation, {"ok": True}) == "ok"
    elif status == "failed":
        assert await store.fail_run(held.id, held.generation, "ValueError: no", "step") == "ok"
    else:
        await store.cancel_run(held.id)
    final = await store.get_run(run.id)
    assert final is not None and final.status == status
    return final


async def test_pause_is_idempotent_and_resume_moves_the_cursor(store: Store) -> None:
    assert await store.get_schedule_state("s") is None
    first = await store.pause_schedule("s", reason="migration", by="alice@a", at=T)
    assert first.changed
    state = first.state
    assert (state.paused, state.paused_at, state.paused_by, state.pause_reason, state.auto_paused) == (
        True,
        T,
        "alice@a",
        "migration",
        False,
    )
    again = await store.pause_schedule("s", reason="other", by="bob@b", at=T + timedelta(minutes=1))
    assert not again.changed and again.state == state  # the first pause stands, untouched
    await store.advance_cursor("s", T + timedelta(minutes=2))
    resumed = await store.resume_schedule("s", by="carol@c", at=T + timedelta(minutes=5))
    assert resumed is not None and resumed.changed
    after = resumed.state
    assert not after.paused and after.resumed_by == "carol@c" and after.resumed_at == T + timedelta(minutes=5)
    assert (after.paused_at, after.paused_by) == (T, "alice@a")  # the last pause is kept for display
    assert await store.get_cursors() == {"s": T + timedelta(minutes=5)}
    not_paused = await store.resume_schedule("s", by="dave@d", at=T + timedelta(minutes=9))
    assert not_paused is not None and not not_paused.changed and not_paused.state.resumed_by == "carol@c"
    assert await store.get_cursors() == {"s": T + timedelta(minutes=5)}
    assert await store.resume_schedule("never", by="x") is None
    # The store's own clock when no time is given.
    before = datetime.now(UTC) - timedelta(seconds=5)
    own = await store.pause_schedule("t", reason=None, by="e")
    assert own.state.paused_at is not None and is_utc(own.state.paused_at) and own.state.paused_at > before


async def test_concurrent_pauses_and_resumes_change_the_state_once(backend: Backend, store: Store) -> None:
    stores = [store] + [await backend.open_store(migrate=False) for _ in range(5)]
    pauses = await asyncio.gather(
        *(s.pause_schedule("race", reason=f"r{i}", by=f"u{i}") for i, s in enumerate(stores))
    )
    assert sum(p.changed for p in pauses) == 1
    winner = next(p.state for p in pauses if p.changed)
    assert all(p.state.paused_by == winner.paused_by for p in pauses)
    resumes = await asyncio.gather(*(s.resume_schedule("race", by="x") for s in stores))
    assert sum(1 for r in resumes if r is not None and r.changed) == 1


async def test_the_database_counts_failures_as_runs_of_a_schedule_finish(
    backend: Backend, store: Store
) -> None:
    other = await backend.open_store(migrate=False)
    f1 = await finish(store, "s", "failed")
    await finish(store, "s", "cancelled")  # neither a failure nor a success
    f2 = await finish(store, "s", "failed")
    await finish(store, "unrelated", "failed")
    await create(store, job="plain")  # not a scheduled run: no state row
    state = await other.get_schedule_state("s")
    assert state is not None
    assert (state.consecutive_failures, state.last_failed_run_id, state.last_success_at) == (2, f2.id, None)
    assert state.last_failure_at == f2.completed_at
    assert set(await other.get_schedule_states()) == {"s", "unrelated"}
    ok = await finish(store, "s", "completed")
    reset = await other.get_schedule_state("s")
    assert reset is not None and reset.consecutive_failures == 0 and reset.last_success_at == ok.completed_at
    assert reset.last_failed_run_id == f1.id or reset.last_failed_run_id == f2.id
    assert set(await other.get_schedule_states(attention_only=True)) == {"unrelated"}
    # A failed run retried and completed is a success too; the retry itself changes nothing.
    f3 = await finish(store, "s", "failed")
    await store.retry_run(f3.id)
    assert (await store.get_schedule_state("s")).consecutive_failures == 1  # type: ignore[union-attr]
    [held] = await store.claim("w", ["j-s"], 1, 30)
    await store.complete_run(held.id, held.generation, None)
    assert (await store.get_schedule_state("s")).consecutive_failures == 0  # type: ignore[union-attr]


async def test_concurrent_failures_of_one_schedule_are_all_counted(backend: Backend, store: Store) -> None:
    stores = [store] + [await backend.open_store(migrate=False) for _ in range(3)]
    for _ in range(12):
        await create(store, labels={"schedule": "busy"}, job="j-busy")
    held = await store.claim("w", ["j-busy"], 12, 30)

    async def fail(i: int) -> None:
        run = held[i]
        assert await stores[i % len(stores)].fail_run(run.id, run.generation, "boom", None) == "ok"

    await asyncio.gather(*(fail(i) for i in range(12)))
    state = await store.get_schedule_state("busy")
    assert state is not None and state.consecutive_failures == 12


async def test_an_automatic_pause_needs_the_failures_since_the_last_resume(store: Store) -> None:
    for _ in range(2):
        await finish(store, "s", "failed")
    too_soon = await store.pause_schedule("s", reason="auto", by="auto", auto=True, min_failures=3)
    assert not too_soon.changed and not too_soon.state.paused
    third = await finish(store, "s", "failed")
    paused = await store.pause_schedule("s", reason="auto", by="auto", auto=True, min_failures=3, at=T)
    assert paused.changed and paused.state.auto_paused
    assert paused.state.paused_at == third.completed_at  # counts from the failure, not from "now"
    await store.resume_schedule("s", by="ops")
    state = await store.get_schedule_state("s")
    assert state is not None and state.consecutive_failures == 3 and state.failures_since_resume == 0
    again = await store.pause_schedule("s", reason="auto", by="auto", auto=True, min_failures=3)
    assert not again.changed  # the failures before the resume do not count again
    for _ in range(3):
        await finish(store, "s", "failed")
    assert (await store.pause_schedule("s", reason="auto", by="auto", auto=True, min_failures=3)).changed
    # A manual pause after a resume is a manual pause (auto_paused cleared).
    await store.resume_schedule("s", by="ops")
    manual = await store.pause_schedule("s", reason="by hand", by="ops")
    assert manual.changed and not manual.state.auto_paused


async def test_a_paused_record_is_replaced_by_a_run_once(backend: Backend, store: Store) -> None:
    recorded = await store.fire(fire("s", 0, run=False, outcome_without_run="paused"))
    assert (recorded.outcome, recorded.run) == ("paused", None)
    assert (await store.fire(fire("s", 0))).outcome == "deduplicated"  # a paused record is a record
    stores = [store] + [await backend.open_store(migrate=False) for _ in range(4)]
    results = await asyncio.gather(*(s.fire(fire("s", 0, replace_paused=True)) for s in stores))
    assert sorted(r.outcome for r in results) == ["deduplicated"] * 4 + ["triggered"]
    assert len({r.run.id for r in results if r.run is not None}) == 1
    [record] = await store.list_fire_records("s")
    assert record.outcome == "triggered" and record.run_id is not None
    # Other outcomes are never replaced.
    await store.fire(fire("s", 1, run=False, outcome_without_run="missed"))
    assert (await store.fire(fire("s", 1, replace_paused=True))).outcome == "deduplicated"
    # A fire time with no record at all fires as usual.
    assert (await store.fire(fire("s", 2, replace_paused=True))).outcome == "triggered"
    skipped = await store.fire(fire("s", 3, run=False, outcome_without_run="paused"))
    assert skipped.outcome == "paused"
    active = await store.fire(
        Fire(schedule="s", fire_time=slot(3), run=fire("s", 3).run, skip_if_active=True, replace_paused=True)
    )
    assert active.outcome == "skipped"  # the schedule's overlap rule still applies to a catch-up


async def test_last_run_times_are_the_newest_run_of_each_schedule(store: Store) -> None:
    await store.advance_cursor("a", slot(0))
    await store.advance_cursor("quiet", slot(0))
    first = await store.fire(fire("a", 1))
    newest = await store.fire(fire("a", 2))
    assert first.run is not None and newest.run is not None
    times = await store.last_run_times()
    assert times == {"a": newest.run.created_at}
    assert all(is_utc(t) for t in times.values())
