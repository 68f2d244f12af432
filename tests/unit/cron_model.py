"""An independent model of cron expressions for the tests: which wall times an expression names.

It reads the text itself (no croniter, no durably_sched code) the way cron(8) does (Vixie cron,
cronie's ``entry.c`` and ``cron.c``), plus the croniter extensions durably-sched accepts:

* each field is a list of items: ``*``, ``N``, ``A-B``, any of them with ``/step`` (``N/step`` runs
  from N to the field's end); names for months and weekdays; day-of-week 0-7 with 7 = Sunday;
  ``A-B`` with A > B wraps around (croniter's extension, ``22-2``);
* extensions: ``?`` reads as ``*``; ``L`` (last day) and ``nW`` (the weekday nearest day n, within
  the month) in day-of-month; ``d#n`` (the n-th weekday d of the month) in day-of-week;
* **the day rule**: when the day-of-month or the day-of-week field starts with ``*`` (or ``?``), a
  day must match both; otherwise either. Decided on the first character as written, as cron does.

Five fields, or six with the seconds first; the @-shortcuts.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

DayTest = Callable[[date], bool]


def _number(token: str, low: int, names: list[str] | None) -> int:
    if token.isdigit():
        return int(token)
    assert names is not None, token
    return names.index(token.lower()) + low


def values(text: str, low: int, high: int, names: list[str] | None = None) -> set[int]:
    """The numbers a plain field (no L, W or #) names."""
    found: set[int] = set()
    for item in text.split(","):
        body, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        assert step > 0
        if body in ("*", "?"):
            first, last = low, high
        elif "-" in body:
            first_text, last_text = body.split("-")
            first, last = _number(first_text, low, names), _number(last_text, low, names)
        else:
            first = _number(body, low, names)
            last = high if step_text else first
        if last < first:  # a range that wraps around the end of the field
            last += high - low + 1
        for value in range(first, last + 1, step):
            found.add(value if value <= high else value - (high - low + 1))
    assert all(low <= v <= high for v in found), (text, found)
    return found


def _nearest_weekday(day: date, target: int) -> bool:
    """``nW``: the weekday (Mon-Fri) nearest day ``target`` of the month, never in another month."""
    last = calendar.monthrange(day.year, day.month)[1]
    if target > last:
        return False
    chosen = date(day.year, day.month, target)
    if chosen.weekday() == 5:  # Saturday: the Friday before, or the Monday after the 1st
        chosen += timedelta(days=2) if target == 1 else timedelta(days=-1)
    elif chosen.weekday() == 6:  # Sunday: the Monday after, or the Friday before the last day
        chosen += timedelta(days=-2) if target == last else timedelta(days=1)
    return day == chosen


def _day_of_month(text: str) -> DayTest:
    tests: list[DayTest] = []
    plain: list[str] = []
    for item in text.split(","):
        if item.upper() == "L":
            tests.append(lambda d: d.day == calendar.monthrange(d.year, d.month)[1])
        elif item.upper().endswith("W"):
            target = int(item[:-1])
            tests.append(lambda d, target=target: _nearest_weekday(d, target))
        else:
            plain.append(item)
    if plain:
        days = values(",".join(plain), 1, 31)
        tests.append(lambda d: d.day in days)
    return lambda d: any(test(d) for test in tests)


def _sunday_is_zero(weekday: int) -> int:
    return 0 if weekday == 7 else weekday


def _day_of_week(text: str) -> DayTest:
    tests: list[DayTest] = []
    plain: list[str] = []
    for item in text.split(","):
        if "#" in item:
            day_text, nth_text = item.split("#")
            weekday = _sunday_is_zero(_number(day_text, 0, DAY_NAMES))
            nth = int(nth_text)
            # the n-th such weekday: its day of the month is 7(n-1)+1 .. 7n
            tests.append(
                lambda d, weekday=weekday, nth=nth: (
                    d.isoweekday() % 7 == weekday and (d.day - 1) // 7 == nth - 1
                )
            )
        else:
            plain.append(item)
    if plain:
        weekdays = {_sunday_is_zero(v) for v in values(",".join(plain), 0, 7, DAY_NAMES)}
        tests.append(lambda d: d.isoweekday() % 7 in weekdays)
    return lambda d: any(test(d) for test in tests)


@dataclass(frozen=True)
class CronModel:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    months: frozenset[int]
    day_of_month: DayTest
    day_of_week: DayTest
    both_days: bool  # the AND rule: a day field starts with * (or ?)

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month, in_week = self.day_of_month(day), self.day_of_week(day)
        return (in_month and in_week) if self.both_days else (in_month or in_week)

    def matches(self, wall: datetime) -> bool:
        return (
            wall.second in self.seconds
            and wall.minute in self.minutes
            and wall.hour in self.hours
            and self.day_matches(wall.date())
        )

    def times_of_day(self) -> list[time]:
        return [
            time(h, m, s)
            for h in sorted(self.hours)
            for m in sorted(self.minutes)
            for s in sorted(self.seconds)
        ]

    def walls(self, first_day: date, last_day: date) -> Iterator[datetime]:
        """Every matching wall time from ``first_day`` to ``last_day`` (inclusive), day by day."""
        times = self.times_of_day()
        day = first_day
        while day <= last_day:
            if self.day_matches(day):
                for t in times:
                    yield datetime.combine(day, t)
            day += timedelta(days=1)


def model(expression: str) -> CronModel:
    text = SHORTCUTS.get(expression.strip().lower(), expression)
    fields = text.split()
    assert len(fields) in (5, 6), expression
    seconds = values(fields[0], 0, 59) if len(fields) == 6 else {0}
    minute, hour, dom, month, dow = fields[-5:]
    return CronModel(
        seconds=frozenset(seconds),
        minutes=frozenset(values(minute, 0, 59)),
        hours=frozenset(values(hour, 0, 23)),
        months=frozenset(values(month, 1, 12, MONTH_NAMES)),
        day_of_month=_day_of_month(dom),
        day_of_week=_day_of_week(dow),
        both_days=dom[:1] in ("*", "?") or dow[:1] in ("*", "?"),
    )
