"""durably-sched inside an existing FastAPI app: durable jobs, a schedule and the dashboard.

Install the extra and run it from the repository root::

    .venv/bin/pip install -e '.[fastapi]'
    .venv/bin/uvicorn examples.fastapi_app:app

then open http://127.0.0.1:8000/durably/ (the dashboard) or ``curl -X POST
'127.0.0.1:8000/reports?days=3'``; durably-sched's lines about the run appear among uvicorn's.
Set ``DURABLY_HTTP_TOKEN`` to require a token for the dashboard and its API.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from durably_sched import Step, create_durably, define_job
from durably_sched.schedule.config import parse_schedules
from durably_sched.web import create_app, lifespan


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not a silent default
    days: int = Field(default=1, ge=1, le=365)


class ReportOut(BaseModel):
    lines: int


async def build_report(step: Step, payload: ReportIn) -> ReportOut:
    total = 0
    for day in range(payload.days):
        total += await step.run(f"day-{day}", lambda day=day: 10 + day)  # checkpointed per day
        await step.progress(day + 1, payload.days)
    step.log.info("report built", lines=total)
    return ReportOut(lines=total)


report_job = define_job(name="report", input=ReportIn, output=ReportOut, run=build_report)

durably = create_durably(os.environ.get("DURABLY_DATABASE_URL", "sqlite:///fastapi-example.db"))
durably.register({"report": report_job})
schedules = parse_schedules(
    """
schedules:
  daily-report:
    cron: "0 6 * * *"
    job: report
    input: {days: 1}
""",
    job_inputs={"report": ReportIn},
)

# The worker and the scheduler run for the app's lifetime; the dashboard lives under /durably.
durable = lifespan(durably, schedules=schedules)
app = FastAPI(lifespan=durable)
app.mount(
    "/durably",
    create_app(durably, schedules=schedules, scheduler=durable, token=os.environ.get("DURABLY_HTTP_TOKEN")),
)


@app.post("/reports")
async def request_report(days: int = 1) -> dict[str, str]:
    """An ordinary endpoint of the app that starts a durable job."""
    run = await durably.jobs.report.trigger({"days": days})
    return {"run_id": run.id}
