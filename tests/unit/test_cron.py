"""Fire times, the DST policy, fire keys and jitter (durably_sched.schedule.cron).

What users rely on: a schedule fires exactly once per fire time, at the instant its cron expression
names in its time zone, with daylight-saving changes handled by one documented policy; fire keys name a
fire time in UTC and parse back to it; jitter is the same in every process.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import cache
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durably_sched.schedule.cron import (
    CronSpec,
    fire_key,
    fire_times,
    is_fire_time,
    jitter_offset,
    latest_fire_time,
    next_fire_time,
    parse_cron,
    parse_fire_key,
)

from .cron_model import model

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
KOLKATA = ZoneInfo("Asia/Kolkata")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fires(expression: str, tz: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    return list(fire_times(parse_cron(expression), tz, after, until))


def as_utc(times: list[datetime]) -> list[datetime]:
    """Compare fire times as instants: Python compares two datetimes with the same tzinfo by wall
    time (ignoring fold), and never finds a repeated wall time equal to anything in another zone."""
    return [t.astimezone(UTC) for t in times]


def instant(t: datetime | None) -> datetime | None:
    return None if t is None else t.astimezone(UTC)


def croniter_alone(expression: str, start: datetime, count: int) -> list[datetime]:
    """What croniter itself produces from a tz-aware start (to compare our policy with)."""
    walker = croniter(expression, start)
    return [walker.get_next(datetime).astimezone(UTC) for _ in range(count)]


# --- parsing ------------------------------------------------------------------------------------------


def test_weekday_0_and_7_both_mean_sunday() -> None:
    start = utc(2024, 1, 1)  # a Monday
    zero = fires("0 9 * * 0", ZoneInfo("UTC"), start, utc(2024, 1, 31))
    seven = fires("0 9 * * 7", ZoneInfo("UTC"), start, utc(2024, 1, 31))
    assert zero == seven
    assert [t.day for t in zero] == [7, 14, 21, 28]
    assert all(t.weekday() == 6 for t in zero)


def test_month_and_weekday_names_are_accepted() -> None:
    named = fires("30 8 * JAN,FEB MON-FRI", ZoneInfo("UTC"), utc(2024, 1, 1), utc(2024, 12, 31))
    numbered = fires("30 8 * 1,2 1-5", ZoneInfo("UTC"), utc(2024, 1, 1), utc(2024, 12, 31))
    assert named == numbered
    assert len(named) == 23 + 21  # the weekdays of January and February 2024
    assert {t.month for t in named} == {1, 2}
    assert all(t.weekday() < 5 for t in named)


def test_six_fields_take_the_seconds_first() -> None:
    spec = parse_cron("15 30 2 * * *")
    assert spec.has_seconds
    first = next_fire_time(spec, ZoneInfo("UTC"), utc(2024, 1, 1))
    assert first == utc(2024, 1, 1, 2, 30, 15)
    # croniter's own 6-field form would read this as minute 15, hour 30 (invalid): we reorder.
    with pytest.raises(ValueError):
        croniter("15 30 2 * * *", datetime(2024, 1, 1))


def test_six_fields_with_a_seconds_step() -> None:
    got = fires("*/20 0 12 * * *", ZoneInfo("UTC"), utc(2024, 1, 1), utc(2024, 1, 1, 12, 59))
    assert got == [utc(2024, 1, 1, 12, 0, s) for s in (0, 20, 40)]


def test_five_fields_have_no_seconds() -> None:
    spec = parse_cron("0 2 * * *")
    assert not spec.has_seconds
    assert spec.fixed_hour
    assert spec.expression == "0 2 * * *"


@pytest.mark.parametrize(
    ("expression", "fixed"),
    [
        ("30 2 * * *", True),
        ("0 1,2 * * *", True),
        ("0 0 1 * *", True),
        ("0 * * * *", False),
        ("0 */2 * * *", False),
        ("0 1-5 * * *", False),
        ("0 22-2 * * *", False),
        ("0 0 2 * * *", True),
        ("@daily", True),
        ("@hourly", False),
    ],
)
def test_hour_field_kind_decides_fold_handling(expression: str, fixed: bool) -> None:
    assert parse_cron(expression).fixed_hour is fixed


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "4 fields"),
        ("0 0 1 1 * 2099 0", "7 fields"),
        ("0 0 * * * * * *", "8 fields"),
        ("", "empty"),
        ("   ", "empty"),
        ("61 * * * *", "minute field '61'"),
        ("0 24 * * *", "hour field '24'"),
        ("0 0 32 * *", "day-of-month field '32'"),
        ("0 0 0 * *", "day-of-month field '0'"),
        ("0 0 * 13 *", "month field '13'"),
        ("0 0 * * 8", "day-of-week field '8'"),
        ("0 0 * FOO *", "month field 'FOO'"),
        ("0 0 * * FUNDAY", "day-of-week field 'FUNDAY'"),
        ("60 0 0 * * *", "second field '60'"),
        ("*/0 * * * *", "minute field '*/0'"),
        ("5-70 * * * *", "minute field '5-70'"),
        ("0 0 30 2 *", "no date ever matches"),
        ("0 0 31 4,6 *", "no date ever matches"),
        ("H * * * *", "hashed (H) and random (R)"),
        ("R 2 * * *", "hashed (H) and random (R)"),
        ("0 5-5 * * *", "range '5-5'"),
        ("0 0 * * SUN-SUN", "range 'SUN-SUN'"),
        ("@reboot", "unknown shortcut"),
    ],
)
def test_bad_expressions_are_rejected_with_a_clear_message(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match="cron expression") as caught:
        parse_cron(expression)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_croniter_reads_an_equal_range_as_the_whole_field() -> None:
    """Why '5-5' is rejected: croniter would fire every hour, not at 05:00."""
    walker = croniter("0 5-5 * * *", datetime(2024, 1, 1))
    assert walker.get_next(datetime) == datetime(2024, 1, 1, 1, 0)


def test_day_of_month_and_day_of_week_together_mean_either() -> None:
    # cron(8): both fields restricted, neither starting with *: the 1st of the month OR any Monday.
    got = fires("0 0 1 * MON", ZoneInfo("UTC"), utc(2024, 1, 1), utc(2024, 2, 29))
    assert [t.date().isoformat() for t in got] == [
        "2024-01-08",
        "2024-01-15",
        "2024-01-22",
        "2024-01-29",
        "2024-02-01",
        "2024-02-05",
        "2024-02-12",
        "2024-02-19",
        "2024-02-26",
    ]


def test_croniter_extensions_last_day_nth_weekday_are_allowed() -> None:
    last = fires("0 3 L * *", ZoneInfo("UTC"), utc(2024, 1, 1), utc(2024, 4, 30, 23))
    assert [t.day for t in last] == [31, 29, 31, 30]
    second_friday = fires("0 9 * * 5#2", ZoneInfo("UTC"), utc(2024, 1, 1), utc(2024, 3, 31))
    assert [t.date().isoformat() for t in second_friday] == ["2024-01-12", "2024-02-09", "2024-03-08"]


def test_spec_is_hashable_and_compares_by_value() -> None:
    assert parse_cron("0 2 * * *") == parse_cron("0 2 * * *")
    assert len({parse_cron("0 2 * * *"), parse_cron("0 2 * * *")}) == 1
    assert isinstance(parse_cron("@weekly"), CronSpec)


# --- the DST policy -----------------------------------------------------------------------------------


def test_berlin_spring_forward_missing_time_fires_once_right_after_the_gap() -> None:
    # 2024-03-31: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    got = fires("30 2 * * *", BERLIN, utc(2024, 3, 30, 12), utc(2024, 4, 1, 12))
    assert as_utc(got) == [utc(2024, 3, 31, 1, 0), utc(2024, 4, 1, 0, 30)]
    assert got[0].isoformat() == "2024-03-31T03:00:00+02:00"


def test_berlin_fall_back_fixed_hour_fires_once_at_the_first_occurrence() -> None:
    # 2024-10-27: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    got = fires("30 2 * * *", BERLIN, utc(2024, 10, 26, 12), utc(2024, 10, 28, 12))
    assert as_utc(got) == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]
    assert got[0].fold == 0
    # croniter alone fires the repeated 02:30 twice; the policy above removes the second one.
    alone = croniter_alone("30 2 * * *", datetime(2024, 10, 26, 12, tzinfo=BERLIN), 3)
    assert alone == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 27, 1, 30), utc(2024, 10, 28, 1, 30)]


def test_fixed_hour_list_fires_once_per_wall_time_on_fall_back() -> None:
    got = fires("0 1,2 * * *", BERLIN, utc(2024, 10, 26, 12), utc(2024, 10, 27, 12))
    assert as_utc(got) == [utc(2024, 10, 26, 23, 0), utc(2024, 10, 27, 0, 0)]


def test_hourly_fires_at_both_two_oclocks_on_fall_back() -> None:
    got = fires("0 * * * *", BERLIN, utc(2024, 10, 26, 22, 30), utc(2024, 10, 27, 2, 30))
    assert as_utc(got) == [
        utc(2024, 10, 26, 23),
        utc(2024, 10, 27, 0),
        utc(2024, 10, 27, 1),
        utc(2024, 10, 27, 2),
    ]
    assert [(t.hour, t.fold) for t in got] == [(1, 0), (2, 0), (2, 1), (3, 0)]


def test_stepped_minutes_in_a_fold_are_merged_in_time_order() -> None:
    got = fires("*/30 * * * *", BERLIN, utc(2024, 10, 26, 23, 40), utc(2024, 10, 27, 2, 0))
    assert as_utc(got) == [
        utc(2024, 10, 27, 0, 0),
        utc(2024, 10, 27, 0, 30),
        utc(2024, 10, 27, 1, 0),
        utc(2024, 10, 27, 1, 30),
        utc(2024, 10, 27, 2, 0),
    ]


def test_starting_inside_the_fold_still_finds_the_second_pass() -> None:
    # After 02:45 CEST (first pass), an hourly-style job still has 02:00 and 02:30 CET ahead.
    after = datetime(2024, 10, 27, 2, 45, tzinfo=BERLIN)  # fold=0: CEST
    got = fires("*/30 * * * *", BERLIN, after, utc(2024, 10, 27, 2, 0))
    assert as_utc(got) == [utc(2024, 10, 27, 1, 0), utc(2024, 10, 27, 1, 30), utc(2024, 10, 27, 2, 0)]
    # ...but a fixed-hour job has nothing left that day.
    fixed = fires("*/30 2 * * *", BERLIN, after, utc(2024, 10, 27, 12))
    assert fixed == []


def test_wildcard_hour_in_a_gap_fires_once_after_it_where_croniter_skips() -> None:
    got = fires("30 * * * *", BERLIN, utc(2024, 3, 30, 23, 40), utc(2024, 3, 31, 2, 0))
    assert as_utc(got) == [utc(2024, 3, 31, 0, 30), utc(2024, 3, 31, 1, 0), utc(2024, 3, 31, 1, 30)]
    alone = croniter_alone("30 * * * *", datetime(2024, 3, 31, 0, 40, tzinfo=BERLIN), 2)
    assert alone == [utc(2024, 3, 31, 0, 30), utc(2024, 3, 31, 1, 30)]  # croniter drops 02:30


def test_every_minute_through_a_gap_fires_once_at_its_end() -> None:
    got = fires("* * * * *", BERLIN, utc(2024, 3, 31, 0, 58), utc(2024, 3, 31, 1, 2))
    assert as_utc(got) == [
        utc(2024, 3, 31, 0, 59),
        utc(2024, 3, 31, 1, 0),
        utc(2024, 3, 31, 1, 1),
        utc(2024, 3, 31, 1, 2),
    ]


def test_new_york() -> None:
    # 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST.
    spring = fires("30 2 * * *", NEW_YORK, utc(2024, 3, 9), utc(2024, 3, 11, 12))
    assert as_utc(spring) == [utc(2024, 3, 9, 7, 30), utc(2024, 3, 10, 7, 0), utc(2024, 3, 11, 6, 30)]
    fall = fires("30 1 * * *", NEW_YORK, utc(2024, 11, 2, 12), utc(2024, 11, 4, 12))
    assert as_utc(fall) == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]
    hourly = fires("30 * * * *", NEW_YORK, utc(2024, 11, 3, 4), utc(2024, 11, 3, 7))
    assert as_utc(hourly) == [utc(2024, 11, 3, 4, 30), utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 6, 30)]
    assert [(t.hour, t.fold) for t in hourly] == [(0, 0), (1, 0), (1, 1)]


def test_lord_howe_half_hour_dst() -> None:
    # 2024-10-06 02:00 +10:30 -> 02:30 +11:00 (gap of 30 minutes).
    spring = fires("15 2 * * *", LORD_HOWE, utc(2024, 10, 4, 12), utc(2024, 10, 6, 12))
    assert [t.isoformat() for t in spring] == ["2024-10-05T02:15:00+10:30", "2024-10-06T02:30:00+11:00"]
    # 2024-04-07 02:00 +11:00 -> 01:30 +10:30: 01:30-01:59 happen twice.
    fall = fires("45 1 * * *", LORD_HOWE, utc(2024, 4, 5, 12), utc(2024, 4, 8, 12))
    assert [t.isoformat() for t in fall] == [
        "2024-04-06T01:45:00+11:00",
        "2024-04-07T01:45:00+11:00",  # the first of the two; 01:45+10:30 half an hour later is skipped
        "2024-04-08T01:45:00+10:30",
    ]
    every = fires("*/15 * * * *", LORD_HOWE, utc(2024, 4, 6, 14, 40), utc(2024, 4, 6, 15, 45))
    assert [t.strftime("%H:%M%z") for t in every] == [
        "01:45+1100",
        "01:30+1030",
        "01:45+1030",
        "02:00+1030",
        "02:15+1030",
    ]
    assert as_utc(every) == [utc(2024, 4, 6, 14, 45) + timedelta(minutes=15 * i) for i in range(4)] + [
        utc(2024, 4, 6, 15, 45)
    ]


def test_zone_without_dst() -> None:
    got = fires("30 2 * * *", KOLKATA, utc(2024, 3, 1), utc(2024, 11, 30))
    assert len(got) == 274
    assert {t.astimezone(UTC).time().isoformat() for t in got} == {"21:00:00"}
    assert {t.utcoffset() for t in got} == {timedelta(hours=5, minutes=30)}


def test_midnight_gap_fires_at_the_first_hour_that_exists() -> None:
    # America/Santiago springs forward at 00:00 -> 01:00: midnight does not exist on 2024-09-08.
    got = fires("0 0 * * *", ZoneInfo("America/Santiago"), utc(2024, 9, 6, 12), utc(2024, 9, 9, 12))
    assert [t.isoformat() for t in got] == [
        "2024-09-07T00:00:00-04:00",
        "2024-09-08T01:00:00-03:00",
        "2024-09-09T00:00:00-03:00",
    ]


def test_a_whole_missing_day_fires_once_after_it() -> None:
    # Samoa skipped 2011-12-30 entirely (-10:00 -> +14:00 at midnight).
    got = fires("0 12 * * *", ZoneInfo("Pacific/Apia"), utc(2011, 12, 28), utc(2012, 1, 2))
    assert [t.isoformat() for t in got] == [
        "2011-12-28T12:00:00-10:00",
        "2011-12-29T12:00:00-10:00",
        "2011-12-31T00:00:00+14:00",
        "2011-12-31T12:00:00+14:00",
        "2012-01-01T12:00:00+14:00",
        "2012-01-02T12:00:00+14:00",
    ]


# --- the query functions ------------------------------------------------------------------------------


def test_fire_times_is_strictly_after_and_inclusive_of_until() -> None:
    spec = parse_cron("0 * * * *")
    got = list(fire_times(spec, ZoneInfo("UTC"), utc(2024, 1, 1, 1), utc(2024, 1, 1, 3)))
    assert got == [utc(2024, 1, 1, 2), utc(2024, 1, 1, 3)]


def test_fire_times_accepts_any_zone_and_answers_in_the_schedules_zone() -> None:
    spec = parse_cron("0 9 * * *")
    after = datetime(2024, 6, 1, 12, tzinfo=ZoneInfo("Asia/Tokyo"))  # 03:00Z = 05:00 Berlin
    first = next_fire_time(spec, BERLIN, after)
    assert first.tzinfo is BERLIN
    assert first.isoformat() == "2024-06-01T09:00:00+02:00"


def test_fire_times_is_lazy_and_unbounded() -> None:
    spec = parse_cron("* * * * * *")
    got = list(islice(fire_times(spec, ZoneInfo("UTC"), utc(2030, 5, 5)), 3))
    assert got == [utc(2030, 5, 5, 0, 0, 1), utc(2030, 5, 5, 0, 0, 2), utc(2030, 5, 5, 0, 0, 3)]


def test_naive_datetimes_are_refused() -> None:
    spec = parse_cron("0 * * * *")
    with pytest.raises(ValueError, match="timezone-aware"):
        fire_times(spec, BERLIN, datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        latest_fire_time(spec, BERLIN, datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        fire_key("nightly", datetime(2024, 1, 1))


def test_next_fire_time_after_a_fire_time_is_the_following_one() -> None:
    spec = parse_cron("0 2 * * *")
    first = next_fire_time(spec, BERLIN, utc(2024, 4, 30, 12))
    assert first == datetime(2024, 5, 1, 2, tzinfo=BERLIN)
    assert next_fire_time(spec, BERLIN, first) == datetime(2024, 5, 2, 2, tzinfo=BERLIN)


def test_latest_fire_time_is_at_or_before() -> None:
    spec = parse_cron("0 2 * * *")
    fire = datetime(2024, 5, 2, 2, tzinfo=BERLIN)
    assert latest_fire_time(spec, BERLIN, fire) == fire
    assert latest_fire_time(spec, BERLIN, fire + timedelta(microseconds=1)) == fire
    assert latest_fire_time(spec, BERLIN, fire - timedelta(seconds=1)) == fire - timedelta(days=1)


def test_latest_fire_time_in_and_around_a_fold() -> None:
    hourly = parse_cron("*/30 * * * *")
    # 01:10Z is 02:10 CET, second pass: the latest is 02:00 CET (01:00Z), not 02:30 CEST (00:30Z).
    assert instant(latest_fire_time(hourly, BERLIN, utc(2024, 10, 27, 1, 10))) == utc(2024, 10, 27, 1, 0)
    assert instant(latest_fire_time(hourly, BERLIN, utc(2024, 10, 27, 0, 50))) == utc(2024, 10, 27, 0, 30)
    fixed = parse_cron("30 2 * * *")
    assert instant(latest_fire_time(fixed, BERLIN, utc(2024, 10, 27, 1, 45))) == utc(2024, 10, 27, 0, 30)
    assert instant(latest_fire_time(fixed, BERLIN, utc(2024, 3, 31, 1, 0))) == utc(2024, 3, 31, 1, 0)
    assert instant(latest_fire_time(fixed, BERLIN, utc(2024, 3, 31, 0, 59, 59))) == utc(2024, 3, 30, 1, 30)


def test_latest_fire_time_is_none_when_there_is_no_earlier_fire_time() -> None:
    leap_day = parse_cron("0 0 29 2 *")
    assert latest_fire_time(leap_day, ZoneInfo("UTC"), utc(2024, 6, 1)) == utc(2024, 2, 29)
    assert latest_fire_time(leap_day, ZoneInfo("UTC"), utc(3, 6, 1)) is None  # years 1-3 have none


def test_is_fire_time() -> None:
    spec = parse_cron("30 2 * * *")
    assert is_fire_time(spec, BERLIN, utc(2024, 3, 31, 1, 0))  # the shifted gap time
    assert not is_fire_time(spec, BERLIN, utc(2024, 3, 31, 0, 30))
    assert is_fire_time(spec, BERLIN, utc(2024, 10, 27, 0, 30))
    assert not is_fire_time(spec, BERLIN, utc(2024, 10, 27, 1, 30))  # the repeated 02:30
    assert is_fire_time(spec, BERLIN, utc(2024, 10, 27, 0, 30, 0) + timedelta(microseconds=500))
    assert not is_fire_time(spec, BERLIN, utc(2024, 10, 27, 0, 30, 1))


# --- keys and jitter ----------------------------------------------------------------------------------


def test_fire_key_is_utc_to_the_second() -> None:
    fire = datetime(2024, 3, 31, 3, 0, tzinfo=BERLIN)
    assert fire_key("nightly-report", fire) == "schedule:nightly-report:2024-03-31T01:00:00Z"
    assert parse_fire_key("schedule:nightly-report:2024-03-31T01:00:00Z") == ("nightly-report", fire)


def test_fire_keys_tell_the_two_occurrences_of_a_repeated_time_apart() -> None:
    first, second = fires("0 * * * *", BERLIN, utc(2024, 10, 26, 23, 30), utc(2024, 10, 27, 1))
    assert fire_key("h", first) != fire_key("h", second)
    # Python itself calls them equal (same tzinfo: wall times compared, fold ignored): dedupe and
    # compare fire times by key or in UTC, never as local datetimes.
    assert first == second
    assert first.astimezone(UTC) != second.astimezone(UTC)
    # Arithmetic on them is wall-clock arithmetic and drops the fold: add offsets (jitter) in UTC.
    assert (second + timedelta(0)).astimezone(UTC) == first.astimezone(UTC)
    assert second.astimezone(UTC) + timedelta(0) == utc(2024, 10, 27, 1)


@pytest.mark.parametrize("name", ["a", "nightly_report.v2", "A-1", "x" * 200])
def test_fire_key_round_trips(name: str) -> None:
    fire = utc(2031, 12, 31, 23, 59, 59)
    assert parse_fire_key(fire_key(name, fire)) == (name, fire)
    assert fire_key(*parse_fire_key(fire_key(name, fire))) == fire_key(name, fire)


@pytest.mark.parametrize("name", ["", "has space", "colon:name", "ünïcode", "new\nline"])
def test_fire_key_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="schedule name"):
        fire_key(name, utc(2024, 1, 1))


def test_fire_key_refuses_fractional_seconds() -> None:
    with pytest.raises(ValueError, match="whole second"):
        fire_key("nightly", utc(2024, 1, 1) + timedelta(microseconds=1))


@pytest.mark.parametrize(
    "key",
    [
        "",
        "nightly:2024-01-01T00:00:00Z",
        "schedule:nightly:2024-01-01T00:00:00",
        "schedule:nightly:2024-01-01 00:00:00Z",
        "schedule:nightly:2024-13-01T00:00:00Z",
        "schedule:bad name:2024-01-01T00:00:00Z",
        "schedule:nightly:2024-01-01T00:00:00.5Z",
    ],
)
def test_parse_fire_key_rejects_other_strings(key: str) -> None:
    with pytest.raises(ValueError, match="fire key"):
        parse_fire_key(key)


def test_jitter_is_deterministic_and_within_range() -> None:
    jitter = timedelta(seconds=30)
    fire = utc(2024, 1, 1, 2)
    offsets = {jitter_offset("nightly", fire, jitter) for _ in range(3)}
    assert len(offsets) == 1
    spread = [jitter_offset("nightly", fire + timedelta(days=d), jitter) for d in range(200)]
    assert all(timedelta(0) <= o < jitter for o in spread)
    assert len(set(spread)) > 150  # it does spread
    assert max(spread) > timedelta(seconds=20) and min(spread) < timedelta(seconds=10)
    # The same instant written in another zone is the same fire time.
    assert jitter_offset("nightly", fire.astimezone(BERLIN), jitter) == jitter_offset("nightly", fire, jitter)
    assert jitter_offset("other", fire, jitter) != jitter_offset("nightly", fire, jitter)


def test_jitter_zero_is_zero_and_negative_is_refused() -> None:
    assert jitter_offset("nightly", utc(2024, 1, 1), timedelta(0)) == timedelta(0)
    with pytest.raises(ValueError):
        jitter_offset("nightly", utc(2024, 1, 1), timedelta(seconds=-1))


def test_jitter_is_pinned_across_processes_and_releases() -> None:
    # A fixed value, the same in every process and on every machine (sha256, not the salted hash()).
    # If this changes, every running schedule's jitter moves: change it only on purpose.
    offset = jitter_offset("nightly", utc(2024, 1, 1, 2), timedelta(hours=1))
    assert offset == timedelta(microseconds=789_317_172)


def test_a_thousand_next_fire_times_are_cheap() -> None:
    specs = [parse_cron(f"{i % 60} {i % 24} * * *") for i in range(1000)]
    now = utc(2030, 6, 15, 12, 34, 56)
    started = time.perf_counter()
    for spec in specs:
        next_fire_time(spec, BERLIN, now)
    assert time.perf_counter() - started < 2.0  # ~0.1 s on a laptop; no walk from the epoch


# --- properties ---------------------------------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "Europe/Dublin",  # "negative" DST in the tz database
    "America/New_York",
    "America/Santiago",  # changes at midnight
    "America/Havana",  # changes at midnight
    "America/St_Johns",  # -03:30 / -02:30
    "America/Nuuk",
    "Australia/Sydney",
    "Australia/Lord_Howe",  # 30-minute DST
    "Pacific/Auckland",
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Kolkata",  # no DST
    "Asia/Kathmandu",  # +05:45, no DST
    "Asia/Tehran",  # DST until 2022
    "Africa/Casablanca",  # goes back an hour for Ramadan
]
# Expressions on which croniter's own matching agrees with cron(8) (plain numbers, lists, ranges, steps).
PLAIN_EXPRESSIONS = [
    "0 * * * *",
    "30 * * * *",
    "*/15 * * * *",
    "*/7 * * * *",
    "45 1 * * *",
    "30 2 * * *",
    "0 1,2 * * *",
    "0 0 * * *",
    "15 0 * * *",
    "0 */2 * * *",
    "15 1-3 * * *",
    "0 22-2 * * *",
    "10,40 2,3 * * *",
    "0 0 * * 0",
    "30 1 1 * MON",
    "0 12 * JAN-MAR,OCT-DEC *",
    "0 30 2 * * *",
    "15,45 */20 * * * *",
    "30 0 0 * * *",
]
EXTRA_EXPRESSIONS = ["0 3 L * *", "30 1 * * 5#2", "0 2 15W * *", "@hourly", "@daily"]
# Day fields where croniter's own rule is not cron's (the issue's examples among them): a leading *
# AND's the two fields, both restricted without one OR's them, also with #, L and W.
DAY_EXPRESSIONS = [
    "0 0 */2 * 1",
    "30 2 */1 * 1",
    "0 0 15 * 0#3",
    "0 0 1 * 0#3",
    "0 * 2 * 7#5",
    "30 1 1,15 * 1-5",
    "0 2 1 * */2",
    "0 3 L * 5",
    "15 2 ? * 0",
    "*/30 * 1-31 * 1",
    "0 2 15W * 1",
    "30 2 */3 * 5#2",
]


@cache
def transitions(zone: str, year: int) -> tuple[datetime, ...]:
    """The instants (UTC) at which the zone's offset changes during the year."""
    tz = ZoneInfo(zone)

    def offset(t: datetime) -> timedelta | None:
        return t.astimezone(tz).utcoffset()

    found = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    step = timedelta(hours=6)
    while t < end:
        if offset(t) != offset(t + step):
            low, high = 0, int(step.total_seconds())
            while high - low > 1:
                middle = (low + high) // 2
                if offset(t + timedelta(seconds=middle)) == offset(t):
                    low = middle
                else:
                    high = middle
            found.append(t + timedelta(seconds=high))
        t += step
    return tuple(found)


