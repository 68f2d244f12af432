"""schedules.yaml loading (durably_sched.schedule.config) and duration strings (durably_sched._durations).

What users rely on: a valid file loads with the documented defaults; any mistake is reported as one line
naming the file, the line, the schedule and the field, so `durably-sched` can print it and exit.
"""

from __future__ import annotations

import os
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from durably_sched._durations import format_duration, parse_duration
from durably_sched.errors import ConfigError
from durably_sched.schedule.config import (
    ScheduleDefaults,
    ScheduleEntry,
    SchedulesConfig,
    load_schedules,
    parse_schedules,
)
from durably_sched.schedule.cron import parse_cron


class ImageInput(BaseModel):
    filename: str
    width: int = 800


class ReportInput(BaseModel):
    recipients: list[str]


JOBS: dict[str, type[BaseModel] | None] = {
    "process-image": ImageInput,
    "send-report": ReportInput,
    "cleanup": None,
}

FULL = """\
timezone: UTC
defaults:
  catchup: all
  catchup_window: 24h
  overlap: queue
schedules:
  nightly-report:
    cron: "0 2 * * *"
    job: process-image
    input: {filename: nightly.jpg}
    timezone: Europe/Berlin
    catchup: all
    catchup_window: 6h
    overlap: queue
    jitter: 30s
    enabled: true
    labels: {team: data}
"""


def parse(text: str, jobs: dict[str, type[BaseModel] | None] | None = JOBS) -> SchedulesConfig:
    return parse_schedules(textwrap.dedent(text), "schedules.yaml", jobs)


def error_of(text: str, jobs: dict[str, type[BaseModel] | None] | None = JOBS) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text, jobs)
    error = caught.value
    assert "\n" not in str(error) and len(str(error).splitlines()) == 1
    assert "pydantic" not in str(error) and "http" not in str(error)
    return error


# --- valid files --------------------------------------------------------------------------------------


def test_the_documented_example_loads() -> None:
    config = parse_schedules(FULL, "schedules.yaml", JOBS)
    assert config.path == "schedules.yaml"
    assert config.timezone == ZoneInfo("UTC")
    entry = config.schedules["nightly-report"]
    assert entry.name == "nightly-report"
    assert entry.cron == parse_cron("0 2 * * *")
    assert entry.cron.expression == "0 2 * * *"
    assert entry.job == "process-image"
    assert entry.input == {"filename": "nightly.jpg"}
    assert entry.timezone == ZoneInfo("Europe/Berlin")
    assert entry.catchup == "all"
    assert entry.catchup_window == timedelta(hours=6)
    assert entry.overlap == "queue"
    assert entry.jitter == timedelta(seconds=30)
    assert entry.enabled is True
    assert entry.labels == {"team": "data"}
    assert entry.line == 7


def test_built_in_defaults_when_nothing_is_set() -> None:
    config = parse(
        """
        schedules:
          tidy:
            cron: "*/5 * * * *"
            job: cleanup
        """
    )
    entry = config.schedules["tidy"]
    assert config.timezone == ZoneInfo("UTC")
    assert entry.timezone == ZoneInfo("UTC")
    assert (entry.catchup, entry.catchup_window, entry.overlap) == ("all", timedelta(hours=24), "queue")
    assert (entry.jitter, entry.enabled, entry.input, entry.labels) == (timedelta(0), True, {}, {})
    assert config.defaults == ScheduleDefaults()


def test_defaults_apply_unless_the_entry_sets_the_field() -> None:
    config = parse(
        """
        timezone: America/New_York
        defaults:
          catchup: latest
          catchup_window: 2h
          overlap: skip
          jitter: 1m
          enabled: false
        schedules:
          inherits:
            cron: "0 * * * *"
            job: cleanup
          overrides:
            cron: "0 * * * *"
            job: cleanup
            timezone: Asia/Tokyo
            catchup: none
            catchup_window: 1d
            overlap: allow
            jitter: 0
            enabled: true
        """
    )
    inherits, overrides = config.schedules["inherits"], config.schedules["overrides"]
    assert inherits.timezone == ZoneInfo("America/New_York")
    assert (inherits.catchup, inherits.catchup_window, inherits.overlap) == (
        "latest",
        timedelta(hours=2),
        "skip",
    )
    assert (inherits.jitter, inherits.enabled) == (timedelta(minutes=1), False)
    assert overrides.timezone == ZoneInfo("Asia/Tokyo")
    assert (overrides.catchup, overrides.catchup_window, overrides.overlap) == (
        "none",
        timedelta(days=1),
        "allow",
    )
    assert (overrides.jitter, overrides.enabled) == (timedelta(0), True)


