"""``many-steps``: ``count`` small checkpointed steps with progress after each.

Useful to watch progress and to see a run resume after its last completed step when the process is
killed midway. Each step takes ``step_seconds`` (default 0: the steps are instant), so::

    durably-sched trigger many-steps --input '{"count": 20, "step_seconds": 0.25}' --wait

shows a progress bar for about 5 seconds.
"""

from __future__ import annotations

import hashlib
import time

from pydantic import BaseModel, ConfigDict, Field

from durably_sched import Step, define_job


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not a silent default

    count: int = Field(default=20, ge=0, le=10_000, description="How many steps.")
    step_seconds: float = Field(default=0.0, ge=0, le=60, description="How long each step takes.")


class BatchOut(BaseModel):
    steps: int
    digest: str


async def many_steps(step: Step, payload: BatchIn) -> BatchOut:
    digest = ""
    for i in range(payload.count):

        def work(i: int = i, previous: str = digest) -> str:
            if payload.step_seconds:
                time.sleep(payload.step_seconds)
            return hashlib.sha256(f"{previous}:{i}".encode()).hexdigest()[:16]

        digest = await step.run(f"item-{i}", work)
        await step.progress(i + 1, payload.count, f"item {i + 1}")
    step.log.info("all steps done", steps=payload.count)
    return BatchOut(steps=payload.count, digest=digest)


many_steps_job = define_job(
    name="many-steps",
    input=BatchIn,
    output=BatchOut,
    run=many_steps,
    description="N small checkpointed steps with progress after each.",
)
