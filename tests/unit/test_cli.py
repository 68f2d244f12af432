"""The `durably-sched` CLI through click's CliRunner: output shapes, exit codes, one-line errors.

What users rely on: every error is one line on stderr with a documented exit code and no
traceback; a command that fails validation writes nothing (no database file appears); --json
prints one JSON document and nothing else; schedule commands use the scheduler's own keys, so
slot triggers and backfills never duplicate a fire time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from durably_sched.cli import main
from durably_sched.cli._base import HttpAddress, HttpAddressType
from durably_sched.cli._loader import load_jobs, registration_key
from durably_sched.store._common import SCHEMA_VERSION
from tests.filesystems import read_only_tree

JOBS_CORE = """
from pydantic import BaseModel
from durably_sched import Step, define_job


class ImageIn(BaseModel):
    filename: str
    size: int = 1


async def echo(step: Step, payload: ImageIn) -> dict:
    name = await step.run("one", lambda: payload.filename.upper())
    step.log.info("hello", size=payload.size)
    await step.progress(1, 2, "half")
    await step.run("two", lambda: payload.size * 2)
    await step.progress(2, 2, "done")
    return {"echo": name}


def explode() -> None:
    raise ValueError("kaboom")


async def boom(step: Step, payload: dict) -> dict:
    await step.run("explode", explode)
    return {}


async def plain(step: Step, payload: dict) -> dict:
    return {"got": payload}


echo_job = define_job(name="echo-image", input=ImageIn, run=echo)
boom_job = define_job(name="boom", run=boom)
"""

JOBS_EXTRA = """
from durably_sched import define_job
from .core import plain, echo_job  # the same job reachable twice counts once

plain_job = define_job(name="plain", run=plain)
"""

SCHEDULES = """\
timezone: UTC
schedules:
  hourly:
    cron: "0 * * * *"
    job: plain
  images:
    cron: "*/5 * * * *"
    job: echo-image
    input: {filename: a.png}
"""


@dataclass
class Project:
    root: Path
    db: Path
    jobs: str
    runner: CliRunner

    def run(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(main, list(args), input=input, catch_exceptions=False)

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args).stdout)

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """`serve` configures process-wide logging; other tests must not inherit it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """A directory with a jobs package (a fresh module name per test) and a schedules file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = f"clijobs_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "core.py").write_text(JOBS_CORE)
    (tmp_path / name / "extra.py").write_text(JOBS_EXTRA)
    (tmp_path / "schedules.yaml").write_text(SCHEDULES)
    db = tmp_path / "state" / "cli.db"
    db.parent.mkdir()
    for key in [k for k in os.environ if k.startswith("DURABLY_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("DURABLY_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("DURABLY_JOBS", name)
    yield Project(tmp_path, db, name, CliRunner())
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


@pytest.fixture
def migrated(project: Project) -> Project:
    project.ok("migrate")
    return project


def error_line(result: Result) -> str:
    """The one line a failing command prints: no traceback, nothing on stdout."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


# --- help -----------------------------------------------------------------------------------------


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


ALL_COMMANDS = list(_commands(main))


def test_all_commands_of_the_issue_exist() -> None:
    expected = {
        ("serve",), ("migrate",), ("healthcheck",), ("trigger",),
        ("runs",), ("runs", "list"), ("runs", "show"), ("runs", "watch"), ("runs", "retry"),
        ("runs", "retrigger"), ("runs", "cancel"), ("runs", "delete"), ("runs", "purge"),
        ("schedules",), ("schedules", "validate"), ("schedules", "list"), ("schedules", "next"),
        ("schedules", "history"), ("schedules", "backfill"),
    }  # fmt: skip
    assert expected <= set(ALL_COMMANDS)


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=[" ".join(p) or "durably-sched" for p in ALL_COMMANDS])
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert "Example" in result.stdout, f"`{' '.join(path)} --help` shows no example"


def test_main_help_documents_the_exit_codes() -> None:
    text = CliRunner().invoke(main, ["--help"]).stdout
    for code in ("0 ", "1 ", "2 ", "124", "130"):
        assert f"  {code}" in text


def test_usage_errors_are_one_line_with_a_hint(project: Project) -> None:
    result = project.run("trigger", "plain", "--bogus")
    assert result.exit_code == 2
    line = error_line(result)
    assert "--bogus" in line and "durably-sched trigger --help" in line
    result = project.run("serve", "--concurrency", "many")
    assert result.exit_code == 2
    assert "many" in error_line(result)
    assert not project.db.exists()


