"""durably-sched's log lines inside a host app (the lifespan of durably_sched.web).

What users rely on: a FastAPI or Starlette app run by uvicorn (which configures its own loggers
only) shows durably-sched's lines about its runs on stderr; an app that configured logging itself,
and `serve`, get each line once, never twice; the app's logging is as it was after shut-down.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from durably_sched import Step, create_durably, define_job
from durably_sched.ops.logging import configure_logging
from durably_sched.web import lifespan


async def greet(step: Step, payload: dict) -> dict:
    return {"said": await step.run("say", lambda: "hello")}


greet_job = define_job(name="greet", run=greet)
COMPLETED = re.compile(r"^\S+ \S+ INFO  greet ([0-9a-f]{8}): run completed in ", re.MULTILINE)


@contextlib.contextmanager
def bare_logging() -> Iterator[logging.Logger]:
    """Logging as uvicorn leaves it for everything but its own loggers: no handler on the root
    logger (pytest's capture handlers, added for each test phase, are taken off and put back)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


async def run_one_job_in_lifespan(tmp_path: Path, *, configured: bool = False, log: bool = True) -> str:
    durably = create_durably(f"sqlite:///{tmp_path / 'app.db'}").register([greet_job])
    with bare_logging():
        if configured:
            configure_logging("text", "INFO")  # what serve does (a handler on the root logger)
        async with lifespan(durably, log=log)():
            run = await durably.jobs.greet.trigger_and_wait({}, timeout=30)
    return run.id


async def test_the_lifespan_shows_its_log_lines_where_nothing_else_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = await run_one_job_in_lifespan(tmp_path)
    err = capsys.readouterr().err
    assert COMPLETED.findall(err) == [run_id[:8]], err
    own = logging.getLogger("durably_sched")
    assert own.handlers == [] and own.level == logging.NOTSET, "shut-down leaves logging as it was"


async def test_no_line_is_doubled_where_logging_is_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = await run_one_job_in_lifespan(tmp_path, configured=True)
    err = capsys.readouterr().err
    assert COMPLETED.findall(err) == [run_id[:8]], err
    assert logging.getLogger("durably_sched").handlers == []


async def test_log_false_leaves_logging_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await run_one_job_in_lifespan(tmp_path, log=False)
    assert "run completed" not in capsys.readouterr().err
