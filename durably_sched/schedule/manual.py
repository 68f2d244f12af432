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

from ..errors import InvalidArgumentError
from ..store.base import FireOutcome, FireResult
from .config import ScheduleEntry
from .cron import fire_key, fire_times, is_fire_time, latest_fire_time, next_fire_time
from .scheduler import make_fire

if TYPE_CHECKING:
    from ..ports import SchedulerFacade

__all__ = [
    "BACKFILL_BATCH",
    "BACKFILL_LIMIT",
    "BACKFILL_MAX",
    "EARLIEST",
    "LATEST",
    "ScheduleActionError",
    "SlotResult",
    "backfill",
    "backfill_times",
    "plan_backfill",
    "slot_time",
    "trigger_slot",
    "zone_time",
]

BACKFILL_LIMIT = 10_000
"""A backfill of more fire times than this needs ``force``."""
BACKFILL_MAX = 50_000
"""No backfill holds more fire times than this, ``force`` or not (split a longer range)."""
BACKFILL_BATCH = 200
EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
LATEST = datetime(9998, 12, 31, tzinfo=UTC)
"""Times given for a slot or a backfill must lie in [EARLIEST, LATEST]: a day's margin inside the
calendar's ends, so every zone offset and every step to a neighbouring fire time stays in range."""
OUT_OF_RANGE = "is out of the supported range of times (years 2 to 9998, UTC)"


class ScheduleActionError(InvalidArgumentError):
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


def _in_range(value: datetime, name: str, field: str) -> None:
    """Refuse a time outside [EARLIEST, LATEST] (e.g. 0001-01-01T00:00:00+14:00) naming ``name``."""
    try:
        inside = EARLIEST <= value.astimezone(UTC) <= LATEST
    except (OverflowError, ValueError):
        inside = False
    if not inside:
        raise ScheduleActionError(f"{name} {value.isoformat()} {OUT_OF_RANGE}", field)


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
    outside [EARLIEST, LATEST] is refused as well."""
    try:
        found = _slot_time(entry, at, now, name, show)
        found.astimezone(UTC)  # the fire key and the database keep it in UTC
    except OverflowError:
        shown = at.isoformat() if at is not None else "now"
        raise ScheduleActionError(f"{name} {shown} {OUT_OF_RANGE}", "at") from None
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
    _in_range(when, name, "at")
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


async def trigger_slot(durably: SchedulerFacade, entry: ScheduleEntry, fire_time: datetime) -> SlotResult:
    """Fire one slot exactly as the scheduler would (without moving its cursor)."""
    version = await durably.schedule_version(entry.name)
    result = await durably.fire(make_fire(entry, fire_time, advance_cursor=False, version=version))
    recorded: FireOutcome | None = None
    if result.outcome == "deduplicated" and result.run is None:
        records = await durably.list_fire_records(
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

    Refused (ScheduleActionError) when a time is outside [EARLIEST, LATEST], when ``end`` is
    before ``start``, when the range holds more than :data:`BACKFILL_MAX` fire times, and without
    ``force`` when ``end`` is in the future or the range holds more than ``limit`` fire times.
    ``names``: how the caller spells the start, end and force arguments, for the messages
    (``--from`` ...). CPU-bound for long ranges: from a running loop, use :func:`plan_backfill`.
    """
    from_name, to_name, force_name = names
    zone = entry.timezone
    first, last = _aware(start, entry), _aware(end, entry)
    _in_range(first, from_name, "from")
    _in_range(last, to_name, "to")
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
    most = BACKFILL_MAX if force else min(limit, BACKFILL_MAX)
    times = [t for t in itertools.islice(found, most + 1) if t >= first]
    if len(times) > BACKFILL_MAX:
        raise ScheduleActionError(
            f"more than {BACKFILL_MAX:,} fire times of schedule '{entry.name}' between {show(first)} "
            f"and {show(last)}: no backfill is that large, even with {force_name}; split the range",
        )
    if len(times) > limit and not force:
        raise ScheduleActionError(
            f"more than {limit:,} fire times of schedule '{entry.name}' between {show(first)} and "
            f"{show(last)}; narrow the range or pass {force_name}",
        )
    return times


async def plan_backfill(
    entry: ScheduleEntry,
    start: datetime,
    end: datetime,
    *,
    force: bool = False,
    names: tuple[str, str, str] = ("from", "to", "force"),
    show: Callable[[datetime], str] = zone_time,
) -> list[datetime]:
    """:func:`backfill_times` on a thread, so the event loop (probes, the scheduler, the worker)
    goes on while up to :data:`BACKFILL_MAX` fire times are computed."""
    return await asyncio.to_thread(backfill_times, entry, start, end, force=force, names=names, show=show)


async def backfill(
    durably: SchedulerFacade,
    entry: ScheduleEntry,
    times: Sequence[datetime],
    *,
    on_batch: Callable[[int], None] | None = None,
) -> list[FireResult]:
    """Fire every time in ``times`` as the scheduler would (cursor untouched), in batches; a fire
    time that already has a record is left alone (``deduplicated``)."""
    results: list[FireResult] = []
    version = await durably.schedule_version(entry.name)
    for i in range(0, len(times), BACKFILL_BATCH):
        batch = times[i : i + BACKFILL_BATCH]
        # One transaction a batch, in fire-time order: the runs are created (and, with
        # ``overlap: queue``, run) in that order.
        results += await durably.fire_many(
            [make_fire(entry, t, advance_cursor=False, version=version) for t in batch]
        )
        if on_batch is not None:
            on_batch(len(batch))
    return results
