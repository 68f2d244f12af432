"""The run stream across real processes (issue 21), on SQLite and PostgreSQL: a run executed by a
`durably-sched serve` subprocess, watched by ``subscribe()`` in this process, streams its start, its
steps, its log lines, a failed step with its retry, a durable sleep and its completion, in the order
the executing process's own emitter saw them (``step:start`` stays in process: it writes nothing).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durably_sched import Durably, create_durably
from durably_sched.events import Event

from .serve_procs import ROOT, wait_for

pytestmark = pytest.mark.system

JOBS = """
from durably_sched import Retry, Step, define_job


async def story(step: Step, payload: dict) -> dict:
    first = await step.run("fetch", lambda: 1)
    step.log.info("fetched", value=first)
    await step.progress(1, 3, "fetched")

    def render() -> int:
        if step.attempt == 1:
            raise RuntimeError("render fails on the first attempt")
        return 2

    second = await step.run("render", render)
    await step.sleep("cool-down", 0.2)
    third = await step.run("publish", lambda: 3)
    step.log.warning("published", total=first + second + third)
    return {"total": first + second + third}


story_job = define_job(name="story", run=story, retry=Retry(max_attempts=3, backoff=0.1, jitter=0))
"""

IN_PROCESS_ONLY = {"step:start", "run:leased", "run:lease-renewed", "run:trigger", "run:progress"}
"""Left out of the comparison: in-process events the stream does not carry (a step's start, the
lease), the trigger (before the subscription), and progress (the stream samples it)."""
STREAM_ONLY = {"run:woken", "run:progress"}
"""The stream's per-run wake-up (in process, ``run:wake`` counts the runs a worker woke)."""


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "stream_jobs.py").write_text(JOBS)
    (tmp_path / "schedules.yaml").write_text("schedules: {}\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("stream_jobs", None)


def make(database: str, **options: Any) -> Durably:
    from stream_jobs import story_job  # type: ignore[import-not-found]

    return create_durably(database, polling_interval=0.05, **options).register([story_job])


async def in_process_types(database: str) -> list[str]:
    """What this process's own emitter says of a run it executes itself."""
    durably = make(database)
    seen: list[Event] = []
    durably.on("*", seen.append)
    await durably.migrate()
    await durably.start()
    try:
        run = await durably.trigger("story")
        assert (await durably.wait_for_run(run.id, timeout=30)).status == "completed"
    finally:
        await durably.close()
    return [e.type for e in seen if getattr(e, "run_id", None) == run.id and e.type not in IN_PROCESS_ONLY]


def test_a_run_on_a_serve_streams_every_event_in_order_to_another_process(
    database: str, jobs_dir: Path
) -> None:
    expected = asyncio.run(in_process_types(database))
    assert expected[:4] == ["run:start", "step:complete", "log:write", "step:fail"]
    serve = subprocess.Popen(
        [sys.executable, "-m", "durably_sched.cli", "--database", database, "--jobs", "stream_jobs",
         "--schedules", str(jobs_dir / "schedules.yaml"), "serve", "--no-scheduler",
         "--polling-interval", "0.05"],
        stdout=(jobs_dir / "serve.log").open("wb"), stderr=subprocess.STDOUT, cwd=jobs_dir,
        env={**os.environ, "PYTHONPATH": f"{jobs_dir}{os.pathsep}{ROOT}"},
    )  # fmt: skip
    try:
        wait_for(lambda: "serve started" in (jobs_dir / "serve.log").read_text(), 30, "serve started")
        events = asyncio.run(watch(database))
    finally:
        serve.terminate()
        serve.wait(30)
    types = [e.type for e in events]
    assert [t for t in types if t not in STREAM_ONLY] == expected, "\n".join(map(str, [types, expected]))
    assert types.count("run:start") == 3 and "run:woken" in types  # three attempts: retry, sleep
    failed = next(e for e in events if e.type == "step:fail")
    assert (getattr(failed, "step_name"), getattr(failed, "step_index")) == ("render", 1)  # noqa: B009
    retry = next(e for e in events if e.type == "run:retry-scheduled")
    assert "render fails on the first attempt" in getattr(retry, "error")  # noqa: B009
    logs = [getattr(e, "message") for e in events if e.type == "log:write"]  # noqa: B009
    assert logs == ["fetched"] * 3 + ["published"]  # code outside steps runs again in each attempt
    steps = [getattr(e, "step_name") for e in events if e.type == "step:complete"]  # noqa: B009
    assert steps == ["fetch", "render", "cool-down", "publish"]  # a sleep is a step too
    assert events[-1].type == "run:complete" and getattr(events[-1], "output") == {"total": 6}  # noqa: B009


async def watch(database: str) -> list[Event]:
    """Trigger a run from this process (no worker here) and read its stream to the end."""
    durably = make(database)
    await durably.start(worker=False)
    try:
        run = await durably.trigger("story")
        subscription = durably.subscribe(run.id, since=run.record, after_log_id=0)
        return await asyncio.wait_for(_all(subscription), 60)
    finally:
        await durably.close()


async def _all(subscription: Any) -> list[Event]:
    return [event async for event in subscription]
