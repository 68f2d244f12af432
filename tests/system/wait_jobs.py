"""Jobs for the durable-wait system tests, loaded by `durably-sched serve --jobs wait_jobs`.

Side effects go to the file named by $CHAOS_EFFECTS (``chaos_jobs.record``: one fsynced line each), so
a test can count what really ran across kill -9: ``<pid> <run_id> <step> done``.
"""

from __future__ import annotations

import os
from typing import Any

from chaos_jobs import record  # type: ignore[import-not-found]

from durably_sched import Step, define_job


async def sleeper(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    """A step, a durable sleep, a step."""
    await step.run("before", lambda: record(step.run_id, "before", "done"))
    await step.sleep("nap", float(payload.get("seconds", 2)))
    await step.run("after", lambda: record(step.run_id, "after", "done"))
    return {"pid": os.getpid()}


async def approval(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    """A step, a wait for an event, a step."""
    await step.run("report", lambda: record(step.run_id, "report", "done"))
    decision = await step.wait_for_event("approval", payload["key"], timeout="1h")
    await step.run("publish", lambda: record(step.run_id, "publish", "done"))
    return {"decision": decision}


async def child(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    await step.run("work", lambda: record(step.run_id, "child", "done"))
    return {"n": payload["n"]}


async def parent(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    """Starts its children with run_job; on replay none is started again (their keys)."""
    import asyncio

    outs = await asyncio.gather(*(step.run_job(f"child-{n}", "child", {"n": n}) for n in range(payload["n"])))
    await step.run("sum", lambda: record(step.run_id, "parent-sum", "done"))
    return {"sum": sum(o["n"] for o in outs)}


sleeper_job = define_job(name="sleeper", run=sleeper)
approval_job = define_job(name="approval", run=approval)
child_job = define_job(name="child", run=child)
parent_job = define_job(name="parent", run=parent)