def aimed_at(wall: datetime) -> list[str]:
    """Expressions that match ``wall`` (a wall time a transition skips or repeats), of every kind."""
    h, m, step = wall.hour, wall.minute, 5 if wall.minute % 5 == 0 else 1
    other = (h + 7) % 24
    low, high = (h, h + 1) if h < 23 else (22, 23)
    return [
        f"{m} {h} * * *",  # fixed hour
        f"{m} {h},{other} * * *",  # fixed hours
        f"*/{step} {h} * * *",  # fixed hour, stepped minutes
        f"{m} * * * *",  # any hour
        f"*/{step} * * * *",
        f"{m} {low}-{high} * * *",  # range of hours
        f"{m} */{1 + h % 3} * * *" if h % (1 + h % 3) == 0 else f"{m} * * * *",  # stepped hours
        f"{wall.second} {m} {h} * * *",  # seconds first
        f"*/20 {m} * * * *",
    ]


@st.composite
def scenarios(draw: st.DrawFn, expressions: list[str], aim: bool = True) -> tuple[str, ZoneInfo, datetime]:
    """(expression, zone, after) with ``after`` in 2020-2035, often shortly before a DST change
    and, if ``aim``, often with an expression that matches a wall time the change skips or repeats."""
    zone = draw(st.sampled_from(ZONES))
    tz = ZoneInfo(zone)
    year = draw(st.integers(2020, 2035))
    changes = transitions(zone, year)
    expression = draw(st.sampled_from(expressions))
    if changes and draw(st.integers(0, 3)) > 0:
        change = draw(st.sampled_from(changes))
        start = change - timedelta(seconds=draw(st.integers(1, 30 * 3600)))
        before = (change - timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None)
        after = change.astimezone(tz).replace(tzinfo=None)
        low, high = sorted([before + timedelta(seconds=1), after])  # skipped or repeated wall times
        if aim and high > low:
            wall = low + timedelta(seconds=draw(st.integers(0, int((high - low).total_seconds()) - 1)))
            expression = draw(st.sampled_from(aimed_at(wall)))
    else:
        start = datetime(year, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 365 * 86400)))
    start += timedelta(microseconds=draw(st.sampled_from([0, 0, 1, 500_000])))
    shown_in = draw(st.sampled_from([UTC, tz, ZoneInfo("Asia/Tokyo")]))
    return expression, tz, start.astimezone(shown_in)