# --- trigger: validation before the database ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["trigger", "echo-image", "--input", '{"filename": }'],
            "error: --input: invalid JSON at line 1 column 14: Expecting value",
        ),
        (["trigger", "echo-image", "--input", '{"size": 2}'], "field 'filename': Field required"),
        (["trigger", "echo-image", "--input", '{"filename": "a", "size": "x"}'], "field 'size'"),
        (["trigger", "nope"], "error: unknown job 'nope' (registered: boom, echo-image, plain)"),
        (["trigger", "plain", "--input", "[1, 2]"], "input must be a JSON object"),
        (["trigger", "plain", "--label", "novalue"], "--label 'novalue': expected KEY=VALUE"),
        (["trigger", "plain", "--input", "{}", "--input-file", "x.json"], "--input or --input-file"),
        (["trigger", "plain", "--input-file", "missing.json"], "cannot read missing.json"),
        (["trigger"], "name a JOB or a --schedule"),
        (["trigger", "plain", "--timeout", "3"], "--timeout only applies with --wait"),
        (["trigger", "--schedule", "hourly", "--input", "{}"], "cannot be used with --schedule"),
        (["trigger", "--schedule", "nope"], "unknown schedule 'nope'"),
    ],
)
def test_trigger_validation_errors_exit_2_and_create_no_database(
    project: Project, args: list[str], expected: str
) -> None:
    result = project.run(*args)
    assert result.exit_code == 2, result.output
    assert expected in error_line(result)
    assert not project.db.exists()
    assert list(project.db.parent.iterdir()) == []


def test_input_file_errors_name_the_file_and_position(project: Project) -> None:
    project.write("in.json", '{\n  "filename": "a",\n  oops\n}\n')
    result = project.run("trigger", "echo-image", "--input-file", "in.json")
    assert result.exit_code == 2
    assert "--input-file: in.json: invalid JSON at line 3 column 3" in error_line(result)


def test_valid_trigger_without_a_database_says_how_to_create_it(project: Project) -> None:
    result = project.run("trigger", "plain")
    assert result.exit_code == 1
    assert "database file" in error_line(result) and "durably-sched migrate" in error_line(result)
    assert not project.db.exists()


def test_jobs_module_that_fails_to_import_is_one_line_with_file_and_line(project: Project) -> None:
    project.write(f"{project.jobs}/broken.py", "x = 1\nraise RuntimeError('no config')\n")
    result = project.run("trigger", "plain")
    assert result.exit_code == 2
    line = error_line(result)
    assert f"jobs module '{project.jobs}.broken' failed to import: RuntimeError: no config" in line
    assert f"{project.jobs}/broken.py:2" in line


def test_missing_jobs_module_is_one_line(project: Project) -> None:
    result = project.run("--jobs", "no_such_jobs_module", "schedules", "validate")
    assert result.exit_code == 2
    assert "cannot import jobs module 'no_such_jobs_module'" in error_line(result)


# --- trigger, wait, runs --------------------------------------------------------------------------

RUN_KEYS = {
    "id", "job_name", "status", "idempotency_key", "concurrency_key", "labels",
    "created_at", "started_at", "completed_at", "error",
}  # fmt: skip


def _is_utc_iso(text: str | None) -> bool:
    return text is not None and text.endswith("Z") and "T" in text


def test_trigger_json_then_runs_list_and_show_json_shapes(migrated: Project) -> None:
    p = migrated
    made = p.json(
        "trigger", "echo-image", "--input", '{"filename": "cat.png", "size": 3}',
        "--idempotency-key", "k1", "--concurrency-key", "c1", "--label", "team=ops", "--json",
    )  # fmt: skip
    assert (
        made["status"] == "pending" and made["disposition"] == "created" and made["job_name"] == "echo-image"
    )
    again = p.json(
        "trigger", "echo-image", "--input", '{"filename": "cat.png"}', "--idempotency-key", "k1", "--json"
    )
    assert again["id"] == made["id"] and again["disposition"] == "idempotent"

    done = p.json("runs", "list", "--json")
    assert [r["id"] for r in done] == [made["id"]]
    assert RUN_KEYS <= set(done[0])
    assert done[0]["labels"] == {"team": "ops"} and done[0]["concurrency_key"] == "c1"
    assert _is_utc_iso(done[0]["created_at"]) and done[0]["started_at"] is None

    # Execute it in-process (the run already exists: --here runs exactly that one).
    waited = p.run(
        "trigger", "echo-image", "--input", '{"filename": "x"}', "--idempotency-key", "k1", "--here", "--json"
    )
    assert waited.exit_code == 0, waited.output
    final = json.loads(waited.stdout)
    assert (
        final["id"] == made["id"]
        and final["status"] == "completed"
        and final["output"] == {"echo": "CAT.PNG"}
    )

    shown = p.json("runs", "show", made["id"], "--json")
    assert RUN_KEYS <= set(shown)
    assert shown["output"] == {"echo": "CAT.PNG"} and shown["error"] is None
    assert shown["progress"] == {"current": 2, "total": 2, "message": "done"}
    assert [(s["name"], s["index"], s["output"]) for s in shown["steps"]] == [
        ("one", 0, "CAT.PNG"),
        ("two", 1, 6),
    ]
    assert all(_is_utc_iso(s["started_at"]) and s["duration"] >= 0 for s in shown["steps"])
    assert [(log["level"], log["message"], log["step_name"]) for log in shown["logs"]] == [
        ("info", "hello", None)
    ]
    assert _is_utc_iso(shown["completed_at"])

    human = p.ok("runs", "show", made["id"]).stdout
    for fragment in (
        "completed",
        "echo-image",
        "idempotency key",
        "k1",
        "steps",
        "one",
        "two",
        "logs",
        "hello",
    ):
        assert fragment in human
    listed = p.ok("runs", "list").stdout.splitlines()
    assert listed[0].split() == ["ID", "JOB", "STATUS", "PROGRESS", "CREATED", "TOTAL", "KEY"]
    assert listed[1].split()[0] == made["id"][:8] and listed[1].split()[3] == "2/2"