def test_schedules_keep_file_order_and_lines() -> None:
    config = parse(
        """
        schedules:
          zeta: {cron: "0 1 * * *", job: cleanup}
          alpha: {cron: "0 2 * * *", job: cleanup}
          mid:
            cron: "0 3 * * *"
            job: cleanup
        """
    )
    assert list(config.schedules) == ["zeta", "alpha", "mid"]
    assert [e.line for e in config.schedules.values()] == [3, 4, 5]


@pytest.mark.parametrize("text", ["schedules: {}\n", "schedules:\n", "timezone: UTC\nschedules: {}\n"])
def test_an_empty_schedules_map_is_valid(text: str) -> None:
    assert parse(text).schedules == {}


def test_names_are_taken_as_written() -> None:
    config = parse(
        """
        schedules:
          on: {cron: "0 1 * * *", job: cleanup}
          123: {cron: "0 1 * * *", job: cleanup}
          v1.2_x-y: {cron: "0 1 * * *", job: cleanup}
        """
    )
    assert list(config.schedules) == ["on", "123", "v1.2_x-y"]  # not True, not 123


def test_yaml_anchors_and_merge_keys_work() -> None:
    config = parse(
        """
        schedules:
          base: &base
            cron: "0 1 * * *"
            job: cleanup
            labels: {team: ops}
          copy:
            <<: *base
            cron: "0 2 * * *"
        """
    )
    assert config.schedules["copy"].cron.expression == "0 2 * * *"
    assert config.schedules["copy"].labels == {"team": "ops"}


def test_jobs_and_inputs_are_not_checked_without_job_inputs() -> None:
    config = parse(
        """
        schedules:
          a: {cron: "0 1 * * *", job: not-registered, input: {anything: [1, 2]}}
        """,
        jobs=None,
    )
    assert config.schedules["a"].input == {"anything": [1, 2]}


def test_job_without_an_input_model_takes_any_mapping() -> None:
    config = parse(
        """
        schedules:
          a: {cron: "0 1 * * *", job: cleanup, input: {older_than: 7d, dry_run: true}}
        """
    )
    assert config.schedules["a"].input == {"older_than": "7d", "dry_run": True}


def test_six_field_cron_and_numbers_as_seconds() -> None:
    entry = parse(
        """
        schedules:
          a: {cron: "30 0 * * * *", job: cleanup, jitter: 90, catchup_window: 1.5}
        """
    ).schedules["a"]
    assert entry.cron.has_seconds
    assert entry.jitter == timedelta(seconds=90)
    assert entry.catchup_window == timedelta(seconds=1.5)


def test_models_serialise_to_the_file_form() -> None:
    entry = parse_schedules(FULL, "schedules.yaml", JOBS).schedules["nightly-report"]
    dumped = entry.model_dump(mode="json")
    assert dumped["cron"] == "0 2 * * *"
    assert dumped["timezone"] == "Europe/Berlin"
    assert dumped["catchup_window"] == "6h"
    assert dumped["jitter"] == "30s"


def test_models_refuse_unknown_fields_and_mismatched_names() -> None:
    with pytest.raises(ValueError):
        ScheduleEntry.model_validate({"name": "a", "cron": "* * * * *", "job": "x", "colour": "red"})
    with pytest.raises(ValueError):
        ScheduleDefaults.model_validate({"timezone": "UTC"})
    entry = ScheduleEntry(name="a", cron=parse_cron("* * * * *"), job="x")
    with pytest.raises(ValueError, match="does not match"):
        SchedulesConfig(schedules={"b": entry})


def test_load_schedules_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(FULL, encoding="utf-8")
    config = load_schedules(path, JOBS)
    assert config.path == str(path)
    assert list(config.schedules) == ["nightly-report"]
    assert load_schedules(str(path)).schedules["nightly-report"].job == "process-image"


