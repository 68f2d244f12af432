"""``Step``: what a job function receives. Checkpointed steps, progress and logs."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ._step_threads import SyncSteps
from .codec import encode_json_value
from .errors import LeaseLostError, RunCancelledSignal, StepError
from .events import LogWriteEvent, RunProgressEvent, StepCompleteEvent, StepFailEvent, StepStartEvent
from .store.base import Checkpoint, NewLog, Progress, RunRecord, WriteResult

if TYPE_CHECKING:
    from .events import EventEmitter
    from .store.base import Store

T = TypeVar("T")
run_log = logging.getLogger("durably_sched.run")
LOG_FLUSH_DELAY = 0.25


class RunContext:
    """The worker's state for one claimed run (one generation of it)."""

    def __init__(
        self,
        run: RunRecord,
        store: Store,
        events: EventEmitter,
        completed: dict[str, str],
    ) -> None:
        self.run = run
        self.run_id = run.id
        self.generation = run.generation
        self.store = store
        self.events = events
        self.completed = completed
        self.used_names: set[str] = set()
        self.next_index = len(completed)
        self.pending_logs: list[NewLog] = []
        self.cancelled = False
        self.lost = False
        self.current_step: str | None = None
        self.failed_step: str | None = None
        self.sync_steps = SyncSteps()  # runs sync step functions off the loop thread
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self.log_extra: dict[str, Any] = {"run_id": run.id, "job": run.job_name}
        if "schedule" in run.labels:
            self.log_extra["schedule"] = run.labels["schedule"]
            self.log_extra["scheduled_for"] = run.labels.get("scheduled_for")

    def take_logs(self) -> list[NewLog]:
        logs, self.pending_logs = self.pending_logs, []
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        return logs

    def observe(self, result: WriteResult) -> None:
        if result == "lost":
            self.lost = True
            raise LeaseLostError(self.run_id)
        if result == "cancelled":
            self.cancelled = True

    def ensure_active(self) -> None:
        if self.lost:
            raise LeaseLostError(self.run_id)
        if self.cancelled:
            raise RunCancelledSignal(self.run_id)

    def schedule_log_flush(self) -> None:
        if self._flush_handle is None and (self._flush_task is None or self._flush_task.done()):
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(LOG_FLUSH_DELAY, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_handle = None
        logs = self.take_logs()
        if logs and not self.lost:
            self._flush_task = asyncio.get_running_loop().create_task(self._flush(logs))

    async def _flush(self, logs: list[NewLog]) -> None:
        try:
            result = await self.store.append_logs(self.run_id, self.generation, logs)
        except Exception as exc:  # logs are best effort between steps; the next write retries them
            run_log.warning("could not store logs of run %s: %s", self.run_id, exc)
            self.pending_logs[:0] = logs
            return
        if result == "lost":
            self.lost = True
        elif result == "cancelled":
            self.cancelled = True

    async def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._flush_task is not None and not self._flush_task.done():
            await asyncio.gather(self._flush_task, return_exceptions=True)


class StepLogger:
    """``step.log.info("message", key=value)``: stored with the run and emitted as ``log:write``."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx

    def _write(self, level: str, message: str, data: dict[str, Any]) -> None:
        ctx = self._ctx
        if ctx.lost:
            return
        try:
            _, clean = encode_json_value(data)
        except StepError:
            clean = {k: repr(v) for k, v in data.items()}
        ctx.pending_logs.append(
            NewLog(
                level=level,
                message=str(message),
                step_name=ctx.current_step,
                data=clean,
                created_at=datetime.now(UTC),
            )
        )
        ctx.schedule_log_flush()
        py_level = logging.getLevelName(level.upper())
        if isinstance(py_level, int) and run_log.isEnabledFor(py_level):
            run_log.log(
                py_level, "%s", message, extra={**ctx.log_extra, "step": ctx.current_step, "data": clean}
            )
        if ctx.events.wants("log:write"):
            ctx.events.emit(
                LogWriteEvent(
                    run_id=ctx.run_id,
                    job_name=ctx.run.job_name,
                    labels=ctx.run.labels,
                    step_name=ctx.current_step,
                    level=level,
                    message=str(message),
                    data=clean,
                )
            )

    def debug(self, message: str, **data: Any) -> None:
        self._write("debug", message, data)

    def info(self, message: str, **data: Any) -> None:
        self._write("info", message, data)

    def warning(self, message: str, **data: Any) -> None:
        self._write("warning", message, data)

    warn = warning

    def error(self, message: str, **data: Any) -> None:
        self._write("error", message, data)


class Step:
    """Handed to a job's ``run`` function. Every ``run`` is a checkpoint: on resume it replays."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx
        self.log = StepLogger(ctx)

    @property
    def run_id(self) -> str:
        return self._ctx.run_id

    @property
    def job_name(self) -> str:
        return self._ctx.run.job_name

    @property
    def attempt(self) -> int:
        """1 on the first claim of the run, 2 after a resume or retry, and so on."""
        return self._ctx.run.attempt

    @property
    def labels(self) -> dict[str, str]:
        return dict(self._ctx.run.labels)

    async def run(self, name: str, fn: Callable[[], T | Awaitable[T]]) -> Any:
        """Run ``fn`` once and checkpoint its result; on replay return the stored result.

        ``fn`` may be sync (run on a step thread, never on the event loop's; see _step_threads) or
        async. The returned value is the decoded JSON form
        of the result, the same on first execution and on replay.
        """
        ctx = self._ctx
        if not isinstance(name, str) or not name:
            raise StepError("step name must be a non-empty string")
        if name in ctx.used_names:
            raise StepError(
                f"step name '{name}' is used twice in run {ctx.run_id}; step names must be unique"
            )
        ctx.used_names.add(name)
        stored = ctx.completed.get(name)
        if stored is not None:
            return json.loads(stored)
        ctx.ensure_active()
        index = ctx.next_index
        ctx.next_index += 1
        events = ctx.events
        if events.wants("step:start"):
            events.emit(
                StepStartEvent(
                    run_id=ctx.run_id,
                    job_name=ctx.run.job_name,
                    labels=ctx.run.labels,
                    step_name=name,
                    step_index=index,
                )
            )
        started_wall = datetime.now(UTC)
        started = time.perf_counter()
        ctx.current_step = name
        try:
            if inspect.iscoroutinefunction(fn):
                result: Any = await fn()
            else:
                result = await ctx.sync_steps.run(fn)
            if inspect.isawaitable(result):
                result = await result
            try:
                text, value = encode_json_value(result)
            except StepError as exc:
                raise StepError(f"step '{name}' returned {type(result).__name__}, which {exc}") from None
        except Exception as exc:
            ctx.failed_step = name
            if events.wants("step:fail"):
                events.emit(
                    StepFailEvent(
                        run_id=ctx.run_id,
                        job_name=ctx.run.job_name,
                        labels=ctx.run.labels,
                        step_name=name,
                        step_index=index,
                        error=f"{type(exc).__name__}: {exc}",
                        duration=time.perf_counter() - started,
                    )
                )
            raise
        finally:
            ctx.current_step = None
        duration = time.perf_counter() - started
        result_state = await ctx.store.checkpoint(
            Checkpoint(
                run_id=ctx.run_id,
                generation=ctx.generation,
                index=index,
                name=name,
                output_json=text,
                started_at=started_wall,
                completed_at=datetime.now(UTC),
                logs=ctx.take_logs(),
            )
        )
        ctx.observe(result_state)
        ctx.completed[name] = text
        if events.wants("step:complete"):
            events.emit(
                StepCompleteEvent(
                    run_id=ctx.run_id,
                    job_name=ctx.run.job_name,
                    labels=ctx.run.labels,
                    step_name=name,
                    step_index=index,
                    output=value,
                    duration=duration,
                )
            )
        return value

    async def progress(self, current: int, total: int | None = None, message: str | None = None) -> None:
        """Report progress; stored with the run (other processes can show it) and emitted."""
        ctx = self._ctx
        progress = Progress(
            current=int(current), total=None if total is None else int(total), message=message
        )
        result = await ctx.store.set_progress(ctx.run_id, ctx.generation, progress, ctx.take_logs())
        ctx.observe(result)
        if ctx.events.wants("run:progress"):
            ctx.events.emit(
                RunProgressEvent(
                    run_id=ctx.run_id, job_name=ctx.run.job_name, labels=ctx.run.labels, progress=progress
                )
            )