def test_runs_list_filters(migrated: Project) -> None:
    p = migrated
    a = p.json("trigger", "plain", "--json")["id"]
    b = p.json("trigger", "echo-image", "--input", '{"filename": "x"}', "--json")["id"]
    p.ok("runs", "cancel", a)
    assert [r["id"] for r in p.json("runs", "list", "--status", "cancelled", "--json")] == [a]
    assert [r["id"] for r in p.json("runs", "list", "--job", "echo-image", "--json")] == [b]
    assert [r["id"] for r in p.json("runs", "list", "--limit", "1", "--json")] == [b]
    assert p.json("runs", "list", "--schedule", "hourly", "--json") == []
    # Labels (every one must be on the run), creation times, and pages by cursor.
    c = p.json("trigger", "plain", "--label", "customer=acme", "--label", "tier=gold", "--json")["id"]
    d = p.json("trigger", "plain", "--label", "customer=acme", "--json")["id"]
    assert [r["id"] for r in p.json("runs", "list", "--label", "customer=acme", "--json")] == [d, c]
    both = p.json("runs", "list", "--label", "customer=acme", "--label", "tier=gold", "--json")
    assert [r["id"] for r in both] == [c]
    created = {r["id"]: r["created_at"] for r in p.json("runs", "list", "--json")}
    since_c = p.json("runs", "list", "--created-after", created[c], "--json")
    assert [r["id"] for r in since_c] == [d, c]
    before_c = p.json("runs", "list", "--created-before", created[c], "--json")
    assert {r["id"] for r in before_c} == {a, b}
    first = p.run("runs", "list", "--limit", "3", "--json")
    assert first.exit_code == 0 and [r["id"] for r in json.loads(first.stdout)] == [d, c, b]
    cursor = re.search(r"next cursor: (\S+)", first.stderr)
    assert cursor, first.stderr
    assert [r["id"] for r in p.json("runs", "list", "--cursor", cursor[1], "--json")] == [a]
    last = p.run("runs", "list", "--cursor", cursor[1], "--json")
    assert "next cursor" not in last.stderr
    for bad, says in (
        (("--cursor", "abc"), "error: --cursor: invalid cursor 'abc'"),
        (("--label", "nokey"), "error: --label 'nokey': expected KEY=VALUE"),
        (("--created-after", "soonish"), "'soonish' is not an ISO 8601 time"),
    ):
        refused = p.run("runs", "list", *bad)
        assert refused.exit_code == 2 and says in error_line(refused), (bad, refused.stderr)


def test_wait_here_prints_the_output_and_exits_0(migrated: Project) -> None:
    result = migrated.run("trigger", "echo-image", "--input", '{"filename": "dog"}', "--wait", "--here")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"echo": "DOG"}
    assert "completed" in result.stderr and "hello" in result.stderr  # the run's log, then the result
    # This process runs the job: no "waiting: no live worker has job" before it does.
    assert "waiting:" not in result.stderr, result.stderr


def test_wait_here_for_a_failing_job_exits_1_with_the_error(migrated: Project) -> None:
    result = migrated.run("trigger", "boom", "--here")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "failed in step 'explode': ValueError: kaboom" in result.stderr
    assert "Traceback" not in result.stderr
    (run,) = migrated.json("runs", "list", "--json")
    assert run["status"] == "failed" and run["error"] == "ValueError: kaboom"


def test_here_runs_only_the_triggered_run(migrated: Project) -> None:
    older = migrated.json("trigger", "plain", "--input", '{"n": 1}', "--json")["id"]
    mine = migrated.json("trigger", "plain", "--input", '{"n": 2}', "--here", "--json")
    assert mine["status"] == "completed" and mine["output"] == {"got": {"n": 2}}
    assert migrated.json("runs", "show", older, "--json")["status"] == "pending"