def test_load_schedules_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + FULL.encode())
    assert list(load_schedules(path).schedules) == ["nightly-report"]


# --- errors: where and what ---------------------------------------------------------------------------


def test_yaml_syntax_error_reports_the_yaml_mark() -> None:
    error = error_of(
        """\
        schedules:
          a:
            cron: "0 1 * * *"
            job: cleanup: oops
        """
    )
    assert error.line == 4
    assert str(error).startswith("schedules.yaml:4: invalid YAML: mapping values are not allowed here")


def test_unclosed_quote_is_a_yaml_error() -> None:
    error = error_of('schedules:\n  a:\n    cron: "0 1 * * *\n    job: cleanup\n')
    assert error.line is not None and error.line >= 3
    assert "invalid YAML" in str(error)


def test_tab_indentation_is_a_yaml_error() -> None:
    error = error_of("schedules:\n\ta: {}\n")
    assert error.line == 2
    assert "'\\t'" in str(error)


def test_duplicate_schedule_name_reports_the_second_one() -> None:
    error = error_of(
        """\
        schedules:
          nightly:
            cron: "0 1 * * *"
            job: cleanup
          weekly:
            cron: "0 1 * * 0"
            job: cleanup
          nightly:
            cron: "0 3 * * *"
            job: cleanup
        """
    )
    assert error.line == 8
    assert str(error) == (
        "schedules.yaml:8: schedule 'nightly': duplicate schedule name (first defined on line 2)"
    )


def test_duplicate_name_spelled_as_number_and_string() -> None:
    error = error_of(
        """\
        schedules:
          123: {cron: "0 1 * * *", job: cleanup}
          "123": {cron: "0 1 * * *", job: cleanup}
        """
    )
    assert error.line == 3
    assert "schedule '123': duplicate schedule name (first defined on line 2)" in str(error)


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        (
            "timezone: UTC\ntimezone: Europe/Berlin\nschedules: {}\n",
            2,
            "timezone: duplicate key (first on line 1)",
        ),
        (
            "defaults:\n  jitter: 1s\n  jitter: 2s\nschedules: {}\n",
            3,
            "defaults.jitter: duplicate key (first on line 2)",
        ),
        (
            "schedules:\n  a:\n    cron: '0 1 * * *'\n    job: cleanup\n    cron: '0 2 * * *'\n",
            5,
            "schedule 'a': cron: duplicate key (first on line 3)",
        ),
        (
            "schedules:\n  a:\n    cron: '0 1 * * *'\n    job: cleanup\n"
            "    labels:\n      team: a\n      team: b\n",
            7,
            "schedule 'a': labels.team: duplicate key (first on line 6)",
        ),
        (
            "schedules:\n  a:\n    cron: '0 1 * * *'\n    job: cleanup\n    input: {x: {y: 1, y: 2}}\n",
            5,
            "schedule 'a': input.x.y: duplicate key (first on line 5)",
        ),
    ],
)
def test_duplicate_keys_are_errors_at_every_level(text: str, line: int, expected: str) -> None:
    error = error_of(text)
    assert error.line == line
    assert str(error) == f"schedules.yaml:{line}: {expected}"


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        (
            "timezone: UTC\nschedule: {}\n",
            2,
            "schedule: unknown key (allowed: defaults, schedules, timezone)",
        ),
        (
            "defaults:\n  catchup: all\n  catch_up_window: 1h\nschedules: {}\n",
            3,
            "defaults.catch_up_window: unknown key "
            "(allowed: catchup, catchup_window, enabled, jitter, overlap, pause_after_failures, retry, "
            "timeout)",
        ),
        (
            "defaults:\n  timezone: UTC\nschedules: {}\n",
            2,
            "defaults.timezone: unknown key (set the default time zone with the top-level 'timezone' key)",
        ),
        (
            "schedules:\n  a:\n    cron: '0 1 * * *'\n    job: cleanup\n    retries: 3\n",
            5,
            "schedule 'a': retries: unknown key "
            "(retries are set as 'retry: {max_attempts: 3, backoff: 30s}')",
        ),
        (
            "schedules:\n  a:\n    cron: '0 1 * * *'\n    job: cleanup\n    tries: 3\n",
            5,
            "schedule 'a': tries: unknown key (allowed: catchup, catchup_window, cron, enabled, input, "
            "jitter, job, labels, overlap, pause_after_failures, retry, timeout, timezone)",
        ),
        (
            "schedules:\n  a:\n    name: b\n    cron: '0 1 * * *'\n    job: cleanup\n",
            3,
            "schedule 'a': name: unknown key (the schedule's name is its key under 'schedules')",
        ),
    ],
)
def test_unknown_keys_are_errors(text: str, line: int, expected: str) -> None:
    error = error_of(text)
    assert error.line == line
    assert str(error) == f"schedules.yaml:{line}: {expected}"


