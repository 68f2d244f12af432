"""Jobs for the chaos tests, loaded by `durably-sched serve --jobs chaos_jobs`.

Side effects go to the file named by $CHAOS_EFFECTS, one line each, written with O_APPEND and
fsync, so a test can count what really ran even across kill -9:
``<pid> <run_id> <step> start|done``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pydantic import BaseModel

from durably_sched import Step, define_job


def record(*parts: object) -> None:
    line = " ".join(str(p) for p in (os.getpid(), *parts)) + "\n"
    fd = os.open(os.environ["CHAOS_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def tick(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    """The scheduled job of the churn test: two short steps."""

    def work(name: str) -> int:
        record(step.run_id, name, "start")
        time.sleep(float(payload.get("step_seconds", 0.05)))
        record(step.run_id, name, "done")
        return os.getpid()

    first = await step.run("first", lambda: work("first"))
    second = await step.run("second", lambda: work("second"))
    return {"pids": [first, second]}


async def chain(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    """A multi-step job: each step records start/done and returns the pid that ran it."""
    pids = []
    for i in range(int(payload["steps"])):

        def work(i: int = i) -> int:
            record(step.run_id, f"step-{i}", "start")
            time.sleep(float(payload.get("step_seconds", 0.3)))
            record(step.run_id, f"step-{i}", "done")
            return os.getpid()

        pids.append(await step.run(f"step-{i}", work))
        step.log.info("step finished", index=i, pid=os.getpid())
        await step.progress(i + 1, int(payload["steps"]))
    return {"pids": pids, "finished_by": os.getpid()}


tick_job = define_job(name="tick", run=tick)
chain_job = define_job(name="chain", run=chain)


class TypedIn(BaseModel):
    count: int


async def typed(step: Step, payload: TypedIn) -> dict[str, Any]:
    return {"count": payload.count}


typed_job = define_job(name="typed", input=TypedIn, run=typed)