def matcher(spec: CronSpec) -> Callable[[datetime], bool]:
    """Whether a wall time matches, by the test's own cron(8) model (tests/unit/cron_model.py)."""
    return model(spec.expression).matches


def reference_fire_times(spec: CronSpec, tz: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    """The policy, evaluated by brute force over every UTC minute (all these zones change on minutes).

    A wall time that exists fires when it matches, except a repeated one's second pass for fixed-hour
    entries; when the clock jumps forward over matching wall times, the first instant after the jump
    fires.
    """
    matches = matcher(spec)
    seconds = sorted(model(spec.expression).seconds)
    minute = timedelta(minutes=1)
    t = after.astimezone(UTC).replace(second=0, microsecond=0)
    previous_wall = (t - minute).astimezone(tz).replace(tzinfo=None)
    found: list[datetime] = []
    while t <= until:
        local = t.astimezone(tz)
        wall = local.replace(tzinfo=None)
        if wall - previous_wall > minute:
            skipped = previous_wall + minute
            while skipped < wall:
                if any(matches(skipped + timedelta(seconds=s)) for s in seconds):
                    found.append(t)
                    break
                skipped += minute
        for s in seconds:
            if matches(wall + timedelta(seconds=s)) and not (spec.fixed_hour and local.fold == 1):
                found.append(t + timedelta(seconds=s))
        previous_wall = wall
        t += minute
    return sorted({f for f in found if after < f <= until})


def test_reference_matcher_agrees_with_croniter() -> None:
    """The test's own model agrees with croniter wherever croniter's day rule is cron's: on these plain
    expressions (where the day fields are not both restricted, or both are without a leading *)."""
    for expression in PLAIN_EXPRESSIONS:
        spec = parse_cron(expression)
        matches = matcher(spec)
        walker = croniter(spec.croniter_expression, datetime(2024, 1, 1))
        expected = [walker.get_next(datetime) for _ in range(50)]
        step = timedelta(seconds=1 if spec.has_seconds else 60)
        seen: list[datetime] = []
        wall = datetime(2024, 1, 1) + step
        while len(seen) < 50:
            if matches(wall):
                seen.append(wall)
            wall += step
        assert seen == expected, expression


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(PLAIN_EXPRESSIONS + EXTRA_EXPRESSIONS + DAY_EXPRESSIONS))
def test_fire_time_invariants(scenario: tuple[str, ZoneInfo, datetime]) -> None:
    expression, tz, after = scenario
    spec = parse_cron(expression)
    until = after + timedelta(days=3)
    got = list(islice(fire_times(spec, tz, after, until), 200))
    instants = [t.astimezone(UTC) for t in got]

    assert all(t.tzinfo is tz for t in got)
    assert instants == sorted(set(instants)), "strictly increasing, no UTC second twice"
    assert all(after.astimezone(UTC) < t <= until.astimezone(UTC) for t in instants)
    assert all(t.microsecond == 0 for t in got)
    for t in got:
        key = fire_key("prop", t)
        assert parse_fire_key(key) == ("prop", instant(t))
        assert is_fire_time(spec, tz, t)
        # Each result is the instant it claims in its zone (offset and fold consistent).
        assert t.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == t.replace(tzinfo=None)
        assert t.astimezone(UTC).astimezone(tz).fold == t.fold
    if spec.fixed_hour:
        slots = Counter(t.replace(tzinfo=None) for t in got)
        assert max(slots.values(), default=0) <= 1, "a fixed-hour wall time fires at most once"
    matches = matcher(spec)
    for t in got:
        wall = t.replace(tzinfo=None, fold=0)
        if matches(wall):
            continue
        # Otherwise it must be the documented gap shift: the clock jumped forward to this instant,
        # and a wall time that the jump skipped matches.
        before = (t.astimezone(UTC) - timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None)
        assert wall - before > timedelta(seconds=1), f"{t} does not match {expression}"
        skipped = (before + timedelta(seconds=s) for s in range(1, int((wall - before).total_seconds())))
        assert any(matches(w) for w in skipped), f"{t} does not match {expression} and no skipped time does"
    # Resuming from any fire time continues the same sequence (how a scheduler's cursor works).
    if len(got) >= 2:
        middle = len(got) // 2
        rest = instants[middle + 1 :]
        assert as_utc(list(islice(fire_times(spec, tz, got[middle], until), len(rest)))) == rest
        assert instant(next_fire_time(spec, tz, got[middle - 1])) == instants[middle]
        assert instant(latest_fire_time(spec, tz, got[middle])) == instants[middle]
        one_second_before = instants[middle] - timedelta(seconds=1)
        assert instant(latest_fire_time(spec, tz, one_second_before)) == instants[middle - 1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(PLAIN_EXPRESSIONS + EXTRA_EXPRESSIONS + DAY_EXPRESSIONS))