@pytest.mark.parametrize(
    ("cron", "detail"),
    [
        ("61 * * * *", "minute field '61' is not valid (allowed: 0-59)"),
        ("* * * *", "4 fields"),
        ("0 0 1 1 * 2030 0", "7 fields"),
        ("0 0 30 2 *", "no date ever matches"),
        ("0 0 * * 5/1", "day-of-week field '5/1': '5/1' is a step with no end"),
    ],
)
def test_bad_cron_is_reported_on_its_line(cron: str, detail: str) -> None:
    error = error_of(
        f"""\
        schedules:
          fine:
            cron: "0 1 * * *"
            job: cleanup
          broken:
            job: cleanup
            cron: "{cron}"
        """
    )
    assert error.line == 7
    assert str(error).startswith(
        f"schedules.yaml:7: schedule 'broken': cron: invalid cron expression '{cron}': "
    )
    assert detail in str(error)


def test_cron_must_be_a_string() -> None:
    error = error_of("schedules:\n  a:\n    job: cleanup\n    cron: 5\n")
    assert error.line == 4
    assert "schedule 'a': cron: expected a cron expression in quotes" in str(error)


def test_missing_cron_points_at_the_schedule() -> None:
    error = error_of("schedules:\n  a:\n    job: cleanup\n")
    assert error.line == 2
    assert str(error) == "schedules.yaml:2: schedule 'a': cron: is required"


def test_unknown_timezone_in_an_entry() -> None:
    error = error_of(
        "schedules:\n  a:\n    cron: '0 1 * * *'\n    job: cleanup\n    timezone: Europe/Berln\n"
    )
    assert error.line == 5
    assert str(error) == (
        "schedules.yaml:5: schedule 'a': timezone: unknown time zone 'Europe/Berln' "
        "(use an IANA name such as Europe/Berlin or UTC)"
    )


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe", "../etc/passwd", "/etc/localtime", "''", "5"])
def test_unknown_top_level_timezone(zone: str) -> None:
    error = error_of(f"# schedules\ntimezone: {zone}\nschedules: {{}}\n")
    assert error.line == 2
    assert str(error).startswith("schedules.yaml:2: timezone: ")


def test_unknown_job_lists_the_known_ones_sorted() -> None:
    error = error_of("schedules:\n  a:\n    cron: '0 1 * * *'\n    job: proces-image\n")
    assert error.line == 4
    assert str(error) == (
        "schedules.yaml:4: schedule 'a': job: unknown job 'proces-image' "
        "(known jobs: cleanup, process-image, send-report)"
    )


def test_unknown_job_when_none_are_registered() -> None:
    error = error_of("schedules:\n  a:\n    cron: '0 1 * * *'\n    job: x\n", jobs={})
    assert "unknown job 'x' (known jobs: none are registered)" in str(error)


def test_input_failing_the_job_model_names_the_field_and_its_line() -> None:
    error = error_of(
        """\
        schedules:
          a:
            cron: "0 1 * * *"
            job: process-image
            input:
              filename: a.jpg
              width: wide
        """
    )
    assert error.line == 7
    assert str(error) == (
        "schedules.yaml:7: schedule 'a': input.width: Input should be a valid integer, "
        "unable to parse string as an integer (got 'wide')"
    )


def test_missing_input_field_points_at_input() -> None:
    error = error_of(
        """\
        schedules:
          a:
            cron: "0 1 * * *"
            job: process-image
            input:
              width: 5
        """
    )
    assert error.line == 5
    assert str(error) == "schedules.yaml:5: schedule 'a': input.filename: is required"


