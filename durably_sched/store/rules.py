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
    BucketLease,
    Disposition,
    Fire,
    FireOutcome,
    FireResult,
    NewLog,
    NewRun,
    RunRecord,
    SchedulerInfo,
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
class AdvanceCursors:
    """Move each schedule's cursor forward to its time (one time per schedule, sorted by name);
    a cursor at or past it is not written. Answer: None."""

    cursors: tuple[tuple[str, datetime], ...]


@dataclass(frozen=True, slots=True)
class SeenFire:
    """The record a fire time already had: its outcome and run (None when unknown or none)."""

    outcome: str | None
    run_id: str | None


@dataclass(frozen=True, slots=True)
class Slot:
    """One fire time to record: its outcome and run (the run's id is chosen before the insert)."""

    schedule: str
    fire_time: datetime
    outcome: FireOutcome
    run_id: str | None
    replace_paused: bool


@dataclass(frozen=True, slots=True)
class TakeFireSlots:
    """Record each fire time (distinct, sorted by schedule and fire time) unless it has a record
    (with ``replace_paused``, a ``paused`` record is taken over as if there were none). Answer: a
    list in the order given, None where the record is now ours, else the :class:`SeenFire` that
    was there. The record's key (schedule, fire time) is what makes a fire time happen once,
    whichever process fires it; a fire time another transaction is recording waits for it."""

    slots: tuple[Slot, ...]


@dataclass(frozen=True, slots=True)
class RecordFires:
    """Set the outcome and run of fire records taken in this transaction. Answer: None."""

    records: tuple[tuple[str, datetime, FireOutcome, str | None], ...]


@dataclass(frozen=True, slots=True)
class SchedulesActive:
    """Answer: the set of these schedules that have a pending or running run."""

    schedules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FetchRuns:
    """Answer: ``{run id: record}`` of those of these runs that exist."""

    run_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _OfSchedule:
    schedule: str


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


# -- scheduler bucket leases -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BeatScheduler:
    """Register the scheduler (or refresh its row): live until now + ``lease_seconds``. Answer:
    ``(database time, ids of the live schedulers, sorted)``, this one included."""

    info: SchedulerInfo
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class RenewBuckets:
    """Extend the owner's unexpired bucket leases that have less than half their length left.
    Answer: ``[(bucket, lease end)]`` of the buckets it owns under an unexpired lease."""

    owner: str
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class ReleaseBuckets:
    """Free these buckets of the owner; with ``buckets`` None, all of them, and the scheduler's row
    goes (it leaves). Answer: None."""

    owner: str
    buckets: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class TakeBuckets:
    """Lease up to ``count`` buckets that are free or whose lease expired, lowest first (one that
    another taker holds locked is passed over). Answer: ``[(bucket, lease end)]`` of those taken."""

    owner: str
    count: int
    lease_seconds: float


BucketOp = BeatScheduler | RenewBuckets | ReleaseBuckets | TakeBuckets