def test_fire_times_equal_the_brute_force_policy(scenario: tuple[str, ZoneInfo, datetime]) -> None:
    expression, tz, after = scenario
    spec = parse_cron(expression)
    until = after.astimezone(UTC) + timedelta(hours=36)
    expected = reference_fire_times(spec, tz, after.astimezone(UTC), until)
    assert as_utc(list(fire_times(spec, tz, after, until))) == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(PLAIN_EXPRESSIONS), st.integers(0, 36 * 3600))
def test_latest_fire_time_is_the_last_fire_time_at_or_before(
    scenario: tuple[str, ZoneInfo, datetime], seconds: int
) -> None:
    expression, tz, after = scenario
    spec = parse_cron(expression)
    probe = after + timedelta(seconds=seconds)
    window = list(fire_times(spec, tz, after - timedelta(days=2), probe))
    if window:
        assert instant(latest_fire_time(spec, tz, probe)) == instant(window[-1])
    else:
        latest = instant(latest_fire_time(spec, tz, probe))
        assert latest is not None and latest <= (after - timedelta(days=2)).astimezone(UTC)


# --- day of month and day of week: cron(8)'s rule ----------------------------------------------------
# cron(8) (Vixie cron, cronie): when either day field starts with * (also */n, *,n; ? counts as *) a day
# must match both fields; when both are restricted without a leading *, a day matches either.


