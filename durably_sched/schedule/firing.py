"""What the scheduler does with one schedule's fire times: the run a fire time makes, the catch-up
plan (fire, or record missed/disabled), and the words a log line says about each.

A schedule's run is checked once, when the schedule loads (:meth:`ScheduleClock.fire` then only
sets the fire-time fields: a new id, the fire-time key, the ``scheduled_for`` label, all of the
same length at every fire time, so what passed the check once passes at every fire time).
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from .._durations import format_duration
from ..store.base import Fire, FireOutcome, FireResult, NewRun, ScheduleState
from .config import ScheduleEntry, SchedulesConfig
from .cron import CronSpec, fire_key, fire_times, jitter_offset

MISFIRE_GRACE = timedelta(seconds=10)
"""A fire time handled less than this late counts as on time: it fires whatever the catch-up policy."""
MISSED_LOOKBACK = timedelta(days=1)
"""Fire times further than this before the catch-up window are not recorded one by one."""
CHECK_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""The fire time of the run a schedule is checked with (its key is as long as any other's)."""


def scheduled_run(entry: ScheduleEntry, fire_time: datetime) -> NewRun:
    """The run a fire time makes: fire-time key, labels, and the queue concurrency key."""
    utc = fire_time.astimezone(UTC)
    labels = {**entry.labels, "schedule": entry.name, "scheduled_for": utc.strftime("%Y-%m-%dT%H:%M:%SZ")}
    return NewRun(
        id=str(uuid.uuid4()),
        job_name=entry.job,
        input=dict(entry.input),
        idempotency_key=fire_key(entry.name, utc),
        concurrency_key=f"schedule:{entry.name}" if entry.overlap == "queue" else None,
        labels=labels,
        # The schedule's changes to the job's retry policy; the facade completes them from the job.
        retry_policy=entry.retry.override() if entry.retry is not None else None,
        timeout=entry.timeout.total_seconds() if entry.timeout is not None else None,
    )


def make_fire(
    entry: ScheduleEntry,
    fire_time: datetime,
    *,
    outcome_without_run: FireOutcome | None = None,
    advance_cursor: bool = True,
    replace_paused: bool = False,
    version: int | None = None,
) -> Fire:
    """The Fire for one fire time: a run, or a record only (``missed``/``disabled``/``paused``).

    ``replace_paused``: a fire time recorded ``paused`` is handled again (catch-up on resume).
    ``version``: the schedule's version the run records (its ``schedule_version``).
    """
    utc = fire_time.astimezone(UTC)
    if outcome_without_run is not None:
        return Fire(
            schedule=entry.name,
            fire_time=utc,
            run=None,
            outcome_without_run=outcome_without_run,
            advance_cursor=advance_cursor,
        )
    return Fire(
        schedule=entry.name,
        fire_time=utc,
        run=dataclasses.replace(scheduled_run(entry, utc), schedule_version=version),
        skip_if_active=entry.overlap == "skip",
        advance_cursor=advance_cursor,
        replace_paused=replace_paused,
    )


