"""``Step``: what a job function receives. Checkpointed steps, progress and logs."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import threading
import time
import types
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pydantic_core

from ._bounds import (
    bad_text_at,
    check_value_size,
    clean_text,
    clip_log,
    clip_text,
    text_problem,
    utf8_size,
    valid_text,
)
from ._ratelimit import RateLimitedLog
from ._step_threads import SyncSteps
from ._tracebacks import error_line, format_traceback
from .cancel import CancelReason, CancelToken
from .clock import Clock, SystemClock
from .codec import encode_json_value
from .errors import InputValidationError, StepCancelled, StepError, StepTimeoutError
from .events import (
    LogWriteEvent,
    RunProgressEvent,
    StepCancelEvent,
    StepCompleteEvent,
    StepFailEvent,
    StepStartEvent,
    run_scope,
)
from .execution.deadline import Deadline
from .limits import Limits
from .retry import RetryPolicyError, timeout_seconds
from .step_waits import ChildBatches, ChildStarter, WaitSteps
from .store.base import Checkpoint, NewLog, Progress, RunRecord, WriteResult
from .store.records import WaitState

if TYPE_CHECKING:
    from .events import EventEmitter
    from .store.base import Store

T = TypeVar("T")


class ValidatesOutput(Protocol):
    """What :meth:`RunContext.output` needs of a job (``jobs.JobDefinition`` is one)."""

    @property
    def name(self) -> str: ...

    def validate_output(self, result: Any) -> tuple[Any, Any]: ...


run_log = logging.getLogger("durably_sched.run")
LOG_FLUSH_DELAY = 0.25
MAX_PENDING_LOGS = 1000
"""Log lines a run keeps while they cannot be stored (a database outage); older ones are dropped."""
_warnings = RateLimitedLog(run_log)


class _StopFlag:
    """A flag of RunContext kept in ``_<name>``; setting it true cancels the run's token with
    ``reason``."""

    def __init__(self, reason: CancelReason) -> None:
        self.reason = reason
        self.attr = ""

    def __set_name__(self, owner: type[RunContext], name: str) -> None:
        self.attr = f"_{name}"

    def __get__(self, ctx: RunContext, owner: type[RunContext] | None = None) -> bool:
        value: bool = getattr(ctx, self.attr)
        return value

    def __set__(self, ctx: RunContext, value: bool) -> None:
        setattr(ctx, self.attr, value)
        if value:
            ctx.token.cancel(self.reason)


class RunContext:
    """The worker's state for one claimed run (one generation of it)."""

    def __init__(
        self,
        run: RunRecord,
        store: Store,
        events: EventEmitter,
        completed: dict[str, str],
        limits: Limits | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.run = run
        self.clock: Clock = clock or SystemClock()
        """Decides the run's and its steps' deadlines."""
        self.started = 0.0
        """``time.perf_counter()`` when the attempt's job began (its durations are measured from it)."""
        self.limits = limits or Limits()
        """The size limits on step values, the job's output, log lines and progress messages."""
        self.run_id = run.id
        self.generation = run.generation
        self.store = store
        self.events = events
        self.completed = completed
        self.used_names: set[str] = set()
        self.next_index = len(completed)
        self.pending_logs: list[NewLog] = []
        self.dropped_logs = 0
        self.token = CancelToken()
        """Set when the run must stop: cancelled, lease lost, timed out, or the worker stopping."""
        self._cancelled = False
        self._lost = False
        self.stopping = False
        """The worker is stopping: no new step starts; the run is released at the next one."""
        self.current_step: str | None = None
        self.failed_step: str | None = None
        self.interrupted_step: str | None = None
        """The step that was in flight when the run's task was cancelled (timeout, stop, lease)."""
        self.sync_steps = SyncSteps()  # runs sync step functions off the loop thread
        self.start_child: ChildStarter | None = None
        """Starts a child run (``step.run_job``); set by the worker of a Durably instance."""
        self.children = ChildBatches()
        """The ``step.run_job`` calls in flight, waited for together."""
        self.suspended_on: WaitState | None = None
        """What the run waits for once a durable wait suspended it."""
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_task: asyncio.Task[None] | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop (tests); logs then come from the loop thread only
            self._loop = None
        self._loop_thread = threading.get_ident()
        self.log_extra: dict[str, Any] = {"run_id": run.id, "job": run.job_name}
        if "schedule" in run.labels:
            self.log_extra["schedule"] = run.labels["schedule"]
            self.log_extra["scheduled_for"] = run.labels.get("scheduled_for")

    cancelled = _StopFlag("cancelled")
    lost = _StopFlag("lease-lost")

    def add_log(self, entry: NewLog) -> None:
        """Buffer a log line; past MAX_PENDING_LOGS (the store keeps failing) the oldest is dropped."""
        logs = self.pending_logs
        logs.append(entry)
        if len(logs) > MAX_PENDING_LOGS:
            self._drop(len(logs) - MAX_PENDING_LOGS)

    def _drop(self, count: int) -> None:
        del self.pending_logs[:count]
        self.dropped_logs += count
        _warnings.warning(
            "run %s: dropped %d log lines that could not be stored (kept the newest %d)",
            self.run_id,
            self.dropped_logs,
            MAX_PENDING_LOGS,
            key=f"dropped logs {self.run_id}",
            extra=self.log_extra,
        )

    def take_logs(self) -> list[NewLog]:
        logs, self.pending_logs = self.pending_logs, []
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        return logs

    def output(self, job: ValidatesOutput, result: Any) -> tuple[Any, Any]:
        """The job's output (``job.validate_output``): (value for listeners, stored JSON form),
        valid Unicode (InputValidationError) and within ``limits.step_value``
        (StepValueTooLargeError); neither is retried."""
        value, stored = job.validate_output(result)
        if stored is not None:
            try:
                text = pydantic_core.to_json(stored)
            except (pydantic_core.PydanticSerializationError, ValueError) as exc:
                at = bad_text_at(stored)
                why = text_problem("output", f"job '{job.name}': ", at) if at is not None else str(exc)
                raise InputValidationError(why) from None
            check_value_size(self.limits, len(text), None, job.name)
        return value, stored

    def use_name(self, name: object) -> None:
        """A step's name: a non-empty string, valid Unicode, not used before in this run."""
        if not isinstance(name, str) or not name:
            raise StepError("step name must be a non-empty string")
        if not valid_text(name):
            raise StepError(f"step name {name!r} is not valid Unicode (it holds a lone surrogate)")
        if name in self.used_names:
            raise StepError(
                f"step name '{name}' is used twice in run {self.run_id}; step names must be unique"
            )
        self.used_names.add(name)

    def encode_value(self, name: str, result: Any) -> tuple[str, Any]:
        """A step's result as stored (JSON text) and as returned (decoded), within
        ``limits.step_value``; StepError (never retried) naming the step otherwise."""
        try:
            text, value = encode_json_value(result)
        except StepError as exc:
            raise StepError(f"step '{name}' returned {type(result).__name__}, which {exc}") from None
        check_value_size(self.limits, utf8_size(text), name, self.run.job_name)
        return text, value

    def observe(self, result: WriteResult) -> None:
        if result == "lost":
            self.lost = True
            raise StepCancelled("lease-lost")
        if result == "cancelled":
            self.cancelled = True

    def ensure_held(self) -> None:
        """Raise ``StepCancelled`` unless this holder may still finish the run (not lost, not
        cancelled). The one signal that stops a run's code: the executor decides by its reason."""
        if self._lost:
            raise StepCancelled("lease-lost")
        if self._cancelled:
            raise StepCancelled("cancelled")

    def ensure_active(self) -> None:
        """Raise ``StepCancelled`` unless a new step may start (``ensure_held``, and the worker
        is not stopping)."""
        self.ensure_held()
        if self.stopping:
            raise StepCancelled("stopping")

    def on_loop(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the run's event loop: now when on its thread, else handed over (a sync
        step's function runs on a step thread and may write logs there)."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            call()
        else:
            self._loop.call_soon_threadsafe(call)

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
            _warnings.warning(
                "could not store logs of run %s (keeping them for the next write): %s",
                self.run_id,
                exc,
                key=f"logs {self.run_id} {exc}",
                extra=self.log_extra,
            )
            self.pending_logs[:0] = logs
            if len(self.pending_logs) > MAX_PENDING_LOGS:
                self._drop(len(self.pending_logs) - MAX_PENDING_LOGS)
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
            text, clean = encode_json_value(data)
        except StepError:
            clean = {clean_text(k): clean_text(repr(v)) for k, v in data.items()}
            text = json.dumps(clean, ensure_ascii=False)
        message, clean = clip_log(ctx.limits, str(message), clean, text)
        ctx.add_log(
            NewLog(
                level=level,
                message=message,
                step_name=ctx.current_step,
                data=clean,
                created_at=ctx.clock.now(),
            )
        )
        step_name = ctx.current_step
        py_level = logging.getLevelName(level.upper())
        if isinstance(py_level, int) and run_log.isEnabledFor(py_level):
            run_log.log(py_level, "%s", message, extra={**ctx.log_extra, "step": step_name, "data": clean})
        # The line is buffered already (a checkpoint takes it); its flush timer and its event belong
        # to the loop's thread.
        ctx.on_loop(functools.partial(self._announce, level, message, clean, step_name))

    def _announce(self, level: str, message: str, data: dict[str, Any], step_name: str | None) -> None:
        ctx = self._ctx
        ctx.schedule_log_flush()
        if ctx.events.wants("log:write"):
            ctx.events.emit(
                LogWriteEvent(
                    **run_scope(ctx.run),
                    step_name=step_name,
                    level=level,
                    message=message,
                    data=data,
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


def _takes_token(fn: Callable[..., Any]) -> bool:
    """Whether a step function takes the step's cancel token: exactly one required positional
    parameter (``def work(token)``). ``lambda: ...`` and ``def work(i=i)`` take none."""
    target: Any = fn
    skip = 0
    if type(fn) is types.MethodType:
        target, skip = fn.__func__, 1
    if type(target) is types.FunctionType:
        code = target.__code__
        positional = code.co_argcount - skip
        return positional - len(target.__defaults__ or ()) == 1 and positional >= 1
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(required) == 1


class Step(WaitSteps):
    """Handed to a job's ``run`` function. Every ``run`` is a checkpoint: on resume it replays.

    The durable waits (``sleep``, ``sleep_until``, ``wait_for_event``, ``run_job``) are in
    :mod:`durably_sched.step_waits`."""

    _ctx: RunContext

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
    def failed_attempts(self) -> int:
        """How many earlier attempts of this run failed (0 on the first; counts toward ``Retry``)."""
        return self._ctx.run.failed_attempts

    @property
    def labels(self) -> dict[str, str]:
        return dict(self._ctx.run.labels)

    @property
    def cancel_token(self) -> CancelToken:
        """The run's cancel token (see :mod:`durably_sched.cancel`)."""
        return self._ctx.token

    @property
    def cancelled(self) -> bool:
        """True once the run must stop (cancelled, lease lost, timed out, or the worker stopping)."""
        return self._ctx.token.cancelled

    def check_cancelled(self) -> None:
        """Raise :class:`~durably_sched.errors.StepCancelled` if the run must stop."""
        self._ctx.token.raise_if_cancelled()

    async def run(
        self,
        name: str,
        fn: Callable[[], object] | Callable[[CancelToken], object],
        *,
        timeout: float | timedelta | str | None = None,
    ) -> Any:
        """Run ``fn`` once and checkpoint its result; on replay return the stored result.

        ``fn`` may be sync (run on a step thread, never on the event loop's; see _step_threads) or
        async. The returned value is the decoded JSON form of the result, the same on first
        execution and on replay. A function with one parameter is given the step's
        :class:`~durably_sched.cancel.CancelToken`. ``timeout`` (seconds, a timedelta or "30s"):
        the step fails with ``StepTimeoutError`` when it takes longer (an async step is cancelled;
        a sync one's token is set and its late result is discarded).
        """
        ctx = self._ctx
        ctx.use_name(name)
        stored = ctx.completed.get(name)
        if stored is not None:
            return json.loads(stored)
        limit = _step_limit(name, timeout)
        ctx.ensure_active()
        index = ctx.next_index
        ctx.next_index += 1
        if ctx.events.wants("step:start"):
            ctx.events.emit(StepStartEvent(**_step_fields(ctx, name, index)))
        token: CancelToken | None = None
        call: Callable[[], Any] = fn  # type: ignore[assignment]
        if _takes_token(fn):
            token = CancelToken(ctx.token)
            call = functools.partial(fn, token)  # type: ignore[call-arg]
        started_wall = ctx.clock.now()
        started = time.perf_counter()
        ctx.current_step = name
        try:
            if limit is None:  # the hot path: no extra coroutine
                if inspect.iscoroutinefunction(fn):
                    result: Any = await call()
                else:
                    result = await ctx.sync_steps.run(call)
                if inspect.isawaitable(result):
                    result = await result
            else:
                token = token or CancelToken(ctx.token)
                result = await self._call_with_timeout(name, call, limit, token)
            text, value = ctx.encode_value(name, result)
        except BaseException as exc:
            signal = self._step_ended(name, index, started, exc)
            if signal is not None:
                raise signal from None
            raise
        finally:
            ctx.current_step = None
            if token is not None:
                ctx.token._forget(token)
        return await self._checkpoint(name, index, text, value, started_wall, time.perf_counter() - started)

    async def _checkpoint(
        self, name: str, index: int, text: str, value: Any, started_at: datetime, duration: float
    ) -> Any:
        """Store a step's result (one fenced write, with the logs buffered since the last) and
        say so; the step's value is returned."""
        ctx = self._ctx
        checkpoint = Checkpoint(
            run_id=ctx.run_id,
            generation=ctx.generation,
            index=index,
            name=name,
            output_json=text,
            started_at=started_at,
            completed_at=ctx.clock.now(),
            logs=ctx.take_logs(),
        )
        ctx.observe(await ctx.store.checkpoint(checkpoint))
        ctx.completed[name] = text
        if ctx.events.wants("step:complete"):
            ctx.events.emit(
                StepCompleteEvent(
                    **_step_fields(ctx, name, index),
                    output=value,
                    duration=duration,
                )
            )
        return value

    def _step_ended(self, name: str, index: int, started: float, exc: BaseException) -> BaseException | None:
        """A step that ended without a result: its event, and the signal to raise instead of
        ``exc`` (None: ``exc`` itself). A step that stopped itself raises ``StepCancelled`` with
        the run's reason; the executor decides the run's outcome from it."""
        ctx = self._ctx
        if isinstance(exc, StepCancelled):
            reason = _reason(exc.reason)
            self._cancelled_step(name, index, reason, started)
            return exc if exc.reason == reason else StepCancelled(reason)
        if isinstance(exc, asyncio.CancelledError):
            ctx.interrupted_step = name
            if ctx.token.cancelled:
                self._cancelled_step(name, index, ctx.token.reason or "cancelled", started)
            return None
        if isinstance(exc, Exception):
            ctx.failed_step = name
            if ctx.events.wants("step:fail"):
                ctx.events.emit(
                    StepFailEvent(
                        **_step_fields(ctx, name, index),
                        error=error_line(exc),
                        duration=time.perf_counter() - started,
                        traceback=format_traceback(exc),
                    )
                )
        return None

    async def progress(self, current: int, total: int | None = None, message: str | None = None) -> None:
        """Report progress; stored with the run (other processes can show it) and emitted."""
        ctx = self._ctx
        text = None if message is None else clip_text(str(message), ctx.limits.log_line)
        progress = Progress(current=int(current), total=None if total is None else int(total), message=text)
        result = await ctx.store.set_progress(ctx.run_id, ctx.generation, progress, ctx.take_logs())
        ctx.observe(result)
        if ctx.events.wants("run:progress"):
            ctx.events.emit(RunProgressEvent(**run_scope(ctx.run), progress=progress))

    async def _call(self, call: Callable[[], Any]) -> Any:
        target = call.func if isinstance(call, functools.partial) else call
        if inspect.iscoroutinefunction(target):
            result: Any = await call()
        else:
            result = await self._ctx.sync_steps.run(call)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _call_with_timeout(
        self, name: str, call: Callable[[], Any], limit: float, token: CancelToken
    ) -> Any:
        deadline = Deadline(limit, token, self._ctx.clock)
        try:
            async with deadline:
                return await self._call(call)
        except TimeoutError:
            if deadline.fired:
                raise StepTimeoutError(name, limit) from None
            raise
        except StepCancelled:
            if token.reason == "timeout" and not self._ctx.token.cancelled:
                raise StepTimeoutError(name, limit) from None
            raise

    def _cancelled_step(self, name: str, index: int, reason: CancelReason, started: float) -> None:
        ctx = self._ctx
        if ctx.events.wants("step:cancel"):
            ctx.events.emit(
                StepCancelEvent(
                    **_step_fields(ctx, name, index),
                    reason=reason,
                    duration=time.perf_counter() - started,
                )
            )


def _step_fields(ctx: RunContext, name: str, index: int) -> dict[str, Any]:
    """The fields every step event carries: the run's, the step's name and its index."""
    return {**run_scope(ctx.run), "step_name": name, "step_index": index}


def _step_limit(name: str, timeout: float | timedelta | str | None) -> float | None:
    try:
        return timeout_seconds(timeout)
    except RetryPolicyError as exc:
        raise StepError(f"step '{name}': {exc}") from None


def _reason(text: str) -> CancelReason:
    if text in ("cancelled", "lease-lost", "timeout", "stopping"):
        return text  # type: ignore[return-value]
    return "cancelled"
