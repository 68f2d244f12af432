"""Human descriptions of crons (durably_sched.schedule.describe), as `schedules list` and the dashboard
show them.

What users rely on: the description says what the schedule does, in the project's reading of the
expression (seconds first in six fields, the cron(8) day-field rule), and it is always there: an
expression the loader accepts never makes `schedules list` fail.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings

from durably_sched.schedule import describe
from durably_sched.schedule.cron import parse_cron
from durably_sched.schedule.describe import describe_cron

from .cron_model import model
from .test_cron import DAY_EXPRESSIONS, EXTRA_EXPRESSIONS, PLAIN_EXPRESSIONS, day_expressions


@pytest.mark.parametrize(
    ("expression", "description"),
    [
        ("0 2 * * 1-5", "At 02:00, Monday through Friday"),
        ("0 2 * * *", "At 02:00"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("@weekly", "At 00:00, only on Sunday"),
        ("0 12 * JAN-MAR,OCT-DEC *", "At 12:00, only in January through March and October through December"),
        ("0 3 L * *", "At 03:00, on the last day of the month"),
        ("0 9 * * 5#2", "At 09:00, on the second Friday of the month"),
        ("0 0 * * 5-7", "At 00:00, Friday through Sunday"),
        # Seconds first, as durably-sched reads six fields.
        ("15 30 2 * * *", "At 02:30:15"),
        ("*/10 * * * * *", "Every 10 seconds"),
    ],
)
def test_common_expressions(expression: str, description: str) -> None:
    assert describe_cron(parse_cron(expression)) == description


@pytest.mark.parametrize(
    ("expression", "description"),
    [
        # Both restricted, neither starting with *: either day fires, and the text says "or".
        ("0 0 1 * MON", "At 00:00, on day 1 of the month, or on Monday"),
        ("0 0 15 * 0#3", "At 00:00, on day 15 of the month, or on the third Sunday of the month"),
        ("0 * 2 * 7#5", "Every hour, on day 2 of the month, or on the fifth Sunday of the month"),
        ("0 0 1,15 * 1-5", "At 00:00, on day 1 and 15 of the month, or Monday through Friday"),
        ("0 0 L * 5", "At 00:00, on the last day of the month, or on Friday"),
        # A leading *: both must hold, and the text says "and only" (cron-descriptor alone: "or").
        ("0 0 */2 * 1", "At 00:00, every 2 days, and only on Monday"),
        ("0 0 */2 * 1-5", "At 00:00, every 2 days, and only Monday through Friday"),
        (
            "0 0 1 * */2",
            "At 00:00, on day 1 of the month, and only on Sunday, Tuesday, Thursday, and Saturday",
        ),
        # A field naming every day is left out when it does not change the days.
        ("0 0 */1 * 1", "At 00:00, only on Monday"),
        ("0 0 *,15 * 1", "At 00:00, only on Monday"),
        ("0 0 1-31 * 1", "At 00:00"),  # 1-31 OR Monday: every day
        ("0 0 31 2 1", "At 00:00, only on Monday, only in February"),  # 31 February never comes
    ],
)
def test_day_fields_are_joined_by_the_cron_rule(expression: str, description: str) -> None:
    assert describe_cron(parse_cron(expression)) == description


def test_weekday_steps_and_lists_are_the_days_croniter_reads() -> None:
    # cron-descriptor alone calls 1-7/2 "every 2 days of the week, Monday through Sunday", 1-5/7
    # "every 7 weeks, Monday through Friday" and 0,7 "Sunday and Sunday"; the days fired are these.
    def text(expression: str) -> str:
        return describe_cron(parse_cron(expression))

    assert text("0 0 * * 1-7/2") == "At 00:00, only on Sunday, Monday, Wednesday, and Friday"
    assert text("0 0 * * */2") == "At 00:00, only on Sunday, Tuesday, Thursday, and Saturday"
    assert text("0 0 * * 1-5/7") == "At 00:00, only on Monday"
    assert text("0 0 * * 0,7") == "At 00:00, only on Sunday"


def test_falls_back_to_the_expression_when_cron_descriptor_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def __init__(self, *args: object) -> None:
            raise ValueError("cannot describe")

    monkeypatch.setattr(describe, "ExpressionDescriptor", Broken)
    spec = parse_cron("0 4 * * 2")  # not described (and cached) by any other test
    assert describe_cron(spec) == "0 4 * * 2"


def every_day(test: object) -> bool:
    assert callable(test)
    day = date(2024, 1, 1)
    return all(test(day + timedelta(days=n)) for n in range(366))


@pytest.mark.parametrize("expression", PLAIN_EXPRESSIONS + EXTRA_EXPRESSIONS + DAY_EXPRESSIONS)
def test_every_test_expression_has_a_description(expression: str) -> None:
    text = describe_cron(parse_cron(expression))
    assert text and text != expression and "\n" not in text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(day_expressions())
def test_descriptions_never_fail_and_name_the_day_rule(expression: str) -> None:
    """Whatever the loader accepts is described (never an exception); the words "or" and "and only"
    between the day fields appear exactly when the fields are OR'ed or AND'ed and both limit the days."""
    try:
        spec = parse_cron(expression)
    except ValueError:
        return
    text = describe_cron(spec)
    assert text and "\n" not in text
    reference = model(expression)
    both_limit = not every_day(reference.day_of_month) and not every_day(reference.day_of_week)
    if spec.days_or:
        assert ", and only " not in text, (expression, text)
        if both_limit and len(spec.walks) == 2:
            assert ", or " in text, (expression, text)
    else:
        assert ", or " not in text, (expression, text)
        if both_limit:
            assert ", and only " in text, (expression, text)