Op = (
    LockSchedules
    | AdvanceCursor
    | AdvanceCursors
    | TakeFireSlots
    | RecordFires
    | SchedulesActive
    | FetchRun
    | FetchRuns
    | LockCoalescing
    | FindIdempotent
    | FindCoalesceTarget
    | InsertRuns
    | PauseState
    | ResumeState
    | FetchState
    | BucketOp
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


def _slot(fire: Fire) -> Slot:
    if fire.run is None:
        return Slot(fire.schedule, fire.fire_time, fire.outcome_without_run, None, fire.replace_paused)
    return Slot(fire.schedule, fire.fire_time, "triggered", fire.run.id, fire.replace_paused)


def _cursor_moves(fires: Sequence[Fire]) -> tuple[tuple[str, datetime], ...]:
    latest: dict[str, datetime] = {}
    for fire in fires:
        if fire.advance_cursor and (fire.schedule not in latest or fire.fire_time > latest[fire.schedule]):
            latest[fire.schedule] = fire.fire_time
    return tuple(sorted(latest.items()))


def advance_cursors(moves: tuple[tuple[str, datetime], ...]) -> Rule[None]:
    """Many cursors forward in one operation (names sorted)."""
    yield AdvanceCursors(moves)


def fire_many(fires: Sequence[Fire], replay: bool) -> Rule[list[FireResult]]:
    """Many fire times in one transaction, each decided in the order given as one would be alone:
    deduplicate on its record, record an outcome without a run, skip while a run of the schedule
    is active (``skip_if_active``; runs created earlier in the batch count), else insert the run.

    Set-based: the cursors in one operation, every fire record in one (each taken with the outcome
    it will most likely keep: a run's fire time with "triggered" and the run's id, chosen before
    the insert), the active schedules in one read, the runs in one insert; only the rare fire time
    whose decision changes after it was taken (skipped, or its run's key existed already) is
    written again. So a scheduler that loses every fire time to another writes no row, and rows
    are locked in one global order (cursors, then fire records, each sorted), whatever order the
    batch lists them in. The schedules with ``skip_if_active`` are locked first, in name order, so
    that a run created by another process's fire that committed before us is seen."""
    skip = sorted({f.schedule for f in fires if f.skip_if_active and f.run is not None})
    if skip:
        yield LockSchedules(tuple(skip))
    moves = _cursor_moves(fires)
    if moves:
        yield AdvanceCursors(moves)
    first: dict[tuple[str, datetime], int] = {}  # a fire time listed twice: its first listing decides
    for i, fire in enumerate(fires):
        first.setdefault((fire.schedule, fire.fire_time), i)
    order = sorted(first.items())
    seen_list: list[SeenFire | None] = yield TakeFireSlots(tuple(_slot(fires[i]) for _, i in order))
    seen = {i: found for (_, i), found in zip(order, seen_list, strict=True)}
    known = tuple(sorted({s.run_id for s in seen.values() if s is not None and s.run_id is not None}))
    runs: dict[str, RunRecord] = (yield FetchRuns(known)) if known else {}
    taken_skips = tuple(sorted({fires[i].schedule for i, s in seen.items() if s is None} & set(skip)))
    active: set[str] = (yield SchedulesActive(taken_skips)) if taken_skips else set()
    return (yield from _decide(fires, first, seen, runs, active, replay))


def _decide(
    fires: Sequence[Fire],
    first: dict[tuple[str, datetime], int],
    seen: dict[int, SeenFire | None],
    runs: dict[str, RunRecord],
    active: set[str],
    replay: bool,
) -> Rule[list[FireResult]]:
    """The outcome of each fire time, its fire record taken (or found): see :func:`fire_many`."""
    results: dict[int, FireResult] = {}
    plain: list[tuple[int, NewRun]] = []  # runs to insert in one operation, in the order given
    later: list[tuple[int, NewRun]] = []  # coalescing runs: one at a time, after them
    rewrite: list[tuple[str, datetime, FireOutcome, str | None]] = []
    for i, fire in enumerate(fires):
        if first[(fire.schedule, fire.fire_time)] != i:
            continue  # a repeat: decided below, as its first listing
        found = seen[i]
        if found is not None:
            own = replay and fire.run is not None and found.run_id == fire.run.id
            run = None if found.run_id is None else runs.get(found.run_id)
            outcome: FireOutcome = "triggered" if own and found.outcome == "triggered" else "deduplicated"
            results[i] = FireResult(outcome, run)
        elif fire.run is None:
            results[i] = FireResult(fire.outcome_without_run, None)
        elif fire.skip_if_active and fire.schedule in active:
            rewrite.append((fire.schedule, fire.fire_time, "skipped", None))
            results[i] = FireResult("skipped", None)
        else:
            (later if coalescing(fire.run) else plain).append((i, fire.run))
            active.add(fire.schedule)  # a pending run of the schedule from here on
    inserted: list[tuple[RunRecord, Disposition]] = []
    if plain:
        inserted = yield InsertRuns(tuple(run for _, run in plain))
    for _, new in later:
        inserted.append((yield from insert_run(new, replay)))
    for (i, _), (record, disposition) in zip([*plain, *later], inserted, strict=True):
        if disposition == "created":
            results[i] = FireResult("triggered", record)
            continue
        results[i] = FireResult("deduplicated", record)
        rewrite.append((fires[i].schedule, fires[i].fire_time, "deduplicated", record.id))
    if rewrite:
        yield RecordFires(tuple(rewrite))
    return [_repeat(results, first, i, fire) for i, fire in enumerate(fires)]


def _repeat(
    results: dict[int, FireResult], first: dict[tuple[str, datetime], int], i: int, fire: Fire
) -> FireResult:
    """The result of the i-th fire: a repeat of a fire time finds the run its first listing made."""
    at = first[(fire.schedule, fire.fire_time)]
    if at == i:
        return results[i]
    return FireResult("deduplicated", results[at].run)


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


# -- the rules of bucket leases ----------------------------------------------------------------------
def fair_share(total: int, live: Sequence[str], me: str) -> int:
    """How many of ``total`` buckets ``me`` owns when they are spread over the live schedulers:
    equal shares, the remainder to the first in id order, so the shares always add up to ``total``."""
    count, rest = divmod(total, len(live))
    return count + (1 if live.index(me) < rest else 0)


def balance_buckets(info: SchedulerInfo, lease_seconds: float, total: int) -> Rule[BucketLease]:
    """One beat of a scheduler: refresh its registration, renew its leases, then move toward its
    fair share -- release the buckets above it (the highest), or take free and expired ones up to
    it. A newcomer's share is taken from the others as they release above theirs at their beats;
    a scheduler that stopped beating is dropped from the live ones when its row expires, and its
    buckets are taken by the others when their leases expire."""
    now, live = yield BeatScheduler(info, lease_seconds)
    share = fair_share(total, live, info.id)
    owned: dict[int, datetime] = dict((yield RenewBuckets(info.id, lease_seconds)))
    if len(owned) > share:
        extra = tuple(sorted(owned)[share:])
        yield ReleaseBuckets(info.id, extra)
        for bucket in extra:
            del owned[bucket]
    elif len(owned) < share:
        owned.update((yield TakeBuckets(info.id, share - len(owned), lease_seconds)))
    until = min(owned.values()) if owned else None
    return BucketLease(frozenset(owned), until, now, len(live))


def leave(owner: str) -> Rule[None]:
    """A scheduler that stops frees its buckets at once (the others take them at their next beat)."""
    yield ReleaseBuckets(owner, None)


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
    "AdvanceCursors",
    "AttemptEnd",
    "BeatScheduler",
    "BucketOp",
    "EndKind",
    "FetchRun",
    "FetchRuns",
    "FetchState",
    "FindCoalesceTarget",
    "FindIdempotent",
    "InsertRuns",
    "LockCoalescing",
    "LockSchedules",
    "MakeRule",
    "Op",
    "PauseState",
    "RecordFires",
    "ReleaseBuckets",
    "RenewBuckets",
    "ResumeState",
    "Rule",
    "SchedulesActive",
    "SeenFire",
    "Slot",
    "TakeBuckets",
    "TakeFireSlots",
    "advance_cursors",
    "balance_buckets",
    "coalescing",
    "create_runs",
    "drive",
    "drive_async",
    "fair_share",
    "fire_many",
    "insert_run",
    "leave",
    "pause",
    "resume",
]
