"""The store's domain rules, written once above the backends' thin operations.

A rule is a generator that yields small operations (:data:`Op`: "take this fire time's record",
"is a run of this schedule active?", "insert these runs") and receives each one's answer. A
backend runs a whole rule inside ONE transaction of its own (SQLite: one write of the
group-commit writer, under ``BEGIN IMMEDIATE``; PostgreSQL: one transaction on a pool connection,
run again by the retry loop after a lost connection) and answers every operation with its own
SQL. So the sequence -- what is decided, in which order, from which answers -- lives here; the
SQL, the locks and the error handling live in the backends; and the same rule drives a
synchronous connection (SQLite) and an asynchronous one (PostgreSQL) alike (:func:`drive`,
:func:`drive_async`).

``replay`` is True when the backend runs a rule again after a failure whose commit it never
heard about (PostgreSQL only): the rule then recognises its own first attempt's writes by the ids
it chose (a run id, a pause's author and reason) and reports what that attempt did.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar, cast

from .records import (
    Disposition,
    Fire,
    FireOutcome,
    FireResult,
    NewLog,
    NewRun,
    RunRecord,
    StateChange,
)

T = TypeVar("T")


# -- the operations a backend answers ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LockSchedules:
    """Serialise fires of these schedules (sorted) until the transaction ends. Answer: None."""

    schedules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AdvanceCursor:
    """Move the schedule's cursor forward to ``to`` (never back). Answer: None."""

    schedule: str
    to: datetime


@dataclass(frozen=True, slots=True)
class SeenFire:
    """The record a fire time already had: its outcome and run (None when unknown or none)."""

    outcome: str | None
    run_id: str | None


@dataclass(frozen=True, slots=True)
class _OfFireTime:
    schedule: str
    fire_time: datetime
    outcome: FireOutcome


@dataclass(frozen=True, slots=True)
class TakeFireSlot(_OfFireTime):
    """Record the fire time with ``outcome`` unless it has a record (with ``replace_paused``, a
    ``paused`` record is taken over as if there were none). Answer: None when the record is now
    ours, else the :class:`SeenFire` that was there. The record's key (schedule, fire time) is what
    makes a fire time happen once, whichever process fires it."""

    replace_paused: bool


@dataclass(frozen=True, slots=True)
class RecordFire(_OfFireTime):
    """Set the outcome (and run) of a fire record taken in this transaction. Answer: None."""

    run_id: str | None


@dataclass(frozen=True, slots=True)
class _OfSchedule:
    schedule: str


@dataclass(frozen=True, slots=True)
class ScheduleActive(_OfSchedule):
    """Answer: whether a run of the schedule is pending or running."""


@dataclass(frozen=True, slots=True)
class FetchState(_OfSchedule):
    """Answer: the schedule's state, or None when it has no row."""


@dataclass(frozen=True, slots=True)
class FetchRun:
    """Answer: the run with this id, or None."""

    run_id: str


@dataclass(frozen=True, slots=True)
class _OfRun:
    run: NewRun


@dataclass(frozen=True, slots=True)
class LockCoalescing(_OfRun):
    """Make the look-ups and the insert that follow one step for every other coalescing trigger of
    the run's job and concurrency key. Answer: None."""


@dataclass(frozen=True, slots=True)
class FindIdempotent(_OfRun):
    """Answer: the existing run of the run's job and idempotency key, or None."""


@dataclass(frozen=True, slots=True)
class FindCoalesceTarget(_OfRun):
    """Answer: the oldest pending, never started run of the run's job and concurrency key, or None."""


@dataclass(frozen=True, slots=True)
class InsertRuns:
    """Insert the runs; one whose idempotency key (or id) exists resolves to the existing run.
    Answer: ``[(record, "created" | "idempotent")]`` in the order given."""

    runs: tuple[NewRun, ...]


