"""Bad input matrix: every user error is one line on stderr, a non-zero exit, and no write.

Each case runs the real CLI as a subprocess against a database holding one finished run, and
checks the database file is byte-for-byte unchanged afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from durably_sched import create_durably

from .chaos_jobs import chain_job, tick_job
from .serve_procs import HERE, ROOT

pytestmark = pytest.mark.system

GOOD = """\
timezone: UTC
schedules:
  ok:
    cron: "*/5 * * * *"
    job: chain
    input: {steps: 1}
"""


@dataclass(frozen=True)
class Case:
    name: str
    args: list[str]
    expect: list[str]  # fragments the one error line must contain
    schedules: str | None = None
    exit_code: int = 2
    database: str | None = None  # None: the prepared database


def _schedules_case(name: str, text: str, *expect: str) -> Case:
    return Case(name, ["serve"], list(expect), schedules=text)


CASES = [
    _schedules_case("yaml syntax", "schedules:\n  ok:\n    cron: [unclosed\n", "schedules.yaml:"),
    _schedules_case(
        "duplicate schedule",
        GOOD + '  ok:\n    cron: "* * * * *"\n    job: chain\n    input: {steps: 1}\n',
        "schedules.yaml:7",
        "ok",
    ),
    _schedules_case("unknown key", GOOD + "    colour: blue\n", "schedules.yaml:7", "colour"),
    _schedules_case("61 minutes", GOOD.replace("*/5 * * * *", "61 * * * *"), "schedules.yaml:4", "cron"),
    _schedules_case("4 fields", GOOD.replace("*/5 * * * *", "* * * *"), "schedules.yaml:4", "cron"),
    _schedules_case("7 fields", GOOD.replace("*/5 * * * *", "0 0 0 * * * *"), "schedules.yaml:4", "cron"),
    _schedules_case(
        "weekday start with a step",
        GOOD.replace("*/5 * * * *", "0 9 * * 5/1"),
        "schedules.yaml:4",
        "day-of-week field '5/1'",
    ),
    _schedules_case("unknown job", GOOD.replace("job: chain", "job: nope"), "schedules.yaml:5", "nope"),
    _schedules_case(
        "unknown timezone", GOOD + "    timezone: Mars/Olympus\n", "schedules.yaml:7", "Mars/Olympus"
    ),
    _schedules_case(
        "input fails the model",
        GOOD.replace("job: chain", "job: typed").replace("input: {steps: 1}", "input: {count: many}"),
        "schedules.yaml:6",
        "count",
    ),
    _schedules_case(
        "pause_after_failures of 0",
        GOOD + "    pause_after_failures: 0\n",
        "schedules.yaml:7",
        "schedule 'ok': pause_after_failures: must be at least 1 (got 0)",
    ),
    _schedules_case(
        "pause_after_failures negative in the defaults",
        "defaults:\n  pause_after_failures: -3\n" + GOOD,
        "schedules.yaml:2",
        "defaults.pause_after_failures: must be at least 1 (got -3)",
    ),
    Case("pause an unknown schedule", ["schedules", "pause", "nope"], ["unknown schedule 'nope'", "ok"]),
    Case("pause with a control character", ["schedules", "pause", "ok", "--reason", "a\x07b"], ["control"]),
    Case("pause with a huge reason", ["schedules", "pause", "ok", "--reason", "x" * 600], ["at most 500"]),
    Case("resume an unknown schedule", ["schedules", "resume", "nope"], ["unknown schedule 'nope'"]),
    Case("resume --catchup of an unknown schedule", ["schedules", "resume", "nope", "--catchup"], ["'nope'"]),
    Case("trigger input not JSON", ["trigger", "chain", "--input", "{steps: 1"], ["--input", "JSON"]),
    Case("trigger input fails the model", ["trigger", "typed", "--input", '{"count": "x"}'], ["count"]),
    Case("trigger unknown job", ["trigger", "nope", "--input", "{}"], ["nope"]),
    Case(
        "trigger coalesce without a concurrency key",
        ["trigger", "chain", "--input", '{"steps": 1}', "--coalesce", "skip"],
        ["--coalesce", "--concurrency-key"],
    ),
    Case(
        "trigger unknown coalesce mode",
        ["trigger", "chain", "--input", '{"steps": 1}', "--concurrency-key", "k", "--coalesce", "merge"],
        ["--coalesce", "'merge'"],
    ),
    Case(
        "serve --once with both roles off",
        ["serve", "--once", "--no-scheduler", "--no-worker"],
        ["--once", "--no-scheduler", "--no-worker"],
    ),
    Case("serve --max-runs without --once", ["serve", "--max-runs", "3"], ["--max-runs", "--once"]),
    Case("serve --once --max-runs 0", ["serve", "--once", "--max-runs", "0"], ["--max-runs"]),
    Case("serve --once --max-seconds 0", ["serve", "--once", "--max-seconds", "0"], ["--max-seconds"]),
    Case("serve --once --http", ["serve", "--once", "--http", "127.0.0.1:0"], ["--http", "--once"]),
    Case("work without --until-idle", ["work"], ["--until-idle"]),
    Case("work --job unknown", ["work", "--until-idle", "--job", "nope"], ["--job nope", "unknown job"]),
    Case("unknown run id", ["runs", "show", "no-such-run"], ["no-such-run"]),
    Case("retry unknown run", ["runs", "retry", "no-such-run"], ["no-such-run"]),
    Case(
        "database path not writable",
        ["migrate"],
        ["/proc/durably"],
        database="sqlite:////proc/durably/x.db",
        exit_code=-1,
    ),
    Case("newer schema", ["runs", "list"], ["newer"], database="newer", exit_code=-1),
    Case("corrupt database", ["runs", "list"], ["corrupt"], database="corrupt", exit_code=-1),
]


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for suffix in ("", "-wal"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with one completed run, checkpointed into the main file (no WAL left)."""
    folder = tmp_path_factory.mktemp("bad-input")
    db = folder / "base.db"

    async def build() -> None:
        async with create_durably(f"sqlite:///{db}", polling_interval=0.05).register(
            [chain_job, tick_job]
        ) as d:
            os.environ.setdefault("CHAOS_EFFECTS", str(folder / "effects.log"))
            await d.jobs.chain.trigger_and_wait({"steps": 1, "step_seconds": 0}, timeout=10)

    asyncio.run(build())
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line_and_changes_nothing(case: Case, prepared: Path, tmp_path: Path) -> None:
    db = tmp_path / "db.db"
    db.write_bytes(prepared.read_bytes())
    url = f"sqlite:///{db}"
    if case.database == "newer":
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA user_version = 999")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    elif case.database == "corrupt":
        db.write_bytes(b"this is not a database, just text that fills a page " * 100)
    elif case.database is not None:
        url = case.database
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(case.schedules if case.schedules is not None else GOOD)
    before = _digest(db)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "durably_sched.cli",
            "--database",
            url,
            "--jobs",
            "chaos_jobs",
            "--schedules",
            str(schedules),
            *case.args,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}", "CHAOS_EFFECTS": str(tmp_path / "fx")},
        timeout=30,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    for fragment in case.expect:
        assert fragment in lines[0], (fragment, lines[0])
    if case.exit_code == -1:
        assert proc.returncode != 0
    else:
        assert proc.returncode == case.exit_code, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert _digest(db) == before, "the database changed"
    assert not (tmp_path / "durably.db").exists()