@dataclass
class ScheduleClock:
    """One schedule as the scheduler tracks it: its cursor, its next due time, its failures, and
    its run as stored (``template``: checked once, when the schedule loads)."""

    entry: ScheduleEntry
    cursor: datetime
    template: NewRun | None = None
    """The run of a fire time as stored, its fire-time fields (id, key, ``scheduled_for``) aside;
    None while the schedule's job is not registered here (then each fire time is checked)."""
    _next: datetime | None = None  # next fire time after the cursor (cached)
    _due: datetime | None = None  # ... plus its jitter
    failures: int = 0
    """Consecutive failed attempts to handle this schedule's due fire times."""
    retry_at: datetime | None = None
    """After a failure: not handled again before this (the others are not held back)."""
    _prepared: Fire | None = None  # the next fire time's Fire, made before it was due
    version: int | None = None
    """The schedule's version (store/schedule_defs.py) its runs record."""

    def next_fire(self) -> datetime:
        """The next fire time after the cursor; computed once per cursor move."""
        if self._next is None:
            found = next_utc_fire(self.entry.cron, self.entry.timezone, self.cursor)
            if found is None:
                raise StopIteration  # no fire time within 50 years (cron.py looks no further)
            self._next = found
        return self._next

    def due_at(self) -> datetime:
        """When the next fire time after the cursor is due (its jitter added)."""
        if self._due is None:
            fire = self.next_fire()
            self._due = fire + jitter_offset(self.entry.name, fire, self.entry.jitter)
        if self.retry_at is not None and self.retry_at > self._due:
            return self.retry_at
        return self._due

    def moved(self) -> None:
        self._next = self._due = None

    def prepare(self) -> None:
        """Make the next fire time's Fire ahead of its time (the scheduler does so while it waits
        for a burst), so that when it is due it only has to be sent."""
        if self.template is not None and self._prepared is None:
            self._prepared = self._from_template(self.next_fire())

    def fire(self, fire_time: datetime, outcome: FireOutcome | None) -> Fire:
        """The Fire of one fire time: a run made from the template (already checked), or a record
        only; without a template, a run the facade checks (make_fire)."""
        prepared, self._prepared = self._prepared, None
        if outcome is not None or self.template is None:
            made = make_fire(self.entry, fire_time, outcome_without_run=outcome)
            if made.run is None:
                return made
            return dataclasses.replace(made, run=dataclasses.replace(made.run, schedule_version=self.version))
        if prepared is not None and prepared.fire_time == fire_time:
            return prepared
        return self._from_template(fire_time)

    def _from_template(self, fire_time: datetime) -> Fire:
        assert self.template is not None
        utc = fire_time.astimezone(UTC)
        template = self.template
        run = dataclasses.replace(
            template,
            id=str(uuid.uuid4()),
            idempotency_key=fire_key(self.entry.name, utc),
            labels={**template.labels, "scheduled_for": utc.strftime("%Y-%m-%dT%H:%M:%SZ")},
            schedule_version=self.version,
        )
        return Fire(
            schedule=self.entry.name, fire_time=utc, run=run, skip_if_active=self.entry.overlap == "skip"
        )