def dates(expression: str, after: datetime, count: int) -> list[str]:
    """The first ``count`` fire dates (UTC) strictly after ``after``."""
    times = islice(fire_times(parse_cron(expression), ZoneInfo("UTC"), after), count)
    return [t.date().isoformat() for t in times]


def test_a_stepped_day_of_month_with_a_weekday_means_both() -> None:
    # */2 starts with *: Mondays that are odd days of the month (croniter alone: odd days OR Mondays).
    assert dates("0 0 */2 * 1", utc(2024, 1, 1), 5) == [
        "2024-01-15",
        "2024-01-29",
        "2024-02-05",
        "2024-02-19",
        "2024-03-11",
    ]
    # */1 is every day: Mondays only (croniter alone: every day).
    assert dates("0 0 */1 * 1", utc(2024, 1, 1), 3) == ["2024-01-08", "2024-01-15", "2024-01-22"]
    # The same with the star on the other side: the 1st when it is a Sunday, Tuesday, Thursday or Saturday.
    assert dates("0 0 1 * */2", utc(2024, 1, 1), 3) == ["2024-02-01", "2024-06-01", "2024-08-01"]
    # ? reads as *, and a list that starts with * is starred too.
    assert dates("0 0 ? * 1", utc(2024, 1, 1), 2) == ["2024-01-08", "2024-01-15"]
    assert dates("0 0 *,15 * 1", utc(2024, 1, 1), 2) == ["2024-01-08", "2024-01-15"]