def test_missing_input_altogether_points_at_the_schedule() -> None:
    error = error_of("schedules:\n  a:\n    cron: '0 1 * * *'\n    job: process-image\n")
    assert error.line == 2
    assert "schedule 'a': input.filename: is required" in str(error)


def test_input_list_item_is_located() -> None:
    error = error_of(
        """\
        schedules:
          a:
            cron: "0 1 * * *"
            job: send-report
            input:
              recipients:
                - ops@example.com
                - [not, a, string]
        """
    )
    assert error.line == 8
    assert "schedule 'a': input.recipients[1]: Input should be a valid string" in str(error)


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("jitter", "5x", "invalid duration '5x': use e.g. 30s, 15m, 6h, 1d"),
        ("catchup_window", "-1h", "must not be negative"),
        ("catchup_window", "1h 30m", "invalid duration"),
        ("jitter", "true", "invalid duration"),
    ],
)
def test_bad_duration(field: str, value: str, detail: str) -> None:
    error = error_of(f"schedules:\n  a:\n    cron: '0 1 * * *'\n    job: cleanup\n    {field}: {value}\n")
    assert error.line == 5
    assert str(error).startswith(f"schedules.yaml:5: schedule 'a': {field}: ")
    assert detail in str(error)


def test_bad_duration_in_defaults() -> None:
    error = error_of("defaults:\n  catchup_window: soon\nschedules: {}\n")
    assert error.line == 2
    assert str(error).startswith("schedules.yaml:2: defaults.catchup_window: invalid duration 'soon'")


@pytest.mark.parametrize("name", ["'bad name'", "'colon:name'", "'ünïcode'", "''", "'a/b'"])
def test_bad_name_characters(name: str) -> None:
    error = error_of(
        f"schedules:\n  ok: {{cron: '0 1 * * *', job: cleanup}}\n"
        f"  {name}:\n    cron: '0 1 * * *'\n    job: cleanup\n"
    )
    assert error.line == 3
    assert ": name: use only letters, digits, '_', '.' and '-'" in str(error)


@pytest.mark.parametrize(
    ("line_text", "detail"),
    [
        (
            "enabled: maybe",
            "enabled: Input should be a valid boolean, unable to interpret input (got 'maybe')",
        ),
        ("catchup: sometimes", "catchup: Input should be 'all', 'latest' or 'none' (got 'sometimes')"),
        ("overlap: 3", "overlap: Input should be 'queue', 'skip' or 'allow' (got 3)"),
        ("labels: {team: 1}", "labels.team: Input should be a valid string (got 1)"),
        ("labels: [a, b]", "labels: Input should be a valid dictionary"),
        ("input: [1, 2]", "input: Input should be a valid dictionary"),
    ],
)
def test_wrong_types(line_text: str, detail: str) -> None:
    error = error_of(f"schedules:\n  a:\n    cron: '0 1 * * *'\n    job: cleanup\n    {line_text}\n")
    assert error.line == 5
    assert str(error) == f"schedules.yaml:5: schedule 'a': {detail}"


def test_job_must_be_a_string() -> None:
    error = error_of("schedules:\n  a:\n    cron: '0 1 * * *'\n    job: [a]\n")
    assert error.line == 4
    assert str(error) == "schedules.yaml:4: schedule 'a': job: Input should be a valid string"


def test_the_first_problem_in_the_file_is_reported() -> None:
    error = error_of(
        """\
        schedules:
          a:
            overlap: never
            cron: "0 1 * * *"
            job: cleanup
            enabled: maybe
        """
    )
    assert error.line == 3
    assert "overlap" in str(error)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    error = error_of(text)
    assert error.line is None
    assert str(error) == "schedules.yaml: the file is empty; it needs a 'schedules' mapping"


def test_missing_schedules_key() -> None:
    error = error_of("timezone: UTC\n")
    assert error.line == 1
    assert "missing 'schedules'" in str(error)


