"""`trigger --wait` and `runs watch` follow a run through its stream: the view reads the run again at
each transition, and must not stop at a re-read that shows the run finished while the stream still
holds the lines that came before its end (a run of 3 ms in another process: the stream's first
delivery had only its start; a CI failure printed no log line)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from datetime import UTC, datetime
from typing import Any

from rich.progress import Progress

from durably_sched.cli._attempts import AttemptLines
from durably_sched.cli._wait import DRAIN, _View
from durably_sched.events import Event, RunCompleteEvent, RunStartEvent
from durably_sched.store.base import RunRecord
from durably_sched.stream.reader import StoredLogWriteEvent

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
PENDING = RunRecord(
    "r1", "counter", "pending", {}, None, None, None, None, None, {}, 0, None, None, None, 0, 0,
    NOW, None, None, NOW,
)  # fmt: skip
DONE = dataclasses.replace(PENDING, status="completed", output={"total": 6}, attempt=1, completed_at=NOW)
SCOPE: dict[str, Any] = {"run_id": "r1", "job_name": "counter", "labels": {}}


class Durably:
    """What the view asks of the facade: the run (finished by the first read again) and its attempts."""

    def __init__(self) -> None:
        self.reads = 0

    async def get_run(self, run_id: str) -> RunRecord:
        self.reads += 1
        return DONE

    async def get_attempts(self, run_id: str, after: int = 0) -> list[Any]:
        return []

    async def waiting_reason(self, record: RunRecord) -> str | None:
        return None


class Subscription:
    """Deliveries of the stream, one per ``__anext__`` (then whatever is queued with it)."""

    def __init__(self, deliveries: list[list[Event]]) -> None:
        self.deliveries = deque(deliveries)
        self.queued: list[Event] = []

    async def __anext__(self) -> Event:
        if not self.deliveries:
            await asyncio.sleep(3600)
        first, *self.queued = self.deliveries.popleft()
        return first

    def ready_now(self) -> list[Event]:
        out, self.queued = self.queued, []
        return out


def follow(record: RunRecord, deliveries: list[list[Event]]) -> tuple[list[str], Any, float]:
    lines: list[str] = []
    durably = Durably()

    async def run() -> tuple[Any, float]:
        view = _View(durably, record, True, False, lines.append, AttemptLines(durably, 3))  # type: ignore[arg-type]
        progress = Progress(disable=True)
        task = progress.add_task("x", total=None, status="", message="")
        started = asyncio.get_running_loop().time()
        sub: Any = Subscription(deliveries)
        followed = await view.follow(sub, progress, task, asyncio.Event(), 30.0)
        return followed, asyncio.get_running_loop().time() - started

    followed, took = asyncio.run(run())
    return lines, followed, took


def log(message: str, log_id: int) -> StoredLogWriteEvent:
    return StoredLogWriteEvent(**SCOPE, message=message, log_id=log_id, created_at=NOW)


def test_the_lines_before_the_end_are_printed_when_the_run_finished_before_they_came() -> None:
    lines, followed, took = follow(
        PENDING,
        [
            [RunStartEvent(**SCOPE)],  # the view reads the run again here: it has finished
            [log("counted 1", 1), log("counted 2", 2), RunCompleteEvent(**SCOPE, output={"total": 6})],
        ],
    )
    assert [line.split()[-2:] for line in lines] == [["counted", "1"], ["counted", "2"]], lines
    assert followed.reason == "finished" and followed.record.output == {"total": 6}
    assert took < 2  # it returned at the end, not after waiting for it


def test_a_run_finished_before_the_wait_began_returns_at_once() -> None:
    lines, followed, took = follow(DONE, [])
    assert lines == [] and followed.reason == "finished" and took < 1


def test_a_stream_that_never_delivers_the_end_is_not_waited_for_past_the_drain() -> None:
    _, followed, took = follow(PENDING, [[RunStartEvent(**SCOPE)]])
    assert followed.reason == "finished" and DRAIN - 0.5 <= took < 25  # not the 30 s timeout
