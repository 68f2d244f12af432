"""Cron fire times in a time zone, with durably-sched's DST policy on top of croniter.

croniter is the only cron interpreter here, and it is only ever asked about *wall-clock* times: it walks
naive local times (no time zone, so no DST surprises inside croniter), and this module turns each
matching wall time into real instants:

* a wall time that exists once is one instant;
* a wall time skipped by a spring-forward gap fires once, at the first instant after the gap (several
  skipped wall times collapse into that one instant);
* a wall time repeated by a fall-back fold fires at its first occurrence only when the hour field is
  fixed (a number or a list of numbers, e.g. ``30 2 * * *``, ``0 1,2 * * *``), and at both occurrences
  when the hour field is ``*``, a step or a range (an hourly job runs every real hour).

Fire times are then merged into one strictly increasing sequence of instants. Keys name a fire time in
UTC at second precision, so they never depend on the zone, the offset or the moment they are computed.

The day fields follow cron(8) (Vixie cron, cronie), not croniter's own rule: when the day-of-month or the
day-of-week field starts with ``*`` (``*``, ``*/2``; ``?`` counts as ``*``) a day must match both; only
when both start otherwise does a day match either. croniter OR's whenever both fields expand to less
than every day (so ``*/2`` with ``1`` is "odd days or Mondays" there, "odd Mondays" in cron) and
mishandles ``#`` and ``W`` next to a restricted other field. So croniter is only ever asked for intersections
(``day_or=False``): an AND expression is one croniter walk, an OR expression is the union of two walks,
one with each day field alone (the other set to ``*``), merged in time order. Which rule applies is
decided from the text as written, exactly as cron decides it. ``N/step`` in the day-of-week field
(``5/1``) is refused: cronie rejects it, croniter stops it at Saturday and others at Sunday, so it has
no one meaning.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from ..errors import ArgumentTypeError, InvalidArgumentError

__all__ = [
    "SCHEDULE_NAME_PATTERN",
    "CronSpec",
    "fire_key",
    "fire_time_text",
    "fire_times",
    "is_fire_time",
    "jitter_offset",
    "latest_fire_time",
    "next_fire_time",
    "parse_cron",
    "parse_fire_key",
]

SCHEDULE_NAME_PATTERN = r"[A-Za-z0-9_.-]+"
_SCHEDULE_NAME = re.compile(SCHEDULE_NAME_PATTERN, re.ASCII)
_FIRE_KEY = re.compile(
    rf"schedule:({SCHEDULE_NAME_PATTERN}):(\d{{4}})-(\d{{2}})-(\d{{2}})T(\d{{2}}):(\d{{2}}):(\d{{2}})Z",
    re.ASCII,
)
_UTC = UTC
_ONE_SECOND = timedelta(seconds=1)
# Any date works for the parse-time probe; croniter searches up to 50 years ahead, longer than any
# 5- or 6-field expression takes to repeat (28 years for "29 February that is a Monday").
_PROBE_START = datetime(2000, 1, 1)

_SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIVE_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_ALLOWED = {
    "second": "0-59",
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, L, nW",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 or SUN-SAT, 0 and 7 are Sunday",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_HASHED = re.compile(r"[hr](?:\(\d+-\d+\))?(?:/\d+)?", re.ASCII | re.IGNORECASE)
_RANGE = re.compile(r"([^-/]+)-([^-/]+)(?:/\d+)?", re.ASCII)
_FIXED_HOUR = re.compile(r"\d+(?:,\d+)*", re.ASCII)
_START_STEP = re.compile(r"([0-9]+|[A-Za-z]+)/([0-9]+)", re.ASCII)
# Positions in croniter's field order (minute hour day-of-month month day-of-week [second]).
_DOM: Final = 2
_DOW: Final = 4
# Errors croniter raises when a walk runs out: nothing within 50 years, or past year 9999 / before year 1.
_EXHAUSTED = (CroniterBadDateError, ValueError, OverflowError)


@dataclass(frozen=True)
class CronSpec:
    """A validated cron expression. Build it with :func:`parse_cron`.

    ``expression`` is the text as written (without surrounding blanks). ``fixed_hour`` says whether
    the hour field names fixed hours (which decides how a repeated wall time is handled).
    ``croniter_expression`` is the same schedule in croniter's own field order (minute hour
    day-of-month month day-of-week [second]), shortcuts expanded. ``days_or`` is True when a day
    matches if *either* day field does (both restricted without a leading ``*``), False when it must
    match both. ``walks`` are the croniter expressions whose union is the schedule, each read with
    ``day_or=False``; never hand ``croniter_expression`` to croniter alone, its day rule differs.
    """

    expression: str
    has_seconds: bool
    fixed_hour: bool
    croniter_expression: str
    days_or: bool
    walks: tuple[str, ...]


def _invalid(expression: str, reason: str) -> ValueError:
    return ValueError(f"invalid cron expression '{expression}': {reason}")


def _symbol_value(token: str, field: str) -> int | None:
    """The number a range bound stands for, or None when it is not a plain number or name."""
    lowered = token.lower()
    if lowered.isdigit():
        return int(lowered)
    if field == "month" and lowered in _MONTHS:
        return _MONTHS.index(lowered) + 1
    if field == "day-of-week" and lowered in _WEEKDAYS:
        return _WEEKDAYS.index(lowered)
    return None


def _check_field(expression: str, field: str, text: str) -> None:
    """Reject the croniter extras whose meaning would surprise: hashed/random values, equal ranges,
    a day-of-week start with a step and no end."""
    for item in text.split(","):
        if _HASHED.fullmatch(item):
            raise _invalid(
                expression,
                f"{field} field '{text}': hashed (H) and random (R) values are not supported, "
                "fire times must be the same in every process",
            )
        start_step = _START_STEP.fullmatch(item) if field == "day-of-week" else None
        if start_step is not None and _symbol_value(start_step.group(1), field) is not None:
            raise _invalid(expression, _start_step_problem(field, text, item, *start_step.groups()))
        bounds = _RANGE.fullmatch(item)
        if bounds is None:
            continue
        low = _symbol_value(bounds.group(1), field)
        high = _symbol_value(bounds.group(2), field)
        if low is not None and low == high:
            raise _invalid(
                expression,
                f"{field} field '{text}': the range '{item}' starts and ends at the same value "
                f"(croniter would read it as the whole field); write '{bounds.group(1)}'",
            )


def _start_step_problem(field: str, text: str, item: str, start: str, step: str) -> str:
    """Why day-of-week ``N/step`` is refused, with the day lists each reading would mean."""
    problem = (
        f"{field} field '{text}': '{item}' is a step with no end (cron(8) refuses it; other crons "
        "stop it at Saturday or at Sunday)"
    )
    first = _symbol_value(start, field)
    if first is None or first > 7 or int(step) == 0:  # croniter's own message would be less clear
        return problem
    readings = [
        f"'{','.join(str(day) for day in range(first, end + 1, int(step)))}' (through {name})"
        for end, name in ((7, "Sunday"), (6, "Saturday"))
        if first <= end
    ]
    return f"{problem}; write the days: {' or '.join(readings)}"


def _explain_failure(names: tuple[str, ...], fields: list[str], exc: Exception) -> str:
    """Name the field croniter rejected, when one field is enough to make it fail."""
    for index, (name, text) in enumerate(zip(names, fields, strict=True)):
        alone = ["*"] * len(fields)
        alone[index] = text
        try:
            croniter(" ".join(_to_croniter_order(alone)), _PROBE_START)
        except Exception:
            return f"{name} field '{text}' is not valid (allowed: {_ALLOWED[name]})"
    return " ".join(str(exc).split()) or type(exc).__name__


def _to_croniter_order(fields: list[str]) -> list[str]:
    """Seconds-first (ours) to seconds-last (croniter's default 6-field order)."""
    return fields[1:] + fields[:1] if len(fields) == 6 else list(fields)


def parse_cron(expression: str) -> CronSpec:
    """Validate a cron expression and return its :class:`CronSpec`.

    Accepted: 5 fields (minute hour day-of-month month day-of-week), or 6 fields with the seconds field
    first; month and weekday names (JAN, MON); 0 and 7 for Sunday; the @hourly/@daily/@weekly/
    @monthly/@yearly shortcuts; croniter's L, W, # and ? extensions. The day fields combine as in
    cron(8) (see the module docstring). Raises ValueError naming what is wrong.
    """
    if not isinstance(expression, str):
        raise InvalidArgumentError(f"cron expression must be a string, not {type(expression).__name__}")
    return _parse_cron(expression)


@functools.lru_cache(maxsize=4096)
def _parse_cron(expression: str) -> CronSpec:
    """parse_cron's work, once per distinct expression (thousands of schedules share a few crons;
    a CronSpec is immutable, and a refusal is raised again each time, never cached)."""
    text = expression.strip()
    if not text:
        raise InvalidArgumentError("cron expression is empty")
    if text.startswith("@"):
        shortcut = _SHORTCUTS.get(text.lower())
        if shortcut is None:
            raise _invalid(expression, f"unknown shortcut, use one of {', '.join(_SHORTCUTS)}")
        text = shortcut
    fields = text.split()
    names: tuple[str, ...]
    if len(fields) == 5:
        names = _FIVE_FIELDS
    elif len(fields) == 6:
        names = ("second", *_FIVE_FIELDS)
    else:
        raise _invalid(
            expression,
            f"{len(fields)} fields; use 5 (minute hour day-of-month month day-of-week) "
            "or 6 with the seconds first (second minute hour day-of-month month day-of-week)",
        )
    for name, field_text in zip(names, fields, strict=True):
        _check_field(expression, name, field_text)
    ordered_fields = _to_croniter_order(fields)
    ordered = " ".join(ordered_fields)
    days_or = not _starts_with_star(ordered_fields[_DOM]) and not _starts_with_star(ordered_fields[_DOW])
    candidates = [ordered]
    if days_or:
        candidates = [_with_field(ordered_fields, _DOW, "*"), _with_field(ordered_fields, _DOM, "*")]
    walks: list[str] = []
    try:
        # Every field is in at least one candidate, so this also checks the syntax of each.
        for candidate in candidates:
            # croniter checks some things only when it computes a date: ask it for one now. Under
            # the OR rule a side that never matches (31 February) adds no days; the other still fires.
            try:
                croniter(candidate, _PROBE_START, day_or=False).get_next(datetime)
            except CroniterBadDateError:
                continue
            walks.append(candidate)
    except Exception as exc:
        raise _invalid(expression, _explain_failure(names, fields, exc)) from None
    if not walks:
        raise _invalid(expression, "no date ever matches it (like 30 February)")
    hour = fields[names.index("hour")]
    return CronSpec(
        expression=expression.strip(),
        has_seconds=len(fields) == 6,
        fixed_hour=_FIXED_HOUR.fullmatch(hour) is not None,
        croniter_expression=ordered,
        days_or=days_or,
        walks=tuple(walks),
    )


def _starts_with_star(field_text: str) -> bool:
    """cron(8)'s test for an unrestricted day field: the first character, as written. ``?`` (which
    croniter reads as ``*``, "no particular day" in Quartz) counts as ``*``."""
    return field_text[:1] in ("*", "?")


def _with_field(fields: list[str], index: int, text: str) -> str:
    return " ".join(text if i == index else field for i, field in enumerate(fields))


class _Walls:
    """Matching wall times of a spec, one direction per instance: the union of its croniter walks.

    Each walk is read with ``day_or=False`` (croniter intersects the day fields). An OR expression has
    two walks; their next (or previous) wall times are merged, a time both produce counted once.
    Raises ``CroniterBadDateError`` (or croniter's ValueError/OverflowError at the ends of the
    calendar) when no walk has a further time, as croniter does.
    """

    __slots__ = ("_heads", "_single", "_walkers")

    def __init__(self, spec: CronSpec, start: datetime) -> None:
        self._walkers: list[croniter | None] = [croniter(walk, start, day_or=False) for walk in spec.walks]
        self._single = self._walkers[0] if len(self._walkers) == 1 else None
        self._heads: list[datetime | None] = [None] * len(self._walkers)

    def get_next(self) -> datetime:
        return self._step(backwards=False)

    def get_prev(self) -> datetime:
        return self._step(backwards=True)

    def _step(self, backwards: bool) -> datetime:
        single = self._single
        if single is not None:
            found: datetime = single.get_prev(datetime) if backwards else single.get_next(datetime)
            return found
        for index, walker in enumerate(self._walkers):
            if self._heads[index] is None and walker is not None:
                try:
                    self._heads[index] = walker.get_prev(datetime) if backwards else walker.get_next(datetime)
                except _EXHAUSTED:
                    self._walkers[index] = None
        heads = [head for head in self._heads if head is not None]
        if not heads:
            raise CroniterBadDateError("no further date matches")
        best = max(heads) if backwards else min(heads)
        self._heads = [None if head == best else head for head in self._heads]
        return best


# --- instants of wall-clock times ------------------------------------------------------------------
# Internally instants are naive datetimes in UTC and wall times are naive local datetimes: plain
# arithmetic, no tzinfo surprises. Only the public functions take and return aware datetimes.


def _as_utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise ArgumentTypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(_UTC).replace(tzinfo=None)


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.replace(tzinfo=_UTC).astimezone(tz).replace(tzinfo=None, fold=0)


def _in_zone(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.replace(tzinfo=_UTC).astimezone(tz)


def _end_of_gap(wall: datetime, tz: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first instant whose wall time is at or past ``wall`` (which the gap skipped).

    ``before`` reads earlier than ``wall`` on the clock and ``after`` reads later; bisect in seconds.
    """
    low, high = 0, int((after - before).total_seconds())
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(before + timedelta(seconds=middle), tz) >= wall:
            high = middle
        else:
            low = middle
    return before + timedelta(seconds=high)


def _occurrences(wall: datetime, tz: ZoneInfo) -> tuple[datetime, datetime | None]:
    """(first instant, second instant or None) for a wall time.

    zoneinfo reads fold=0 with the offset in force before a transition and fold=1 with the one after
    (PEP 495). The two agree for an ordinary time; fold=0 is the earlier instant for a repeated time;
    and for a time inside a gap the two readings land on either side of the gap.
    """
    first_offset = wall.replace(tzinfo=tz, fold=0).utcoffset()
    second_offset = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert first_offset is not None and second_offset is not None  # a ZoneInfo always has one
    first = wall - first_offset
    if first_offset == second_offset:
        return first, None
    second = wall - second_offset
    if first < second:
        return first, second
    return _end_of_gap(wall, tz, second, first), None


def _instants(spec: CronSpec, wall: datetime, tz: ZoneInfo) -> tuple[datetime, datetime | None]:
    first, second = _occurrences(wall, tz)
    return first, (None if spec.fixed_hour else second)


def _fold_length(wall: datetime, tz: ZoneInfo) -> timedelta | None:
    """How long the clock is turned back, when ``wall`` is a repeated wall time; else None."""
    first, second = _occurrences(wall, tz)
    return None if second is None else second - first


def _generate(spec: CronSpec, tz: ZoneInfo, after: datetime, until: datetime | None) -> Iterator[datetime]:
    local = _in_zone(after, tz)
    start = local.replace(tzinfo=None, fold=0)
    if local.fold == 0 and not spec.fixed_hour:
        # ``after`` may sit in the first pass of a fold: the wall times just before it come round again
        # and their second occurrences are still ahead. Start that much earlier on the wall clock.
        start -= _fold_length(start, tz) or timedelta(0)
    walls = _Walls(spec, start)
    # Second occurrences of repeated wall times come after later wall times' first occurrences, so
    # they wait here until a first occurrence passes them. They are increasing among themselves.
    pending: deque[datetime] = deque()
    last = after
    while True:
        first: datetime | None = None
        second: datetime | None = None
        try:
            first, second = _instants(spec, walls.get_next(), tz)
        except _EXHAUSTED:  # none within 50 years / before 9999
            pass
        while pending and (first is None or pending[0] < first):
            instant = pending.popleft()
            if until is not None and instant > until:
                return
            if instant > last:
                yield _in_zone(instant, tz)
                last = instant
        if first is None:
            return
        if until is not None and first > until:
            return
        if first > last:  # several wall times in one gap share an instant
            yield _in_zone(first, tz)
            last = first
        if second is not None:
            pending.append(second)


def fire_times(
    spec: CronSpec, tz: ZoneInfo, after: datetime, until: datetime | None = None
) -> Iterator[datetime]:
    """Fire times strictly after ``after`` and, if given, at or before ``until``, lazily.

    ``after`` and ``until`` are aware datetimes in any zone. The results are aware datetimes in ``tz``
    (fold set for the second occurrence of a repeated wall time), strictly increasing as instants.
    """
    start = _as_utc(after, "after")
    end = None if until is None else _as_utc(until, "until")
    return _generate(spec, tz, start, end)


def next_fire_time(spec: CronSpec, tz: ZoneInfo, after: datetime) -> datetime:
    """The first fire time strictly after ``after``."""
    for instant in fire_times(spec, tz, after):
        return instant
    raise InvalidArgumentError(
        f"cron expression '{spec.expression}' has no fire time after {after.isoformat()}"
    )


def latest_fire_time(spec: CronSpec, tz: ZoneInfo, at_or_before: datetime) -> datetime | None:
    """The last fire time at or before ``at_or_before``; None if there is none (within 50 years)."""
    limit = _as_utc(at_or_before, "at_or_before").replace(microsecond=0)
    local = _in_zone(limit, tz)
    start = local.replace(tzinfo=None, fold=0)
    if local.fold == 1:
        # ``limit`` is in the second pass of a fold: the wall times just after it were first passed
        # before it. Start that much later on the wall clock.
        start += _fold_length(start, tz) or timedelta(0)
    walls = _Walls(spec, start + _ONE_SECOND)
    best: datetime | None = None
    stop_at: datetime | None = None
    while True:
        try:
            wall = walls.get_prev()
        except _EXHAUSTED:  # none within 50 years / after year 1
            break
        if stop_at is not None and wall <= stop_at:
            break
        first, second = _instants(spec, wall, tz)
        for instant in (first, second):
            if instant is not None and instant <= limit and (best is None or instant > best):
                best = instant
        if best is not None and stop_at is None:
            # Earlier wall times have earlier first occurrences; only a second occurrence of a wall
            # time in the same fold (less than the fold's length earlier) can still beat ``best``.
            stop_at = wall if second is None else wall - (second - first)
    return None if best is None else _in_zone(best, tz)


def is_fire_time(spec: CronSpec, tz: ZoneInfo, t: datetime) -> bool:
    """Whether ``t`` (to the second) is one of the instants :func:`fire_times` produces."""
    instant = _as_utc(t, "t").replace(microsecond=0)
    return any(True for _ in _generate(spec, tz, instant - _ONE_SECOND, instant))


# --- keys and jitter --------------------------------------------------------------------------------


def _utc_text(instant: datetime) -> str:
    return (
        f"{instant.year:04d}-{instant.month:02d}-{instant.day:02d}"
        f"T{instant.hour:02d}:{instant.minute:02d}:{instant.second:02d}Z"
    )


def fire_time_text(fire_time: datetime) -> str:
    """A fire time as keys write it: UTC, second precision, ``YYYY-MM-DDTHH:MM:SSZ``.

    For keys made outside schedules.yaml (e.g. the APScheduler bridge). ``fire_time`` must be aware
    and a whole second, as in :func:`fire_key`.
    """
    instant = _as_utc(fire_time, "fire_time")
    if instant.microsecond:
        raise InvalidArgumentError(f"fire time {fire_time.isoformat()} is not a whole second")
    return _utc_text(instant)


def _check_name(schedule_name: str) -> None:
    if not isinstance(schedule_name, str) or not _SCHEDULE_NAME.fullmatch(schedule_name):
        raise InvalidArgumentError(
            f"invalid schedule name {schedule_name!r}: use letters, digits, '_', '.', '-'"
        )


def fire_key(schedule_name: str, fire_time: datetime) -> str:
    """``schedule:<name>:<UTC fire time, YYYY-MM-DDTHH:MM:SSZ>``: the idempotency key of one fire time.

    ``fire_time`` must be aware and a whole second (fire times are; "now" usually is not, and a key
    must never come from "now").
    """
    _check_name(schedule_name)
    return f"schedule:{schedule_name}:{fire_time_text(fire_time)}"


def parse_fire_key(key: str) -> tuple[str, datetime]:
    """The schedule name and the (UTC, aware) fire time of a :func:`fire_key`."""
    return parse_timed_key(_FIRE_KEY, key, "a schedule fire key")


def parse_timed_key(pattern: re.Pattern[str], key: str, what: str) -> tuple[str, datetime]:
    """The name and the (UTC, aware) time of a key ``pattern`` matches whole: group 1 the name, the
    next six year, month, day, hour, minute, second. InvalidArgumentError "not {what}: ..."."""
    match = pattern.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        raise InvalidArgumentError(f"not {what}: {key!r}")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[1:])
    try:
        instant = datetime(year, month, day, hour, minute, second, tzinfo=_UTC)
    except ValueError as exc:
        raise InvalidArgumentError(f"not {what}: {key!r} ({exc})") from None
    return match.group(1), instant


def jitter_offset(schedule_name: str, fire_time: datetime, jitter: timedelta) -> timedelta:
    """A delay in [0, jitter) that is the same for a given schedule and fire time in every process."""
    if not jitter:
        return jitter  # no jitter (the common case: asked per fire time and schedule)
    if jitter < timedelta(0):
        raise InvalidArgumentError("jitter must not be negative")
    span = jitter // timedelta(microseconds=1)
    if span == 0:
        return timedelta(0)
    instant = _as_utc(fire_time, "fire_time")
    digest = hashlib.sha256(f"{schedule_name}\n{_utc_text(instant)}".encode()).digest()
    return timedelta(microseconds=int.from_bytes(digest[:8], "big") % span)
