"""One application process of the APScheduler bridge's system tests.

Usage: python apscheduler_proc.py DATABASE_URL asyncio|thread REPORT_FILE

An APScheduler (AsyncIOScheduler, or BackgroundScheduler for ``thread``) with a DurablyExecutor fires
the ``tick`` job of chaos_jobs every second (APScheduler job id ``every-second``), and the process's
own durably-sched worker runs the durable runs. REPORT_FILE gets one JSON object per line:
``{"ready": pid}`` once the scheduler runs, then one per APScheduler outcome of a fire time
(``executed`` with the run id and disposition, ``missed``, ``error``). SIGTERM stops the scheduler,
waits for the triggers in flight, closes the Durably and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from datetime import UTC
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from chaos_jobs import tick_job  # type: ignore[import-not-found]

from durably_sched import Durably, create_durably
from durably_sched.integrations.apscheduler import DurablyExecutor, add_durable_job

JOB_ID = "every-second"
MASK = EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_ERROR
_NAMES = {EVENT_JOB_EXECUTED: "executed", EVENT_JOB_MISSED: "missed", EVENT_JOB_ERROR: "error"}


class Report:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        with self.lock, open(self.path, "a") as out:
            out.write(json.dumps(record) + "\n")

    def __call__(self, event: Any) -> None:
        record: dict[str, Any] = {
            "event": _NAMES[event.code],
            "job": event.job_id,
            "fire_time": event.scheduled_run_time.astimezone(UTC).isoformat(),
        }
        if event.code == EVENT_JOB_EXECUTED:
            record.update(run_id=event.retval.id, disposition=event.retval.disposition)
        if event.code == EVENT_JOB_ERROR:
            record["error"] = str(event.exception)
        self.write(record)


def make_durably(url: str) -> Durably:
    return create_durably(
        url, polling_interval=0.2, heartbeat_interval=1.0, stale_threshold=10.0, max_concurrent_runs=2
    ).register([tick_job])


def add_job(scheduler: Any) -> None:
    add_durable_job(
        scheduler,
        tick_job,
        CronTrigger(second="*", timezone=UTC),
        id=JOB_ID,
        input={"step_seconds": 0.01},
        misfire_grace_time=60,  # a loaded test machine may be late; the test checks keys, not lateness
    )


async def run_asyncio(url: str, report: Report) -> None:
    async with make_durably(url) as durably:
        executor = DurablyExecutor(durably)
        scheduler = AsyncIOScheduler(executors={"durably": executor}, timezone=UTC)
        add_job(scheduler)
        scheduler.add_listener(report, MASK)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        scheduler.start()
        report.write({"ready": os.getpid()})
        await stop.wait()
        scheduler.shutdown()
        await executor.drain()


def run_thread(url: str, report: Report) -> None:
    executor = DurablyExecutor(make_durably(url))
    scheduler = BackgroundScheduler(executors={"durably": executor}, timezone=UTC)
    add_job(scheduler)
    scheduler.add_listener(report, MASK)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scheduler.start()
    report.write({"ready": os.getpid()})
    stop.wait()
    scheduler.shutdown(wait=True)


if __name__ == "__main__":
    database, mode, report_file = sys.argv[1:4]
    if mode == "asyncio":
        asyncio.run(run_asyncio(database, Report(report_file)))
    else:
        run_thread(database, Report(report_file))