@functools.lru_cache(maxsize=65536)
def next_utc_fire(cron: CronSpec, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after``, in UTC (None: none). The same for every schedule
    of one cron and zone whose cursor is at ``after``, so a tick of 10,000 such schedules computes it
    once, not 10,000 times (croniter costs about 100 µs a step)."""
    for fire_time in fire_times(cron, tz, after, None):
        return fire_time.astimezone(UTC)
    return None


def utc_fire_times(entry: ScheduleEntry, after: datetime, until: datetime | None) -> Iterator[datetime]:
    """Fire times as UTC datetimes: arithmetic and comparisons on zoned datetimes ignore ``fold``."""
    for fire_time in fire_times(entry.cron, entry.timezone, after, until):
        yield fire_time.astimezone(UTC)


def plan_fire_times(
    entry: ScheduleEntry, due: list[datetime], now: datetime, window_start: datetime
) -> list[tuple[datetime, FireOutcome | None]]:
    """Decide per fire time: fire it (None) or record an outcome without a run."""
    if not entry.enabled:
        return [(t, "disabled") for t in due]
    if due and now - due[0] <= MISFIRE_GRACE:
        return [(t, None) for t in due]  # all on time (they are in order): the common case
    on_time = [t for t in due if now - t <= MISFIRE_GRACE]
    in_window = [t for t in due if t >= window_start and t not in on_time]
    chosen: set[datetime] = set(on_time)
    if entry.catchup == "all":
        chosen.update(in_window)
    elif entry.catchup == "latest" and not on_time and in_window:
        chosen.add(in_window[-1])
    return [(t, None if t in chosen else "missed") for t in due]


def outcome_text(entry: ScheduleEntry, fire_time: datetime, result: FireResult, lateness: timedelta) -> str:
    """What a fire time came to, in a few words: ``fired: run triggered (2h03m late, catch-up)``,
    in the words of its fire record's outcome. A jittered start is late by its jitter on purpose:
    only the lateness beyond it counts as a catch-up."""
    outcome = result.outcome
    if outcome == "triggered":
        jitter = jitter_offset(entry.name, fire_time, entry.jitter)
        late = lateness - jitter
        if late > MISFIRE_GRACE:
            return f"fired: run triggered ({format_duration(_whole(late))} late, catch-up)"
        if jitter > timedelta(0):
            return f"fired: run triggered (jitter: {format_duration(_whole(jitter))} after its fire time)"
        return "fired: run triggered"
    if outcome == "deduplicated":
        status = f" ({result.run.status})" if result.run is not None else ""
        return f"fired: deduplicated, this fire time already has its run{status}"
    if outcome == "skipped":
        return "fired: skipped, a run of the schedule is still active (overlap: skip)"
    if outcome == "disabled":
        return "not run: the schedule is disabled"
    if outcome == "paused":
        return "not run: the schedule is paused (recorded paused; `schedules resume --catchup` runs it)"
    if lateness > entry.catchup_window:
        return f"missed: older than the catch-up window ({format_duration(entry.catchup_window)})"
    return f"missed: catch-up {entry.catchup} does not run it"


def batch_text(done: list[tuple[str, datetime, FireResult]]) -> str:
    """One line for a batch of a large tick (the scheduler logs each fire time at DEBUG then):
    ``fired 1000 fire times of 1000 schedules (s000000 ... s000999; 2026-12-06T16:31:00Z):
    998 triggered, 2 skipped``."""
    outcomes: dict[str, int] = {}
    names: set[str] = set()
    for name, _, result in done:
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        names.add(name)
    times = sorted({t for _, t, _ in done})
    first, last = min(names), max(names)
    span = _utc_text(times[0]) if len(times) == 1 else f"{_utc_text(times[0])} to {_utc_text(times[-1])}"
    which = first if first == last else f"{first} ... {last}"
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items(), key=lambda kv: -kv[1]))
    return (
        f"fired {_plural(len(done), 'fire time')} of {_plural(len(names), 'schedule')} "
        f"({which}; {span}): {counts}"
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _utc_text(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _whole(delta: timedelta) -> timedelta:
    return timedelta(seconds=round(delta.total_seconds()))


_COMPARED = frozenset(ScheduleEntry.model_fields) - {"name", "line"}


def describe_changes(old: SchedulesConfig, new: SchedulesConfig) -> str:
    """``added a, b; removed c; changed d (cron, input); 4 schedules`` (moved lines are no change)."""
    before, after = old.schedules, new.schedules
    added = [name for name in after if name not in before]
    removed = [name for name in before if name not in after]
    changed = []
    for name, entry in after.items():
        previous = before.get(name)
        if previous is None:
            continue
        fields = [
            f
            for f in ScheduleEntry.model_fields
            if f in _COMPARED and getattr(previous, f) != getattr(entry, f)
        ]
        if fields:
            changed.append(f"{name} ({', '.join(fields)})")
    parts = [
        f"{verb} {', '.join(names)}"
        for verb, names in (("added", added), ("removed", removed), ("changed", changed))
        if names
    ]
    count = len(after)
    total = f"{count} schedule{'' if count == 1 else 's'}"
    return f"{'; '.join(parts)}; {total}" if parts else f"no schedule changed; {total}"


def pause_text(state: ScheduleState) -> str:
    since = state.paused_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if state.paused_at else "?"
    reason = f": {state.pause_reason}" if state.pause_reason else ""
    return f"since {since} by {state.paused_by or '?'}{reason}; its fire times are recorded as paused"


def whole_second(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(microsecond=0)


__all__ = [
    "CHECK_TIME",
    "MISFIRE_GRACE",
    "MISSED_LOOKBACK",
    "ScheduleClock",
    "batch_text",
    "describe_changes",
    "make_fire",
    "next_utc_fire",
    "outcome_text",
    "pause_text",
    "plan_fire_times",
    "scheduled_run",
    "utc_fire_times",
    "whole_second",
]