def test_two_restricted_day_fields_mean_either() -> None:
    # A full range is still "restricted" as written: 1-31 OR Mondays is every day.
    assert dates("0 0 1-31 * 1", utc(2024, 1, 1), 3) == ["2024-01-02", "2024-01-03", "2024-01-04"]
    assert dates("0 0 1,15 * 5", utc(2024, 2, 1), 4) == [
        "2024-02-02",
        "2024-02-09",
        "2024-02-15",
        "2024-02-16",
    ]
    # A side that never matches adds nothing; the other still fires (cron fires on February's Mondays).
    assert dates("0 0 31 2 1", utc(2024, 1, 1), 2) == ["2024-02-05", "2024-02-12"]


def test_nth_weekday_with_a_day_of_month_means_either() -> None:
    # 0#3 does not start with *: the 15th OR the third Sunday (croniter alone: both at once).
    assert dates("0 0 15 * 0#3", utc(2024, 1, 1), 4) == [
        "2024-01-15",
        "2024-01-21",
        "2024-02-15",
        "2024-02-18",
    ]
    # Never both on one day, yet they match many days: no longer refused as "no date ever matches".
    assert dates("0 0 1 * 0#3", utc(2024, 1, 1), 4) == [
        "2024-01-21",
        "2024-02-01",
        "2024-02-18",
        "2024-03-01",
    ]
    hours = list(islice(fire_times(parse_cron("0 * 2 * 7#5"), ZoneInfo("UTC"), utc(2024, 1, 1)), 100))
    assert len(hours) == 100 and all(t.minute == 0 for t in hours)
    assert sorted({t.date().isoformat() for t in hours}) == [
        "2024-01-02",
        "2024-02-02",
        "2024-03-02",
        "2024-03-31",  # the fifth Sunday of March 2024
        "2024-04-02",
    ]
    # With a starred day of month the two are AND'ed: the second Friday (as before).
    assert dates("0 9 * * 5#2", utc(2024, 1, 1), 2) == ["2024-01-12", "2024-02-09"]
    assert dates("0 9 */2 * 5#2", utc(2024, 1, 1), 3) == ["2024-02-09", "2024-08-09", "2024-09-13"]