def test_wait_timeout_exits_124_and_the_run_continues(migrated: Project) -> None:
    result = migrated.run("trigger", "plain", "--wait", "--timeout", "0.3")
    assert result.exit_code == 124
    assert "timed out waiting" in result.stderr and "continues (pending)" in result.stderr
    (run,) = migrated.json("runs", "list", "--json")
    assert run["status"] == "pending"


def test_watch_a_finished_run(migrated: Project) -> None:
    run_id = migrated.json("trigger", "plain", "--input", '{"a": 1}', "--here", "--json")["id"]
    result = migrated.run("runs", "watch", run_id)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"got": {"a": 1}}
    failed = migrated.json("trigger", "boom", "--json")["id"]
    migrated.ok("runs", "cancel", failed)
    assert migrated.run("runs", "watch", failed).exit_code == 1


def test_retry_cancel_delete_retrigger_flows(migrated: Project) -> None:
    p = migrated
    failed = json.loads(p.run("trigger", "boom", "--here", "--json").stdout)["id"]
    assert "pending again (0 steps done" in p.ok("runs", "retry", failed).stdout
    assert p.json("runs", "show", failed, "--json")["status"] == "pending"

    assert p.ok("runs", "cancel", failed).stdout.strip() == f"run {failed} cancelled"
    assert p.ok("runs", "cancel", failed).stdout.strip() == f"run {failed} was already cancelled"

    done = p.json("trigger", "plain", "--input", '{"x": 1}', "--here", "--json")["id"]
    result = p.run("runs", "cancel", done)
    assert result.exit_code == 2 and "is already completed; it cannot be cancelled" in error_line(result)
    result = p.run("runs", "retry", done)
    assert result.exit_code == 2 and "only failed or cancelled runs can be retried" in error_line(result)

    again = p.ok("runs", "retrigger", done).stdout
    new_id = again.split()[1]
    assert new_id != done and f"retrigger of {done}" in again
    new = p.json("runs", "show", new_id, "--json")
    assert new["status"] == "pending" and new["input"] == {"x": 1}

    assert p.ok("runs", "delete", failed).stdout.strip() == f"run {failed} deleted"
    result = p.run("runs", "show", failed)
    assert result.exit_code == 2 and error_line(result) == f"error: no run with id or id prefix '{failed}'"

    assert "purged 0 runs" in p.ok("runs", "purge", "--older-than", "1d").stdout
    assert "purged 1 run " in p.ok("runs", "purge", "--older-than", "0s").stdout  # the completed one
    result = p.run("runs", "purge", "--older-than", "soon")
    assert result.exit_code == 2 and "invalid duration 'soon'" in error_line(result)


@pytest.mark.parametrize("command", ["show", "watch", "retry", "retrigger", "cancel", "delete"])
def test_unknown_run_id_is_one_line_exit_2(migrated: Project, command: str) -> None:
    result = migrated.run("runs", command, "no-such-run")
    assert result.exit_code == 2
    assert error_line(result) == "error: no run with id or id prefix 'no-such-run'"


# --- database problems ------------------------------------------------------------------------------


def test_read_only_commands_never_create_the_database(project: Project) -> None:
    for args in (["runs", "list"], ["runs", "show", "x"], ["schedules", "history", "hourly"]):
        result = project.run(*args)
        assert result.exit_code == 1
        assert "does not exist" in error_line(result)
    listed = project.ok("schedules", "list")
    assert "hourly" in listed.stdout and "-" in listed.stdout.splitlines()[1].split()
    assert not project.db.exists()


def test_newer_schema_is_one_line(migrated: Project) -> None:
    with sqlite3.connect(migrated.db) as conn:
        conn.execute("PRAGMA user_version = 999")
    for args in (["runs", "list"], ["migrate"], ["trigger", "plain"]):
        result = migrated.run(*args)
        assert result.exit_code == 1
        assert "newer than this durably-sched supports" in error_line(result)


def test_corrupt_database_is_one_line(project: Project) -> None:
    project.db.write_bytes(b"not a database at all, only text " * 200)
    for args in (["runs", "list"], ["migrate"]):
        result = project.run(*args)
        assert result.exit_code == 1
        assert "not a SQLite database or is corrupt" in error_line(result)


def test_unwritable_database_path_is_one_line(project: Project, tmp_path: Path) -> None:
    result = project.run("--database", f"sqlite:///{tmp_path}/missing-dir/x.db", "migrate")
    assert result.exit_code == 1
    assert "missing-dir" in error_line(result) and "does not exist" in error_line(result)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = project.run("--database", f"sqlite:///{locked}/x.db", "migrate")
        assert result.exit_code == 1
        assert "not writable" in error_line(result)