@dataclass(frozen=True, slots=True)
class PauseState:
    """Pause the schedule (creating its state row if missing) unless it is paused already or, with
    ``min_failures``, has fewer failures since its last resume. Answer: the state after the pause,
    or None when nothing changed."""

    schedule: str
    by: str
    reason: str | None
    auto: bool
    min_failures: int
    at: datetime | None


@dataclass(frozen=True, slots=True)
class ResumeState:
    """Resume the schedule if it is paused. Answer: the state after, or None when not paused."""

    schedule: str
    by: str
    at: datetime | None


Op = (
    LockSchedules
    | AdvanceCursor
    | TakeFireSlot
    | RecordFire
    | ScheduleActive
    | FetchRun
    | LockCoalescing
    | FindIdempotent
    | FindCoalesceTarget
    | InsertRuns
    | PauseState
    | ResumeState
    | FetchState
)
Rule = Generator[Op, Any, T]
"""A rule: yields operations, receives their answers, returns its result."""
MakeRule = Callable[[bool], Rule[T]]
"""A rule waiting for its ``replay`` flag (the backend knows whether this is a replay)."""


def drive(rule: Rule[T], answer: Callable[[Op], Any]) -> T:
    """Run a rule on a synchronous connection (``answer`` runs each operation)."""
    try:
        op = next(rule)
        while True:
            op = rule.send(answer(op))
    except StopIteration as done:
        return cast(T, done.value)


async def drive_async(rule: Rule[T], answer: Callable[[Op], Awaitable[Any]]) -> T:
    """Run a rule on an asynchronous connection."""
    try:
        op = next(rule)
        while True:
            op = rule.send(await answer(op))
    except StopIteration as done:
        return cast(T, done.value)


# -- the rules -------------------------------------------------------------------------------------
def coalescing(run: NewRun) -> bool:
    return run.coalesce and run.concurrency_key is not None


def insert_run(run: NewRun, replay: bool) -> Rule[tuple[RunRecord, Disposition]]:
    """One trigger: a coalescing one resolves, in order, to the run of its idempotency key, to the
    pending run it joins, or to a new run; any other is an idempotent insert."""
    if coalescing(run):
        yield LockCoalescing(run)
        if replay:
            mine: RunRecord | None = yield FetchRun(run.id)
            if mine is not None:  # our first attempt committed the insert
                return mine, "created"
        if run.idempotency_key is not None:
            existing: RunRecord | None = yield FindIdempotent(run)
            if existing is not None:
                return existing, "idempotent"
        target: RunRecord | None = yield FindCoalesceTarget(run)
        if target is not None:
            return target, "coalesced"
    [result] = yield InsertRuns((run,))
    return cast("tuple[RunRecord, Disposition]", result)


def create_runs(runs: Sequence[NewRun], replay: bool) -> Rule[list[tuple[RunRecord, Disposition]]]:
    """Many triggers; without coalescing ones, one insert of them all."""
    if not any(coalescing(run) for run in runs):
        inserted: list[tuple[RunRecord, Disposition]] = yield InsertRuns(tuple(runs))
        return inserted
    out: list[tuple[RunRecord, Disposition]] = []
    for run in runs:
        out.append((yield from insert_run(run, replay)))
    return out