def test_last_day_and_nearest_weekday_follow_the_rule() -> None:
    assert dates("0 0 L * 5", utc(2024, 1, 25), 3) == ["2024-01-26", "2024-01-31", "2024-02-02"]
    assert dates("0 0 15W * 1", utc(2024, 2, 11), 3) == ["2024-02-12", "2024-02-15", "2024-02-19"]


@pytest.mark.parametrize("field", ["5/1", "7/2", "FRI/2", "1/2", "0/1", "1-5,6/1"])
def test_day_of_week_start_with_a_step_is_refused(field: str) -> None:
    """cronie refuses ``N/step``; croniter ends it at Saturday (5/1 = Fri, Sat), other crons at Sunday.
    One meaning per expression: refused, with the day lists of both readings to choose from."""
    with pytest.raises(ValueError, match="cron expression") as caught:
        parse_cron(f"0 0 * * {field}")
    message = str(caught.value)
    assert f"day-of-week field '{field}'" in message
    assert "step with no end" in message
    assert "\n" not in message


def test_start_step_refusal_offers_both_readings() -> None:
    with pytest.raises(ValueError) as caught:
        parse_cron("0 0 * * 5/1")
    assert str(caught.value).endswith("write the days: '5,6,7' (through Sunday) or '5,6' (through Saturday)")
    with pytest.raises(ValueError) as caught:
        parse_cron("0 0 * * 7/2")
    assert str(caught.value).endswith("write the days: '7' (through Sunday)")
    # Both suggestions mean what they say.
    assert dates("0 0 * * 5,6,7", utc(2024, 1, 1), 3) == ["2024-01-05", "2024-01-06", "2024-01-07"]
    assert dates("0 0 * * 7", utc(2024, 1, 1), 2) == ["2024-01-07", "2024-01-14"]


def test_start_with_a_step_stays_allowed_outside_the_day_of_week() -> None:
    """Elsewhere the field's end is not in doubt: 5/15 minutes is 5,20,35,50; 1/2 days is odd days."""
    assert [
        t.minute for t in fires("5/15 0 * * *", ZoneInfo("UTC"), utc(2024, 1, 1), utc(2024, 1, 1, 1))
    ] == [
        5,
        20,
        35,
        50,
    ]
    assert dates("0 0 1/10 * *", utc(2024, 1, 1), 4) == [
        "2024-01-11",
        "2024-01-21",
        "2024-01-31",
        "2024-02-01",
    ]


def test_croniter_alone_reads_the_day_fields_otherwise() -> None:
    """Why the rule is applied on top of croniter: croniter's own reading of the issue's examples."""
    for expression in ["0 0 */2 * 1", "0 0 */1 * 1", "0 0 15 * 0#3", "0 0 1 * 5"]:
        walker = croniter(expression, datetime(2024, 1, 1))
        alone = [walker.get_next(datetime).date().isoformat() for _ in range(6)]
        ours = dates(expression, utc(2024, 1, 1), 6)
        if expression == "0 0 1 * 5":  # both restricted, plain numbers: croniter's OR is cron's
            assert alone == ours
        else:
            assert alone != ours, expression
    assert croniter("0 0 * * 5/1", datetime(2024, 1, 6)).get_next(datetime) == datetime(
        2024, 1, 12
    )  # no Sunday


