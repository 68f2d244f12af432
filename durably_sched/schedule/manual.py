"""Operator actions on a schedule: trigger one slot, plan and run a backfill.

Shared by the CLI (``trigger --schedule``, ``schedules backfill``) and the HTTP API, so a slot fired
from the dashboard is deduplicated with the scheduler exactly as one fired from the command line:
both hand the facade the scheduler's own :class:`~durably_sched.store.base.Fire` (same fire-time key,
same fire record), with ``advance_cursor=False`` so the scheduler's cursor does not move.

Errors are :class:`ScheduleActionError` with a one-line message; ``field`` names the argument at
fault (``at``, ``from``, ``to``) so each caller can prefix its own spelling of it (``--at``, a JSON
field).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..errors import DurablyError
from ..store.base import FireOutcome, FireResult
from .config import ScheduleEntry
from .cron import fire_key, fire_times, is_fire_time, latest_fire_time, next_fire_time
from .scheduler import make_fire

if TYPE_CHECKING:
    from ..durably import Durably

__all__ = [
    "BACKFILL_BATCH",
    "BACKFILL_LIMIT",
    "ScheduleActionError",
    "SlotResult",
    "backfill",
    "backfill_times",
    "slot_time",
    "trigger_slot",
    "zone_time",
]

BACKFILL_LIMIT = 10_000
"""A backfill of more fire times than this needs ``force``."""
BACKFILL_BATCH = 200


class ScheduleActionError(DurablyError):
    """A slot or backfill request that cannot be carried out; ``field`` names the argument."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def zone_time(value: datetime) -> str:
    """A fire time in its schedule's zone: ``2026-03-29 03:00:00+02:00``."""
    return value.isoformat(sep=" ", timespec="seconds")


def _aware(value: datetime, entry: ScheduleEntry) -> datetime:
    """Naive times are wall times in the schedule's zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=entry.timezone)
    return value


def slot_time(
    entry: ScheduleEntry,
    at: datetime | None,
    *,
    now: datetime | None = None,
    name: str = "at",
    show: Callable[[datetime], str] = zone_time,
) -> datetime:
    """The fire time to trigger: ``at`` (which must be a fire time) or the latest one until now.

    A naive ``at`` is a wall time in the schedule's zone. ``name`` is how the caller's user spells
    the argument (``--at``) and ``show`` how it shows times, both for the error message. A time
    that has no form in the schedule's zone or in UTC (years 1 to 9999) is refused as well."""
    try:
        found = _slot_time(entry, at, now, name, show)
        found.astimezone(UTC)  # the fire key and the database keep it in UTC
    except OverflowError:
        shown = at.isoformat() if at is not None else "now"
        raise ScheduleActionError(
            f"{name} {shown} is out of the supported range of times (years 1 to 9999, in the zone "
            f"of schedule '{entry.name}' ({entry.timezone.key}) and in UTC)",
            "at",
        ) from None
    return found


def _slot_time(
    entry: ScheduleEntry,
    at: datetime | None,
    now: datetime | None,
    name: str,
    show: Callable[[datetime], str],
) -> datetime:
    spec, zone = entry.cron, entry.timezone
    if at is None:
        latest = latest_fire_time(spec, zone, now or datetime.now(UTC))
        if latest is None:
            raise ScheduleActionError(
                f"schedule '{entry.name}' ({spec.expression}) has no fire time before now"
            )
        return latest
    when = _aware(at, entry)
    if when.microsecond == 0 and is_fire_time(spec, zone, when):
        return when.astimezone(zone)
    before = latest_fire_time(spec, zone, when)
    try:
        after: datetime | None = next_fire_time(spec, zone, when)
    except ValueError:
        after = None
    nearest = ", ".join(
        f"{label} {show(t)}" for label, t in (("before:", before), ("after:", after)) if t is not None
    )
    raise ScheduleActionError(
        f"{name} {show(when.astimezone(zone))} is not a fire time of schedule '{entry.name}' "
        f"('{spec.expression}' in {zone.key}); nearest {nearest or 'none'}",
        "at",
    )


@dataclass(frozen=True, slots=True)
class SlotResult:
    """What firing one slot did. ``recorded`` is the outcome stored earlier when the slot was
    deduplicated without a run (e.g. ``missed``, ``skipped``), when known."""

    fire_time: datetime
    key: str
    result: FireResult
    recorded: FireOutcome | None = None

    @property
    def outcome(self) -> FireOutcome:
        return self.result.outcome


async def trigger_slot(durably: Durably, entry: ScheduleEntry, fire_time: datetime) -> SlotResult:
    """Fire one slot exactly as the scheduler would (without moving its cursor)."""
    result = await durably.fire(make_fire(entry, fire_time, advance_cursor=False))
    recorded: FireOutcome | None = None
    if result.outcome == "deduplicated" and result.run is None:
        records = await durably.store.list_fire_records(
            entry.name, limit=1, before=fire_time + timedelta(seconds=1)
        )
        if records and records[0].fire_time == fire_time.astimezone(UTC):
            recorded = records[0].outcome
    return SlotResult(fire_time, fire_key(entry.name, fire_time), result, recorded)


def backfill_times(
    entry: ScheduleEntry,
    start: datetime,
    end: datetime,
    *,
    force: bool = False,
    now: datetime | None = None,
    limit: int = BACKFILL_LIMIT,
    names: tuple[str, str, str] = ("from", "to", "force"),
    show: Callable[[datetime], str] = zone_time,
) -> list[datetime]:
    """Every fire time of ``entry`` in [start, end] (naive times in the schedule's zone).

    Refused (ScheduleActionError) when ``end`` is before ``start``, and without ``force`` when
    ``end`` is in the future or the range holds more than ``limit`` fire times. ``names``: how the
    caller spells the start, end and force arguments, for the messages (``--from`` ...).
    """
    from_name, to_name, force_name = names
    zone = entry.timezone
    first, last = _aware(start, entry), _aware(end, entry)
    if last < first:
        raise ScheduleActionError(
            f"{to_name} {show(last.astimezone(zone))} is before {from_name} {show(first.astimezone(zone))}",
            "to",
        )
    if last > (now or datetime.now(UTC)) and not force:
        raise ScheduleActionError(
            f"{to_name} {show(last.astimezone(zone))} is in the future; backfill past fire times (the "
            f"scheduler fires the rest), or pass {force_name}",
            "to",
        )
    found = fire_times(entry.cron, zone, first - timedelta(seconds=1), last)
    times = [t for t in itertools.islice(found, None if force else limit + 1) if t >= first]
    if len(times) > limit and not force:
        raise ScheduleActionError(
            f"more than {limit:,} fire times of schedule '{entry.name}' between {show(first)} and "
            f"{show(last)}; narrow the range or pass {force_name}",
        )
    return times


async def backfill(
    durably: Durably,
    entry: ScheduleEntry,
    times: Sequence[datetime],
    *,
    on_batch: Callable[[int], None] | None = None,
) -> list[FireResult]:
    """Fire every time in ``times`` as the scheduler would (cursor untouched), in batches; a fire
    time that already has a record is left alone (``deduplicated``)."""
    results: list[FireResult] = []
    for i in range(0, len(times), BACKFILL_BATCH):
        batch = times[i : i + BACKFILL_BATCH]
        results += await asyncio.gather(
            *(durably.fire(make_fire(entry, t, advance_cursor=False)) for t in batch)
        )
        if on_batch is not None:
            on_batch(len(batch))
    return results