def test_sqlite_url_with_two_slashes_is_refused_with_the_right_forms(project: Project) -> None:
    """``sqlite://durably.db`` reads "durably.db" as a host: refused, naming both correct forms."""
    result = project.run("--database", "sqlite://durably.db", "runs", "list")
    assert result.exit_code == 1
    line = error_line(result)
    assert "two slashes" in line and "sqlite:///durably.db" in line and "sqlite:////" in line
    assert not (project.root / "durably.db").exists()


def test_absolute_path_written_with_three_slashes_gets_a_hint(project: Project, tmp_path: Path) -> None:
    """``sqlite:///tmp/x.db`` is the relative path tmp/x.db; when /tmp exists, say so."""
    absolute = tmp_path / "abs.db"  # tmp_path exists; the same path relative to the cwd does not
    relative_form = f"sqlite://{absolute}"  # three slashes in all: sqlite:/// + "tmp/..."
    result = project.run("--database", relative_form, "migrate")
    assert result.exit_code == 1
    line = error_line(result)
    assert "does not exist" in line and f"sqlite:///{absolute}" in line and "four slashes" in line


def test_unknown_url_options_are_refused_with_the_known_ones(project: Project) -> None:
    result = project.run("--database", f"sqlite:///{project.db}?journal=wal", "runs", "list")
    assert result.exit_code == 1
    line = error_line(result)
    assert "unknown option 'journal'" in line and "busy_timeout, synchronous" in line
    result = project.run("--database", "postgresql://u@h/db?poolmax=3", "runs", "list")
    assert result.exit_code == 1
    line = error_line(result)
    assert "unknown option 'poolmax'" in line and "pool_max" in line and "sslmode" in line


def test_pool_max_is_read_from_the_query_not_found_by_substring() -> None:
    from durably_sched.store import open_store

    assert open_store("postgresql://u@h/db?pool_max=3").max_size == 3  # type: ignore[attr-defined]
    sneaky = open_store("postgresql://u@h/db?passfile=/etc/pool_max=1", worker_concurrency=20)
    assert sneaky.max_size == 24  # type: ignore[attr-defined]


def test_read_only_commands_work_where_the_database_cannot_be_written(migrated: Project) -> None:
    """An operator may look at a database they cannot change (e.g. one owned by the service)."""
    run_id = migrated.json("trigger", "plain", "--json")["id"]
    migrated.ok("schedules", "list")
    with read_only_tree(migrated.db.parent):
        listed = migrated.ok("runs", "list")
        assert run_id[:8] in listed.stdout
        assert migrated.json("runs", "show", run_id, "--json")["id"] == run_id
        assert "hourly" in migrated.ok("schedules", "list").stdout
        migrated.ok("schedules", "history", "hourly")
        changed = migrated.run("trigger", "plain")  # a write still fails, in one line
        assert changed.exit_code == 1 and "not writable" in error_line(changed)
    assert sorted(p.name for p in migrated.db.parent.iterdir()) == ["cli.db"]


def test_unsupported_database_url(project: Project) -> None:
    result = project.run("--database", "mysql://x/y", "runs", "list")
    assert result.exit_code == 1
    assert "unsupported database URL" in error_line(result)


def test_migrate_is_idempotent(project: Project) -> None:
    assert f"schema is at version {SCHEMA_VERSION}" in project.ok("migrate").stdout
    assert f"schema is at version {SCHEMA_VERSION}" in project.ok("migrate").stdout


# --- schedules --------------------------------------------------------------------------------------


def test_validate_good_file_and_bad_files(project: Project) -> None:
    assert project.ok("schedules", "validate").stdout.strip() == "ok: 2 schedules in schedules.yaml"
    bad = project.write("bad.yaml", SCHEDULES + "    colour: blue\n")
    result = project.run("schedules", "validate", str(bad))
    assert result.exit_code == 2
    assert error_line(result).startswith(f"error: {bad}:10: schedule 'images': colour: unknown key")
    unknown_job = project.write("job.yaml", SCHEDULES.replace("job: plain", "job: nope"))
    result = project.run("schedules", "validate", str(unknown_job))
    assert result.exit_code == 2
    assert ":5: schedule 'hourly': job: unknown job 'nope'" in error_line(result)
    wrong_input = project.write("input.yaml", SCHEDULES.replace("{filename: a.png}", "{size: x}"))
    result = project.run("schedules", "validate", str(wrong_input))
    assert result.exit_code == 2
    problems = result.stderr.splitlines()  # every problem, one line each (schedules validate)
    assert [line.split(": schedule ")[0].rsplit(":", 1)[1] for line in problems] == ["9", "9"]
    assert "schedule 'images': input.filename: is required" in problems[0]
    assert "schedule 'images': input.size: " in problems[1]
    result = project.run("schedules", "validate", "missing.yaml")
    assert result.exit_code == 2
    assert "missing.yaml: cannot read the schedules file" in error_line(result)
    assert not project.db.exists()


def test_validate_needs_the_jobs(project: Project) -> None:
    result = project.run("--jobs", "nowhere_to_be_found", "schedules", "validate")
    assert result.exit_code == 2
    assert "cannot import jobs module" in error_line(result)