def test_spec_records_which_rule_applies() -> None:
    assert parse_cron("0 0 1 * MON").days_or
    assert parse_cron("0 0 15 * 0#3").days_or
    assert not parse_cron("0 0 */2 * 1").days_or
    assert not parse_cron("0 0 * * 1").days_or
    assert not parse_cron("@weekly").days_or
    assert len(parse_cron("0 0 1 * MON").walks) == 2
    assert len(parse_cron("0 0 31 2 MON").walks) == 1  # the 31st of February adds nothing


# Day fields for the property below: every form the rule distinguishes (a leading *, ?, a full range
# written out, lists, ranges, steps, names, Sunday as 0 and 7, wrap-around ranges, L, W, #).
DOM_ITEMS = st.one_of(
    st.integers(1, 31).map(str),
    st.tuples(st.integers(1, 30), st.integers(1, 30)).map(
        lambda p: f"{p[0]}-{p[0] + 1 + p[1] % (31 - p[0])}"
    ),
    st.tuples(st.integers(1, 29), st.integers(1, 9)).map(lambda p: f"{p[0]}-31/{p[1]}"),
    st.tuples(st.integers(1, 28), st.integers(2, 9)).map(lambda p: f"{p[0]}/{p[1]}"),
)
DAY_OF_MONTH = st.one_of(
    st.just("*"),
    st.just("?"),
    st.just("1-31"),
    st.integers(1, 10).map(lambda n: f"*/{n}"),
    st.integers(1, 31).map(lambda n: f"*,{n}"),
    st.lists(DOM_ITEMS, min_size=1, max_size=3).map(",".join),
    st.just("L"),
    st.integers(1, 28).map(lambda n: f"{n}W"),
)
DOW_ITEMS = st.one_of(
    st.integers(0, 7).map(str),
    st.sampled_from(["SUN", "mon", "Fri", "SAT"]),
    st.tuples(st.integers(0, 6), st.integers(1, 7)).map(lambda p: f"{p[0]}-{p[0] + 1 + p[1] % (7 - p[0])}"),
    st.tuples(st.integers(0, 5), st.integers(2, 4)).map(lambda p: f"{p[0]}-7/{p[1]}"),
    st.sampled_from(["MON-FRI", "FRI-SUN", "5-0", "6-1", "SAT-MON", "0-7", "1-7", "0-6"]),
)
DAY_OF_WEEK = st.one_of(
    st.just("*"),
    st.just("?"),
    st.integers(1, 7).map(lambda n: f"*/{n}"),
    st.integers(0, 7).map(lambda n: f"*,{n}"),
    st.lists(DOW_ITEMS, min_size=1, max_size=3).map(",".join),
    st.tuples(st.integers(0, 7), st.integers(1, 5)).map(lambda p: f"{p[0]}#{p[1]}"),
)
MONTHS = st.sampled_from(["*", "*", "*", "2", "1-6", "2,4,6,9,11", "*/3", "FEB,AUG", "4"])


@st.composite
def day_expressions(draw: st.DrawFn) -> str:
    minute, hour = draw(st.integers(0, 59)), draw(st.sampled_from(["0", "7", "23", "6,18"]))
    return f"{minute} {hour} {draw(DAY_OF_MONTH)} {draw(MONTHS)} {draw(DAY_OF_WEEK)}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    day_expressions(),
    st.dates(date(2020, 1, 1), date(2035, 12, 31)),
    st.sampled_from(["UTC", "Asia/Kolkata"]),
)
def test_day_fields_equal_the_cron_model(expression: str, start: date, zone: str) -> None:
    """Over 400 days (no DST here: the policy is tested above), fire times are exactly the wall times
    the independent cron(8) model names, day by day. An expression is refused only when the model finds
    no date at all in 28 years (the calendar's cycle)."""
    tz = ZoneInfo(zone)
    reference = model(expression)
    try:
        spec = parse_cron(expression)
    except ValueError as exc:
        assert "no date ever matches" in str(exc), str(exc)
        assert next(reference.walls(date(2000, 1, 1), date(2028, 12, 31)), None) is None, expression
        return
    last = start + timedelta(days=400)
    after = datetime.combine(start, datetime.min.time(), tz) - timedelta(seconds=1)
    until = datetime.combine(last, datetime.max.time().replace(microsecond=0), tz)
    got = [t.replace(tzinfo=None) for t in fire_times(spec, tz, after, until)]
    assert got == list(reference.walls(start, last)), expression


SCHEDULES_PAGE = Path(__file__).resolve().parents[2] / "docs" / "schedules.md"
ISSUE_EXAMPLES = {"0 0 */2 * 1", "0 0 */1 * 1", "0 0 15 * 0#3", "0 0 1 * 0#3", "0 * 2 * 7#5", "0 0 * * 5/1"}


def readme_day_rule_rows() -> list[tuple[str, str, str]]:
    """(cron, fires on, because) of the table under "Day of month and day of week" in the docs."""
    lines = SCHEDULES_PAGE.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Day of month and day of week")
    rows: list[tuple[str, str, str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            cron, fires_on, because = (cell.strip() for cell in line.strip("|").split("|"))
            rows.append((cron.strip("`"), fires_on, because))
    return rows


def test_readme_day_rule_examples_are_what_the_scheduler_does() -> None:
    rows = readme_day_rule_rows()
    assert ISSUE_EXAMPLES <= {cron for cron, _, _ in rows}, "the docs lost an example of the rule"
    start = utc(2024, 1, 1) - timedelta(seconds=1)  # "from 2024-01-01 00:00", inclusive
    for cron, fires_on, because in rows:
        if fires_on == "refused":
            with pytest.raises(ValueError) as caught:
                parse_cron(cron)
            for suggestion in re.findall(r"`([^`]+)`", because):  # the docs' advice is the error's
                assert f"'{suggestion}'" in str(caught.value), (cron, suggestion)
            continue
        listed = [day.strip() for day in fires_on.split(",")]
        seen: list[str] = []
        for t in fire_times(parse_cron(cron), ZoneInfo("UTC"), start):
            day = t.date().isoformat()
            if day not in seen:
                seen.append(day)
            if len(seen) == len(listed):
                break
        assert seen == listed, cron