@pytest.mark.parametrize(
    ("text", "line", "detail"),
    [
        ("- a\n- b\n", 1, "expected a mapping with a 'schedules' key at the top level"),
        ("just text\n", 1, "expected a mapping with a 'schedules' key at the top level"),
        ("schedules: [a, b]\n", 1, "schedules: expected a mapping of schedule names to entries"),
        ("defaults: 3\nschedules: {}\n", 1, "defaults: expected a mapping of default values"),
        (
            "schedules:\n  a: every day\n",
            2,
            "schedule 'a': expected a mapping with at least 'cron' and 'job'",
        ),
        ("schedules:\n  a:\n", 2, "schedule 'a': expected a mapping with at least 'cron' and 'job'"),
    ],
)
def test_wrong_shapes(text: str, line: int, detail: str) -> None:
    error = error_of(text)
    assert error.line == line
    assert str(error) == f"schedules.yaml:{line}: {detail}"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_schedules(path)
    assert caught.value.line is None
    assert str(caught.value) == f"{path}: cannot read the schedules file: No such file or directory"


def test_a_directory_is_not_a_schedules_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_schedules(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path}: cannot read the schedules file: ")
    assert caught.value.line is None


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(FULL)
    path.chmod(0)
    try:
        with pytest.raises(ConfigError) as caught:
            load_schedules(path)
    finally:
        path.chmod(0o600)
    assert str(caught.value) == f"{path}: cannot read the schedules file: Permission denied"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_bytes(b"schedules:\n  caf\xe9: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_schedules(path)
    assert caught.value.line == 2
    assert "not UTF-8" in str(caught.value)


def test_errors_from_a_file_carry_its_path(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text("schedules:\n  a:\n    cron: '61 * * * *'\n    job: cleanup\n")
    with pytest.raises(ConfigError) as caught:
        load_schedules(path, JOBS)
    assert str(caught.value).startswith(f"{path}:3: schedule 'a': cron: ")
    assert caught.value.path == str(path)


# --- errors are always one line -----------------------------------------------------------------------

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 100) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
entry_fields = st.dictionaries(
    st.sampled_from(
        [
            "cron",
            "job",
            "input",
            "timezone",
            "catchup",
            "catchup_window",
            "overlap",
            "jitter",
            "enabled",
            "labels",
            "x\ny",
        ]
    ),
    yaml_values
    | st.sampled_from(["0 1 * * *", "61 * * * *", "cleanup", "process-image", "6h", "Europe/Berlin"]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(max_size=10), entry_fields | yaml_values, max_size=3),
    st.dictionaries(st.sampled_from(["timezone", "defaults", "other"]), yaml_values, max_size=2),
)
def test_any_document_loads_or_fails_with_one_line(schedules: dict[str, Any], top: dict[str, Any]) -> None:
    text = yaml.safe_dump({**top, "schedules": schedules}, allow_unicode=True)
    try:
        parse_schedules(text, "s.yaml", JOBS)
    except ConfigError as error:
        assert len(str(error).splitlines()) == 1
        assert str(error).startswith("s.yaml")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_loads_or_fails_with_one_line(text: str) -> None:
    try:
        parse_schedules(text, "s.yaml")
    except ConfigError as error:
        assert len(str(error).splitlines()) == 1


# --- durations ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("90m", timedelta(minutes=90)),
        ("6h", timedelta(hours=6)),
        ("24h", timedelta(hours=24)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("90", timedelta(seconds=90)),
        ("1.5s", timedelta(seconds=1.5)),
        (" 6H ", timedelta(hours=6)),
        (0, timedelta(0)),
        (45, timedelta(seconds=45)),
        (0.25, timedelta(seconds=0.25)),
    ],
)
def test_parse_duration(text: str | int | float, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["5x", "", "h", "1h 30m", "30m1h", "1.5h", "-5s", "1e3", "nan", "1d1d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=f"invalid duration '{text}'"):
        parse_duration(text)


def test_parse_duration_message_shows_examples() -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration("5x")
    assert str(caught.value) == "invalid duration '5x': use e.g. 30s, 15m, 6h, 1d"


@pytest.mark.parametrize("value", [-1, -0.5, float("inf"), float("nan"), True, 10**20])
def test_parse_duration_rejects_numbers(value: float) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=30), "30s"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(days=1), "1d"),
        (timedelta(days=14), "2w"),
        (timedelta(days=10, seconds=1), "1w3d1s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(microseconds=1), "0.000001s"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10_000)))
def test_format_duration_round_trips(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value