def _next(p: Project, cron: str, after: str, count: int = 3, name: str = "x") -> list[dict[str, str]]:
    p.write(
        "tz.yaml", f'timezone: Europe/Berlin\nschedules:\n  {name}:\n    cron: "{cron}"\n    job: plain\n'
    )
    found: list[dict[str, str]] = p.json(
        "--schedules", "tz.yaml", "schedules", "next", name, "--after", after, "--count", str(count), "--json"
    )
    return found


def test_next_applies_the_dst_policy_and_gives_keys(project: Project) -> None:
    # --json gives each fire time on the schedule's clock (fire_time_in_zone) and in UTC.
    # Spring forward: 02:30 does not exist on 29 March 2026; it fires once, right after the gap.
    spring = _next(project, "30 2 * * *", "2026-03-28T12:00Z")
    assert [n["fire_time_in_zone"] for n in spring] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert spring[0] == {
        "schedule": "x",
        "fire_time": "2026-03-29T01:00:00.000Z",
        "fire_time_in_zone": "2026-03-29T03:00:00+02:00",
        "idempotency_key": "schedule:x:2026-03-29T01:00:00Z",
    }
    # Fall back: 02:30 happens twice on 25 October 2026; a fixed hour fires once, the first time.
    autumn = _next(project, "30 2 * * *", "2026-10-24T12:00Z")
    assert [n["fire_time_in_zone"] for n in autumn] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    assert autumn[0]["idempotency_key"] == "schedule:x:2026-10-25T00:30:00Z"
    # An hourly schedule runs every real hour, so both 02:30s.
    hourly = _next(project, "30 * * * *", "2026-10-25T01:00+02:00", count=4)
    assert [n["idempotency_key"][-9:] for n in hourly] == ["23:30:00Z", "00:30:00Z", "01:30:00Z", "02:30:00Z"]
    assert [n["fire_time_in_zone"][11:] for n in hourly][1:3] == ["02:30:00+02:00", "02:30:00+01:00"]


def test_next_is_exclusive_and_covers_all_schedules(project: Project) -> None:
    found = project.json("schedules", "next", "--after", "2026-01-01T00:00:00Z", "--count", "2", "--json")
    assert [(n["schedule"], n["fire_time"]) for n in found] == [
        ("hourly", "2026-01-01T01:00:00.000Z"),
        ("hourly", "2026-01-01T02:00:00.000Z"),
        ("images", "2026-01-01T00:05:00.000Z"),
        ("images", "2026-01-01T00:10:00.000Z"),
    ]
    human = project.ok("--utc", "schedules", "next", "images", "--after", "2026-01-01", "--count", "1").stdout
    assert human.splitlines()[1].split() == [
        "images",
        "2026-01-01",
        "00:05:00+00:00",
        "schedule:images:2026-01-01T00:05:00Z",
    ]
    result = project.run("schedules", "next", "nope")
    assert (
        result.exit_code == 2
        and "unknown schedule 'nope' in schedules.yaml (defined: hourly, images)" in error_line(result)
    )
    result = project.run("schedules", "next", "--after", "yesterday")
    assert result.exit_code == 2 and "not an ISO 8601 time" in error_line(result)


def test_backfill_twice_makes_no_duplicates(migrated: Project) -> None:
    p = migrated
    args = ("schedules", "backfill", "hourly", "--from", "2026-01-01T00:00Z", "--to", "2026-01-01T05:00Z")
    plan = p.json(*args, "--dry-run", "--json")
    assert [x["idempotency_key"] for x in plan] == [
        f"schedule:hourly:2026-01-01T0{h}:00:00Z" for h in range(6)
    ]
    assert p.json("runs", "list", "--json") == []  # a dry run writes nothing

    first = p.json(*args, "--json")
    assert [x["outcome"] for x in first] == ["triggered"] * 6
    second = p.ok(*args)
    assert "6 fire times: 6 deduplicated" in second.stdout
    runs = p.json("runs", "list", "--limit", "100", "--json")
    assert len(runs) == 6
    assert sorted(r["idempotency_key"] for r in runs) == sorted(x["idempotency_key"] for x in plan)
    assert all(
        r["labels"]["schedule"] == "hourly" and r["concurrency_key"] == "schedule:hourly" for r in runs
    )

    history = p.json("schedules", "history", "hourly", "--json")
    assert [h["fire_time"] for h in history][:2] == ["2026-01-01T05:00:00.000Z", "2026-01-01T04:00:00.000Z"]
    assert {h["outcome"] for h in history} == {"triggered"} and all(
        h["run_status"] == "pending" for h in history
    )
    # Backfilling does not move the scheduler's cursor.
    with sqlite3.connect(migrated.db) as conn:
        assert conn.execute("SELECT count(*) FROM schedule_cursors").fetchone()[0] == 0


