"""Human descriptions of cron expressions ("At 02:00, Monday through Friday"), from cron-descriptor.

cron-descriptor writes the words; this module only hands it our expressions in a form it reads the
way durably-sched does, and joins the two day fields itself, because cron-descriptor's joining does
not follow the cron(8) rule that :mod:`durably_sched.schedule.cron` applies:

* it is given all seven fields (second minute hour day-of-month month day-of-week year), never five or
  six: a six-field expression is seconds-first for us, and cron-descriptor guesses the order of six
  fields from their content;
* a day-of-week with a step or a list is passed as the days croniter reads (``*/2`` becomes
  ``0,2,4,6``): cron-descriptor reads some steps as a weekly cadence (``1-5/7``, which is Mondays,
  is "every 7 weeks, Monday through Friday"), which cron has no notion of, and repeats Sunday for
  ``0,7``;
* when both day fields restrict the day, the day-of-month and the day-of-week parts are described
  separately and joined with "or" when either may match (both restricted without a leading ``*``)
  and "and only" when both must (cron-descriptor says "or" for ``*/2`` with ``1``, and nothing at all
  for ``1,15`` with ``1-5``); a field that names every day (``*/1``, ``1-31``) is left out when it
  does not change which days fire;
* English and the 24-hour clock always, whatever the machine's locale, so the CLI and the dashboard
  say the same thing everywhere.

:func:`describe_cron` never raises for an expression :func:`~durably_sched.schedule.cron.parse_cron`
accepted: where cron-descriptor fails it returns the expression itself.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cron_descriptor import CasingTypeEnum, DescriptionTypeEnum, ExpressionDescriptor, Options
from croniter import croniter

from .cron import CronSpec

if TYPE_CHECKING:
    from .config import ScheduleEntry

__all__ = ["describe_cron"]

_OPTIONS = Options(
    CasingTypeEnum.Sentence,
    locale_code="en_US",
    use_24hour_time_format=True,
    day_of_week_start_index_zero=True,
)
# Positions in croniter's field order (minute hour day-of-month month day-of-week [second]).
_MINUTE, _HOUR, _DOM, _MONTH, _DOW = range(5)


def describe_cron(spec: CronSpec) -> str:
    """A one-line English description of ``spec``, e.g. "At 02:00, Monday through Friday".

    Seconds-first six-field expressions, names, ``L``, ``W`` and ``#`` are described as durably-sched
    reads them, including how the two day fields combine. Falls back to ``spec.expression`` when
    cron-descriptor cannot describe a form. Cached per expression.
    """
    return _describe(spec)


@lru_cache(maxsize=4096)
def _describe(spec: CronSpec) -> str:
    try:
        text = _description(spec)
    except Exception:  # cron-descriptor raises assorted errors on forms it does not know
        return spec.expression
    return " ".join(text.split()) or spec.expression


def _description(spec: CronSpec) -> str:
    fields = spec.croniter_expression.split()
    second = fields[5] if spec.has_seconds else "0"
    dom, dow = fields[_DOM], _weekdays_as_croniter_reads_them(fields[_DOW])
    dom_every, dow_every = _every_day_of_month(dom), _every_day_of_week(dow)
    if spec.days_or and len(spec.walks) == 1:  # one side never matches (31 February): the other alone
        surviving = spec.walks[0].split()
        dom, dow = ("*", dow) if surviving[_DOM] == "*" else (dom, "*")
    elif spec.days_or:
        if dom_every or dow_every:  # either field alone already matches every day
            dom = dow = "*"
    else:
        dom = "*" if dom_every else dom
        dow = "*" if dow_every else dow

    def descriptor(day_of_month: str, day_of_week: str) -> ExpressionDescriptor:
        seven = [second, fields[_MINUTE], fields[_HOUR], day_of_month, fields[_MONTH], day_of_week, "*"]
        return ExpressionDescriptor(" ".join(seven), _OPTIONS)

    if dom == "*" or dow == "*":
        full: str = descriptor(dom, dow).get_description(DescriptionTypeEnum.FULL)
        return full
    by_month = descriptor(dom, "*")
    by_week = descriptor("*", dow)
    time_part = by_month.get_description(DescriptionTypeEnum.TIMEOFDAY)
    month_day_part = by_month.get_description(DescriptionTypeEnum.DAYOFMONTH)
    week_day_part = by_week.get_description(DescriptionTypeEnum.DAYOFWEEK)
    month_part = by_month.get_description(DescriptionTypeEnum.MONTH)
    # cron-descriptor's parts start with ", "; a lone weekday says "only on Monday".
    week_days = week_day_part.removeprefix(", ").removeprefix("only ")
    joined = f"{time_part}{month_day_part}, {'or' if spec.days_or else 'and only'} {week_days}{month_part}"
    cased: str = ExpressionDescriptor.transform_case(joined, _OPTIONS.casing_type)
    return cased


def _weekdays_as_croniter_reads_them(dow: str) -> str:
    """A day-of-week with a step or a list, as the plain list of days croniter expands it to."""
    if "#" in dow or ("/" not in dow and "," not in dow):
        return dow
    days, _ = croniter.expand(f"0 0 * * {dow}")
    weekdays = days[_DOW]
    if "*" in weekdays:  # every day of the week (*/1, 0-7, *,1)
        return "*"
    return ",".join(str(day) for day in sorted(set(weekdays)))


def _every_day_of_month(dom: str) -> bool:
    if any(mark in dom.upper() for mark in ("L", "W")):
        return False
    days, _ = croniter.expand(f"0 0 {dom} * *")
    return "*" in days[_DOM]  # */1, 1-31, *,15


def _every_day_of_week(dow: str) -> bool:
    if "#" in dow:
        return False
    days, _ = croniter.expand(f"0 0 * * {dow}")
    return "*" in days[_DOW]


def definition_fields(entry: ScheduleEntry) -> dict[str, Any]:
    """The first fields of a schedule in ``schedules list --json`` and in the HTTP API."""
    return {
        "name": entry.name,
        "job": entry.job,
        "cron": entry.cron.expression,
        "description": describe_cron(entry.cron),
        "timezone": entry.timezone.key,
        "enabled": entry.enabled,
    }
