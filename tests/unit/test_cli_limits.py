"""``--limit NAME=SIZE`` and the limits as the CLI meets them, through click's CliRunner.

What users rely on: a bad ``--limit`` (or ``DURABLY_LIMITS``) is one line naming the flag, exit 2,
before anything is opened; ``serve``, ``serve --once``, ``work`` and ``trigger`` use the limits
given; ``trigger`` refuses an input, a label or a key past its limit, or text that is not valid
Unicode, in one line naming the flag (exit 2) before the database is opened; a slot time out of
range is one line too; and ``--json`` output carries every field whole (limits are on what is
stored, not on what the CLI prints).
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest

from durably_sched import Limits
from durably_sched.cli._base import CliError
from tests.unit import test_cli
from tests.unit.test_cli import Project, error_line

project = test_cli.project
migrated = test_cli.migrated
_logging_restored = test_cli._logging_restored

KIB, MIB = 1024, 1024 * 1024
COMMANDS = [("serve",), ("serve", "--once"), ("work", "--until-idle"), ("trigger", "plain")]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("inptu=1MiB", "'inptu=1MiB': unknown limit 'inptu' (limits: request_body, login_body, input, "),
        ("input=lots", "'input=lots': invalid size 'lots': use e.g. 4096, 64KiB, 1MiB"),
        ("input", "'input': expected NAME=SIZE, e.g. input=1MiB"),
        ("labels=1KiB", "'labels=1KiB': labels is a count of labels, e.g. labels=128"),
        ("step_value=0", "'step_value=0': invalid size '0': must be positive"),
    ],
)
def test_a_bad_limit_is_one_line_naming_the_flag_before_anything_is_opened(
    project: Project, command: tuple[str, ...], value: str, expected: str
) -> None:
    result = project.run(*command, "--limit", value)
    assert result.exit_code == 2
    line = error_line(result)
    assert line.startswith("error: Invalid value for '--limit': ") and expected in line
    assert not project.db.exists()


def test_a_bad_limit_from_the_environment_names_the_flag(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLY_LIMITS", "input=1MiB key=big")
    result = project.run("trigger", "plain")
    assert result.exit_code == 2
    assert "'--limit': 'key=big': invalid size 'big'" in error_line(result)


# -- serve, serve --once, work: the limits reach the Durably they build -------------------------------


@pytest.mark.parametrize("command", [("serve",), ("serve", "--once"), ("work", "--until-idle")])
def test_serve_and_work_build_their_durably_with_the_limits_given(
    project: Project, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    given: list[Any] = []

    def create_durably(*args: Any, **options: Any) -> None:
        given.append(options["limits"])
        raise CliError("stopped here by the test")

    # The one place the commands that run jobs make their Durably.
    monkeypatch.setattr(
        importlib.import_module("durably_sched.cli._runner"), "create_durably", create_durably
    )
    monkeypatch.setenv("DURABLY_LIMITS", "step_value=4MiB labels=10")
    result = project.run(*command, "--limit", "input=1MiB", "--limit", "log-line=16KiB")
    assert "stopped here by the test" in error_line(result)
    # The command line replaces the environment's list, as for any repeatable click option.
    assert given == [Limits(input=MIB, log_line=16 * KIB)]
    given.clear()
    monkeypatch.delenv("DURABLY_LIMITS")
    project.run(*command)
    assert given == [Limits()]


def test_serve_refuses_a_schedule_past_a_limit_before_it_opens_the_database(project: Project) -> None:
    result = project.run("serve", "--limit", "input=16")
    assert result.exit_code == 2
    assert error_line(result) == (
        "error: schedules.yaml: schedule 'images': input: 29 bytes is over the limit of 16 bytes "
        "(limits.input)"
    )
    assert not project.db.exists()


def test_work_fails_a_step_over_its_step_value_limit(migrated: Project) -> None:
    made = migrated.json("trigger", "echo-image", "--input", json.dumps({"filename": "x" * 2000}), "--json")
    assert migrated.run("work", "--until-idle", "--limit", "step_value=1KiB").exit_code == 1  # a run failed
    shown = migrated.json("runs", "show", made["id"], "--json")
    assert (shown["status"], shown["failed_step_name"]) == ("failed", "one")
    assert shown["error"].startswith(
        "StepValueTooLargeError: step 'one' returned 2.0 KiB of JSON, over the limit of 1 KiB "
        "(limits.step_value)"
    )


# -- trigger ---------------------------------------------------------------------------------------------

BIG = json.dumps({"blob": "x" * (300 * KIB - len('{"blob": ""}'))}, separators=(",", ":"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["trigger", "plain", "--input", BIG],
            "error: --input: input: 300.0 KiB is over the limit of 256 KiB (limits.input) "
            "(change it with --limit input=SIZE)",
        ),
        (
            ["trigger", "plain", "--idempotency-key", "k" * 600],
            "error: --idempotency-key: idempotency_key: 600 bytes is over the limit of 512 bytes "
            "(limits.key) (change it with --limit key=SIZE)",
        ),
        (
            ["trigger", "plain", "--concurrency-key", "é" * 300],  # bytes, not characters
            "error: --concurrency-key: concurrency_key: 600 bytes is over the limit of 512 bytes",
        ),
        (
            ["trigger", "plain", "--label", "team=" + "x" * 1100],
            "error: --label: labels['team']: 1,100 bytes is over the limit of 1,024 bytes (limits.label)",
        ),
        (
            ["trigger", "plain", *[f"--label=k{i}=v" for i in range(65)]],
            "error: --label: labels: 65 labels are over the limit of 64 (limits.labels)",
        ),
        (
            ["trigger", "echo-image", "--input", '{"filename": "\\ud800"}'],
            "error: --input: input['filename']: not valid Unicode (a lone surrogate such as \\ud800 has",
        ),
        (["trigger", "plain", "--label", "team=\udcff"], "error: --label: labels['team']: not valid Unicode"),
        (["trigger", "plain", "--idempotency-key", "\udcff"], "error: --idempotency-key: idempotency_key:"),
        (
            ["trigger", "--schedule", "hourly", "--at", "9999-12-31T23:59:59-14:00"],
            "error: --at 9999-12-31T23:59:59-14:00 is out of the supported range of times "
            "(years 2 to 9998, UTC)",
        ),
    ],
    ids=["input", "idempotency-key", "concurrency-key", "label", "labels", "unicode-input", "unicode-label",
         "unicode-key", "at"],
)  # fmt: skip
def test_trigger_past_a_limit_or_with_bad_text_exits_2_before_the_database(
    project: Project, args: list[str], expected: str
) -> None:
    result = project.run(*args)
    assert result.exit_code == 2, result.output
    assert error_line(result).startswith(expected)
    assert not project.db.exists()


def test_trigger_input_file_over_the_limit_names_that_flag(project: Project) -> None:
    project.write("big.json", BIG)
    result = project.run("trigger", "plain", "--input-file", "big.json")
    assert result.exit_code == 2
    assert error_line(result).startswith("error: --input-file: input: 300.0 KiB is over the limit")


def test_trigger_with_a_raised_limit_stores_the_input(
    migrated: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = migrated.json("trigger", "plain", "--input", BIG, "--limit", "input=1MiB", "--json")
    assert made["status"] == "pending"
    monkeypatch.setenv("DURABLY_LIMITS", "input=512KiB")
    again = migrated.json("trigger", "plain", "--input", BIG, "--json")
    assert again["status"] == "pending"
    assert [r["input"] for r in migrated.json("runs", "list", "--json")] == [json.loads(BIG)] * 2


def test_json_output_keeps_every_field_whole(migrated: Project) -> None:
    """Lists and details on the command line carry whole inputs, outputs, logs and steps (the
    HTTP lists may shorten them; the CLI's --json is for scripts that want everything)."""
    payload = {"blob": "y" * 200 * KIB}
    done = json.loads(
        migrated.ok("trigger", "plain", "--input", json.dumps(payload), "--here", "--json").stdout
    )
    assert done["status"] == "completed" and done["output"] == {"got": payload}
    [listed] = migrated.json("runs", "list", "--json")
    assert (listed["input"], listed["output"]) == (payload, {"got": payload})
    shown = migrated.json("runs", "show", done["id"], "--json")
    assert (shown["input"], shown["output"]) == (payload, {"got": payload})
    long_name = "n" * 100 * KIB
    image = migrated.json(
        "trigger", "echo-image", "--input", json.dumps({"filename": long_name, "size": 2}), "--here", "--json"
    )
    steps = migrated.json("runs", "show", image["id"], "--json")["steps"]
    assert [s["output"] for s in steps] == [long_name.upper(), 4]