def test_backfill_refuses_absurd_and_future_ranges(migrated: Project) -> None:
    p = migrated
    p.write("fast.yaml", 'schedules:\n  fast:\n    cron: "* * * * * *"\n    job: plain\n')
    result = p.run(
        "--schedules",
        "fast.yaml",
        "schedules",
        "backfill",
        "fast",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-02",
    )
    assert result.exit_code == 2 and "more than 10,000 fire times" in error_line(result)
    result = p.run("schedules", "backfill", "hourly", "--from", "2026-01-02", "--to", "2026-01-01")
    assert result.exit_code == 2 and "is before --from" in error_line(result)
    result = p.run("schedules", "backfill", "hourly", "--from", "2026-01-01", "--to", "2999-01-01")
    assert result.exit_code == 2 and "in the future" in error_line(result)
    assert p.json("runs", "list", "--json") == []


def test_trigger_schedule_slot_uses_the_scheduler_key(migrated: Project) -> None:
    p = migrated
    result = p.run("trigger", "--schedule", "hourly", "--at", "2026-01-01T10:30:00Z")
    assert result.exit_code == 2
    line = error_line(result)
    assert "is not a fire time of schedule 'hourly'" in line
    assert "before: 2026-01-01 10:00:00+00:00" in line and "after: 2026-01-01 11:00:00+00:00" in line

    first = p.json("trigger", "--schedule", "hourly", "--at", "2026-01-01T10:00:00Z", "--json")
    assert (
        first["outcome"] == "triggered" and first["idempotency_key"] == "schedule:hourly:2026-01-01T10:00:00Z"
    )
    again = p.json("trigger", "--schedule", "hourly", "--at", "2026-01-01T11:00:00+01:00", "--json")
    assert again["outcome"] == "deduplicated" and again["id"] == first["id"]
    text = p.ok("trigger", "--schedule", "hourly", "--at", "2026-01-01T10:00").stdout
    assert f"deduplicated, already handled by run {first['id']}" in text
    # A backfill over the same slot adds nothing either.
    assert (
        "1 deduplicated"
        in p.ok(
            "schedules", "backfill", "hourly", "--from", "2026-01-01T10:00Z", "--to", "2026-01-01T10:00Z"
        ).stdout
    )
    latest = p.json("trigger", "--schedule", "images", "--json")  # no --at: the most recent fire time
    assert latest["outcome"] == "triggered" and latest["idempotency_key"].startswith("schedule:images:")
    assert len(p.json("runs", "list", "--json")) == 2


def test_schedules_list_shows_next_and_last_outcome(migrated: Project) -> None:
    p = migrated
    p.ok("trigger", "--schedule", "hourly", "--at", "2026-01-01T10:00Z")
    listed = {s["name"]: s for s in p.json("schedules", "list", "--json")}
    assert listed["hourly"]["last_outcome"] == "triggered" and listed["images"]["last_outcome"] is None
    assert listed["hourly"]["cron"] == "0 * * * *" and listed["hourly"]["timezone"] == "UTC"
    assert listed["hourly"]["next_fire_time"].endswith(":00:00.000Z")
    assert listed["hourly"]["next_fire_time_in_zone"].endswith(":00:00+00:00")
    text = p.ok("schedules", "list").stdout
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "JOB", "STATE", "NEXT", "FIRE", "TIME", "LAST"]
    hourly = lines.index(next(line for line in lines if line.startswith("hourly")))
    assert "triggered 2026-01-01 10:00:00" in lines[hourly]  # another day: the date is written
    # Under the row: the expression, its zone, what it means and the run the last fire time made.
    run_id = listed["hourly"]["last_run_id"]
    assert lines[hourly + 1].strip() == f"0 * * * * (UTC): Every hour; last run {run_id[:8]}"


def test_schedules_list_describes_each_cron(project: Project) -> None:
    """Each row is followed by what its cron means, in words that follow the day-field rule."""
    project.write(
        "days.yaml",
        """\
        timezone: UTC
        schedules:
          hourly: {cron: "0 * * * *", job: plain}
          odd-mondays: {cron: "0 0 */2 * MON", job: plain}
          mid-month: {cron: "0 0 15 * 0#3", job: plain}
          pulse: {cron: "*/10 * * * * *", job: plain}
        """,
    )
    lines = project.ok("--schedules", "days.yaml", "schedules", "list").stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "JOB", "STATE"]
    assert [line.split()[0] for line in lines[1::2]] == ["hourly", "odd-mondays", "mid-month", "pulse"]
    assert lines[2::2] == [
        "  0 * * * * (UTC): Every hour",
        "  0 0 */2 * MON (UTC): At 00:00, every 2 days, and only on Monday",
        "  0 0 15 * 0#3 (UTC): At 00:00, on day 15 of the month, or on the third Sunday of the month",
        "  */10 * * * * * (UTC): Every 10 seconds",
    ]
    listed = project.json("--schedules", "days.yaml", "schedules", "list", "--json")
    assert [(s["name"], s["description"]) for s in listed] == [
        ("hourly", "Every hour"),
        ("odd-mondays", "At 00:00, every 2 days, and only on Monday"),
        ("mid-month", "At 00:00, on day 15 of the month, or on the third Sunday of the month"),
        ("pulse", "Every 10 seconds"),
    ]


