"""A stop that hangs says where: ``report_while_slow`` names what is still being waited for and the
innermost coroutine each pending task is suspended in (serve's shutdown watchdog)."""

from __future__ import annotations

import asyncio

from durably_sched._tasks import report_while_slow, stop_task, where_waiting
from tests.helpers import until


async def _lease_release(gate: asyncio.Event) -> None:
    await gate.wait()


async def _worker_stop(gate: asyncio.Event) -> None:
    await _lease_release(gate)


async def test_a_slow_stop_reports_its_stage_and_where_each_task_waits() -> None:
    gate = asyncio.Event()
    stuck = asyncio.get_running_loop().create_task(_worker_stop(gate), name="durably-worker")
    reports: list[str] = []
    stage = "the worker"
    watchdog = asyncio.get_running_loop().create_task(
        report_while_slow(lambda: f"still stopping {stage}", 0.01, reports.append)
    )
    await until(lambda: len(reports) >= 2, what="two reports")
    assert reports[0].startswith("still stopping the worker; ")
    # The innermost await outside asyncio, then asyncio's own.
    assert "durably-worker: _lease_release (test_tasks.py:" in reports[0], reports[0]
    assert where_waiting(stuck).startswith("durably-worker: _lease_release (test_tasks.py:")
    assert "-> wait (locks.py:" in where_waiting(stuck)
    stage = "the web server"
    count = len(reports)
    await until(lambda: len(reports) > count, what="a report after the stage changed")
    assert reports[-1].startswith("still stopping the web server; ")  # read again at every report
    gate.set()
    await stuck
    await stop_task(watchdog)
    assert watchdog.cancelled()
    settled = len(reports)
    await asyncio.sleep(0.03)
    assert len(reports) == settled  # nothing after it was stopped
