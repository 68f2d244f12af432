"""The job of bench/scale.py's serves (``--jobs bench.scale_jobs``): one checkpointed no-op step."""

from __future__ import annotations

from typing import Any

from durably_sched import Step, define_job


async def _noop() -> None:
    return None


async def _tick(step: Step, _payload: dict[str, Any]) -> dict[str, Any]:
    await step.run("noop", _noop)
    return {}


tick = define_job(name="tick", run=_tick)