def test_history_of_an_unknown_schedule(migrated: Project) -> None:
    result = migrated.run("schedules", "history", "nope")
    assert result.exit_code == 2 and "unknown schedule 'nope'" in error_line(result)
    assert migrated.json("schedules", "history", "hourly", "--json") == []


# --- healthcheck, addresses, jobs loader -----------------------------------------------------------


def test_healthcheck_needs_an_address_and_fails_when_nothing_listens(project: Project) -> None:
    result = project.run("healthcheck")
    assert result.exit_code == 2 and "DURABLY_HTTP" in error_line(result)
    result = project.run("healthcheck", "--http", "127.0.0.1:1", "--timeout", "2")
    assert result.exit_code == 1
    assert "unhealthy: http://127.0.0.1:1/healthz" in result.stderr


@pytest.mark.parametrize(
    ("text", "host", "port", "local"),
    [
        ("8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
        (":8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
        ("0.0.0.0:8080", "0.0.0.0", 8080, "127.0.0.1:8080"),
        ("[::]:9464", "::", 9464, "[::1]:9464"),
        ("example.org:80", "example.org", 80, "example.org:80"),
    ],
)
def test_http_addresses(text: str, host: str, port: int, local: str) -> None:
    address = HttpAddressType().convert(text, None, None)
    assert address == HttpAddress(host, port)
    assert str(address.local) == local


@pytest.mark.parametrize("text", ["http", "1.2.3.4:", "1.2.3.4:70000", "::1:80"])
def test_bad_http_addresses(text: str) -> None:
    with pytest.raises(click.BadParameter):
        HttpAddressType().convert(text, None, None)


def test_loader_registers_every_job_of_the_package_once(project: Project) -> None:
    jobs = load_jobs(project.jobs)
    assert sorted(jobs) == ["boom", "echo_image", "plain"]
    assert jobs["echo_image"].name == "echo-image"
    assert registration_key("nightly.report-v2") == "nightly_report_v2"
    assert registration_key("2fast") == "_2fast"


def test_loader_rejects_two_jobs_with_one_name(project: Project) -> None:
    project.write(f"{project.jobs}/dup.py", "from durably_sched import define_job\n"
                  "async def f(step, payload):\n    return {}\n"
                  "plain_again = define_job(name='plain', run=f)\n")  # fmt: skip
    result = project.run("trigger", "plain")
    assert result.exit_code == 2
    assert "two different jobs are named 'plain'" in error_line(result)


@pytest.mark.parametrize("command", [("serve",), ("serve", "--once"), ("work", "--until-idle")])
def test_a_lease_renewed_only_after_it_expires_is_refused_naming_both_flags(
    project: Project, command: tuple[str, ...]
) -> None:
    result = project.run(*command, "--heartbeat-interval", "5", "--stale-threshold", "5")
    assert result.exit_code == 2
    assert error_line(result) == (
        "error: --heartbeat-interval (5s) must be shorter than --stale-threshold (5s): "
        "a lease must be renewed before it expires"
    )
    assert not project.db.exists()  # refused before anything was opened or created


def test_serve_refuses_an_empty_role_set(project: Project) -> None:
    result = project.run("serve", "--no-scheduler", "--no-worker")
    assert result.exit_code == 2
    assert error_line(result) == (
        "error: --no-scheduler and --no-worker together leave nothing to do without --http "
        "(then the process serves the dashboard and the API only)"
    )
    assert not project.db.exists()


# --- sync job functions ------------------------------------------------------------------------------


def test_a_sync_job_function_is_refused_when_the_jobs_load(project: Project) -> None:
    project.write(
        f"{project.jobs}/sync.py",
        "from durably_sched import define_job\n\n"
        "def report(step, payload):\n"
        "    return {}\n\n"
        "report_job = define_job(name='report', run=report)\n",
    )
    result = project.run("trigger", "plain")
    assert result.exit_code == 2
    line = error_line(result)
    assert (
        f"jobs module '{project.jobs}.sync' failed to import: ArgumentTypeError: "
        "job 'report': run must be an " in line
    )
    assert "async function (async def report(step, payload)), but report is a plain function" in line
    assert "await step.run('name', sync_function) runs it in a thread" in line
    assert f"{project.jobs}/sync.py:6" in line
    assert not project.db.exists()