def fire_one(fire: Fire, replay: bool) -> Rule[FireResult]:
    """One fire time (see :class:`Fire`): deduplicate on its record, record an outcome without a
    run, skip while a run of the schedule is active, else insert the run and record it."""
    if fire.advance_cursor:
        yield AdvanceCursor(fire.schedule, fire.fire_time)
    first: FireOutcome = fire.outcome_without_run if fire.run is None else "triggered"
    seen: SeenFire | None = yield TakeFireSlot(fire.schedule, fire.fire_time, first, fire.replace_paused)
    if seen is not None:
        run: RunRecord | None = None if seen.run_id is None else (yield FetchRun(seen.run_id))
        if replay and fire.run is not None and seen.run_id == fire.run.id and seen.outcome == "triggered":
            return FireResult("triggered", run)  # our own first attempt committed
        return FireResult("deduplicated", run)
    if fire.run is None:
        return FireResult(first, None)
    if fire.skip_if_active and (yield ScheduleActive(fire.schedule)):
        yield RecordFire(fire.schedule, fire.fire_time, "skipped", None)
        return FireResult("skipped", None)
    record, disposition = yield from insert_run(fire.run, replay)
    outcome: FireOutcome = "triggered" if disposition == "created" else "deduplicated"
    yield RecordFire(fire.schedule, fire.fire_time, outcome, record.id)
    return FireResult(outcome, record)


def fire_many(fires: Sequence[Fire], replay: bool) -> Rule[list[FireResult]]:
    """Many fire times in one transaction, in the order given. The schedules are locked first, in
    name order, so that a run of the schedule created by another process's fire that committed
    before us is seen by ``skip_if_active``."""
    yield LockSchedules(tuple(sorted({fire.schedule for fire in fires})))
    results: list[FireResult] = []
    for fire in fires:
        results.append((yield from fire_one(fire, replay)))
    return results


def pause(request: PauseState, replay: bool) -> Rule[StateChange]:
    """Pause unless paused already (or too few failures for an automatic pause). On replay, a pause
    with our author and reason is our own first attempt, committed unheard."""
    state = yield request
    if state is not None:
        return StateChange(state, True)
    found = yield FetchState(request.schedule)
    assert found is not None  # the row was created by PauseState
    mine = replay and found.paused and found.paused_by == request.by and found.pause_reason == request.reason
    return StateChange(found, mine)


def resume(request: ResumeState, replay: bool) -> Rule[StateChange | None]:
    """Resume a paused schedule and move its cursor to the moment of the resume (never back), so
    fire times of the paused span are never caught up behind the operator's back."""
    state = yield request
    if state is not None:
        assert state.resumed_at is not None
        yield AdvanceCursor(request.schedule, state.resumed_at)
        return StateChange(state, True)
    found = yield FetchState(request.schedule)
    if found is None:
        return None
    # On replay, a resume by us that committed unheard reads as "not paused": it was ours.
    return StateChange(found, replay and found.resumed_by == request.by)


# -- how an attempt ends -----------------------------------------------------------------------------
EndKind = Literal["completed", "failed", "retry", "released"]
END_STATUS: dict[EndKind, str] = {
    "completed": "completed",
    "failed": "failed",
    "retry": "pending",
    "released": "pending",
}
"""The status a run has after each ending (a replayed ending that finds it is our own write)."""


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """The terminal write of an attempt, fenced on the run being running under ``generation``:
    completed (``output``); failed (``error``, counts a failed attempt); retry (failed, counted,
    pending again from ``delay_seconds`` on, never negative); released (pending at once, uncounted).
    ``traceback`` is already bounded (rows.bounded_traceback)."""

    kind: EndKind
    run_id: str
    generation: int
    logs: Sequence[NewLog] = ()
    output: Any = None
    error: str | None = None
    failed_step_name: str | None = None
    traceback: str | None = None
    delay_seconds: float = 0.0


__all__ = [
    "END_STATUS",
    "AdvanceCursor",
    "AttemptEnd",
    "EndKind",
    "FetchRun",
    "FetchState",
    "FindCoalesceTarget",
    "FindIdempotent",
    "InsertRuns",
    "LockCoalescing",
    "LockSchedules",
    "MakeRule",
    "Op",
    "PauseState",
    "RecordFire",
    "ResumeState",
    "Rule",
    "ScheduleActive",
    "SeenFire",
    "TakeFireSlot",
    "coalescing",
    "create_runs",
    "drive",
    "drive_async",
    "fire_many",
    "fire_one",
    "insert_run",
    "pause",
    "resume",
]
