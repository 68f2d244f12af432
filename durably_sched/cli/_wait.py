"""Following a run from the database: a live progress bar, its logs, Ctrl-C, a timeout.

Everything comes from the run's stream as the database records it (a subscription of the run
feed, ``durably_sched.stream``: its log lines, progress and transitions; the run is read again at
each transition), so it works the same whether the run executes in a ``serve`` process elsewhere
or in this process (``trigger --here``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from .._tracebacks import user_frame
from ..attempt_views import retry_budget
from ..durably import Durably
from ..events import Event, RunProgressEvent
from ..store.base import RunRecord
from ..stream import RunSubscription, StoredLogWriteEvent
from ..stream.reader import TERMINAL_TYPES
from ..wait_views import waiting_for_text
from ._attempts import AttemptLines
from ._base import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_TIMEOUT, SECONDS, CliError, one_line
from ._output import console, echo_json, log_line, run_duration, run_json, seconds_text, show_time

POLL_INTERVAL = 0.15
"""Longest wait for the run's next events before the display (time, waiting reason) is redrawn."""
EXPLAIN_EVERY = 1.0
"""How often a pending run's reason for waiting is looked up while following it."""
DRAIN = 3.0
"""Once the run, read again at a transition, has finished: the longest wait for the stream to
deliver its end (the log lines and steps before it come first). The end is always delivered; the
bound only keeps a wait from hanging should the run vanish without a word."""
Reason = Literal["finished", "interrupted", "timeout"]


class Interrupts:
    """While installed, the first SIGINT/SIGTERM sets :attr:`event`; the next one exits at once.

    ``on_second`` is written to stderr before that immediate exit (``os._exit(128 + signal)``).
    Outside the main thread (no signal handlers possible) it does nothing.
    """

    def __init__(self, on_second: str, on_first: Callable[[int], None] | None = None) -> None:
        self.event = asyncio.Event()
        self.on_second = on_second
        self.on_first = on_first
        self.count = 0
        self._installed: list[int] = []

    def _handle(self, signum: int) -> None:
        self.count += 1
        if self.count == 1:
            self.event.set()
            if self.on_first is not None:
                self.on_first(signum)
            return
        with contextlib.suppress(OSError):
            os.write(2, f"\n{self.on_second}\n".encode())
        os._exit(128 + signum)

    @classmethod
    def graceful_stop(cls, stop_grace: float, log: logging.Logger) -> Interrupts:
        """What a long-running command (``serve``, ``serve --once``, ``work``) does on SIGTERM/SIGINT:
        log the graceful stop with its grace; a second signal exits at once."""

        def first(signum: int) -> None:
            log.info(
                "received %s: stopping gracefully (up to %ss); send it again to exit at once",
                signal.Signals(signum).name,
                f"{stop_grace:g}",
            )

        return cls(
            on_second="second signal: exiting at once; unfinished runs resume when their leases expire",
            on_first=first,
        )

    @contextlib.contextmanager
    def installed(self, *signals: int) -> Iterator[Interrupts]:
        loop = asyncio.get_running_loop()
        for signum in signals or (signal.SIGINT,):
            try:
                loop.add_signal_handler(signum, self._handle, signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
                continue
            self._installed.append(signum)
        try:
            yield self
        finally:
            for signum in self._installed:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)
            self._installed.clear()


@dataclass
class Followed:
    record: RunRecord
    reason: Reason


async def follow_run(
    durably: Durably,
    run_id: str,
    *,
    interrupted: asyncio.Event,
    show: bool = True,
    timeout: float | None = None,
) -> Followed:
    """Follow the run until it finishes, ``interrupted`` is set or ``timeout`` passes.

    With ``show``, logs are printed to stderr as they are stored, above a live progress bar when
    stderr is a terminal.
    """
    err = console(stderr=True)
    live = show and err.is_terminal
    record = await durably.get_run(run_id)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        console=err,
        transient=True,
        disable=not live,
    )

    def emit(line: str) -> None:
        if live:
            progress.console.print(Text(line))
        else:
            click.echo(line, err=True)

    view = _View(durably, record, show, live, emit, AttemptLines(durably, retry_budget(durably, record)))
    subscription = durably.subscribe(run_id, since=record, after_log_id=0 if show else None)
    try:
        with progress:
            task = progress.add_task(f"{record.job_name} {record.id[:8]}", total=None, status="", message="")
            return await view.follow(subscription, progress, task, interrupted, timeout)
    finally:
        await subscription.close()


class _View:
    """What ``follow_run`` shows of a run: its log lines, attempts, waiting reason and progress."""

    def __init__(
        self,
        durably: Durably,
        record: RunRecord,
        show: bool,
        live: bool,
        emit: Callable[[str], None],
        attempts: AttemptLines,
    ) -> None:
        self.durably, self.record, self.show, self.live, self.emit = durably, record, show, live, emit
        self.attempts = attempts
        self.waiting: str | None = None
        self.explained_at = 0.0
        self.ended = False
        """The stream delivered the run's end (its completion, failure, cancel or deletion)."""

    async def follow(
        self,
        subscription: RunSubscription,
        progress: Progress,
        task: Any,
        interrupted: asyncio.Event,
        timeout: float | None,
    ) -> Followed:
        deadline = None if timeout is None else time.monotonic() + timeout
        # A run read as finished at a transition may still have log lines in the stream, which
        # delivers them before its end (a run that took 3 ms ended before the stream's first read
        # had given more than its start): wait for the end. A run finished before the
        # subscription has no end coming (the stream starts after it).
        no_end_coming = self.record.is_finished
        finished_at: float | None = None
        while True:
            await self.redraw(progress, task)
            if self.record.is_finished:
                finished_at = time.monotonic() if finished_at is None else finished_at
                if self.ended or no_end_coming or time.monotonic() - finished_at >= DRAIN:
                    return Followed(self.record, "finished")
            wait = (
                POLL_INTERVAL
                if deadline is None
                else min(POLL_INTERVAL, max(0.0, deadline - time.monotonic()))
            )
            events = await _next_events(subscription, interrupted, wait)
            if interrupted.is_set():
                return Followed(await self.durably.get_run(self.record.id), "interrupted")
            await self.take(events)
            if deadline is not None and time.monotonic() >= deadline and not self.record.is_finished:
                return Followed(self.record, "timeout")

    async def take(self, events: list[Event]) -> None:
        """Print the new log lines; a transition (or the stream's end) reads the run again."""
        moved = False
        for event in events:
            if isinstance(event, StoredLogWriteEvent):
                if self.show:
                    self.emit(log_line(event.record()))
            elif isinstance(event, RunProgressEvent):
                self.record = dataclasses.replace(self.record, progress=event.progress)
            elif event.type.startswith("run:"):
                moved = True
                self.ended = self.ended or event.type in TERMINAL_TYPES
        if moved:
            self.record = await self.durably.get_run(self.record.id)

    async def redraw(self, progress: Progress, task: Any) -> None:
        record = self.record
        if record.status == "pending" and self.show and time.monotonic() - self.explained_at >= EXPLAIN_EVERY:
            self.explained_at = time.monotonic()
            reason = await _waiting_reason(self.durably, record)
            if reason != self.waiting and reason is not None and not self.live:
                click.echo(f"waiting: {reason}", err=True)
            self.waiting = reason
        elif record.status == "waiting":
            reason = waiting_for_text(record, show_time)
            if reason != self.waiting and not self.live and self.show:
                click.echo(reason, err=True)  # "sleeping until T", "waiting for event KEY ..."
            self.waiting = reason
        elif record.status != "pending":
            self.waiting = None
        if self.show:
            for line in await self.attempts.new_lines(record):
                self.emit(line)
        p = record.progress
        progress.update(
            task,
            completed=p.current if p else 0,
            total=p.total if p else None,
            status=f"{record.status} (waiting: {self.waiting})" if self.waiting else record.status,
            message=(p.message or "") if p else "",
        )


async def _next_events(subscription: RunSubscription, interrupted: asyncio.Event, wait: float) -> list[Event]:
    """The run's next events (all already queued with the first), or none after ``wait`` seconds
    or when ``interrupted`` is set; a stream that ended gives none."""
    nxt = asyncio.ensure_future(subscription.__anext__())
    stop = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait([nxt, stop], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if not nxt.done():
        nxt.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await nxt
        return []
    try:
        return [nxt.result(), *subscription.ready_now()]
    except StopAsyncIteration:
        return []


async def _waiting_reason(durably: Durably, record: RunRecord) -> str | None:
    try:
        return await durably.waiting_reason(record)
    except Exception:  # an explanation is a courtesy; the wait goes on without it
        return None


def report(
    followed: Followed, *, json_mode: bool, here: bool = False, extra: dict[str, Any] | None = None
) -> int:
    """Print how a followed run ended and return the exit code.

    completed: the output on stdout, exit 0. failed/cancelled: the error on stderr, exit 1.
    Interrupted (130) and timed out (124): a line saying the run continues.
    """
    record = followed.record
    if json_mode:
        echo_json({**(extra or {}), **_result_json(record)})
    if followed.reason == "finished":
        if record.status == "completed":
            if not json_mode:
                echo_json(record.output)
                click.echo(f"run {record.id} completed {_took(record)}", err=True)
            return EXIT_OK
        if not json_mode:
            if record.status == "cancelled":
                click.echo(f"error: run {record.id} was cancelled", err=True)
            else:
                step = f" in step '{record.failed_step_name}'" if record.failed_step_name else ""
                tries = f" after {record.failed_attempts} attempts" if record.failed_attempts > 1 else ""
                click.echo(f"error: run {record.id} failed{step}{tries}: {one_line(record.error)}", err=True)
                where = user_frame(record.traceback)
                if where:
                    click.echo(f"  at {where} (traceback: durably-sched runs show {record.id})", err=True)
        return EXIT_FAILURE
    run = f"run {record.id}"
    if here and record.status == "waiting":
        waits = waiting_for_text(record, show_time)
        continues = f"{run} is {waits}; a worker (durably-sched serve) resumes it after that"
    elif here:
        continues = f"{run} was released and resumes when a worker picks it up (durably-sched serve)"
    else:
        continues = f"{run} continues ({record.status}); follow it with: durably-sched runs watch {record.id}"
    if followed.reason == "timeout":
        click.echo(f"error: timed out waiting; {continues}", err=True)
        return EXIT_TIMEOUT
    click.echo(f"stopped waiting; {continues}", err=True)
    return EXIT_INTERRUPTED


def _took(record: RunRecord) -> str:
    """``in 6.10s`` (one attempt: total and attempt agree), else labelled as the total."""
    took = seconds_text(run_duration(record))
    if record.attempt <= 1:
        return f"in {took}"
    return f"in {took} total, from its first start (attempt {record.attempt})"


def _result_json(record: RunRecord) -> dict[str, Any]:
    full = run_json(record)
    return {
        "id": record.id,
        "job_name": record.job_name,
        "status": record.status,
        "output": record.output,
        "error": record.error,
        "failed_step_name": record.failed_step_name,
        "attempt": record.attempt,
        "failed_attempts": record.failed_attempts,
        "total_duration": full["total_duration"],
        "error_location": user_frame(record.traceback),
        "traceback": record.traceback,
    }


_F = TypeVar("_F", bound=Callable[..., Any])

WAIT_OPTION = click.option(
    "--wait", is_flag=True, help="Follow the run until it ends; exit 0 completed, 1 failed/cancelled."
)
TIMEOUT_OPTION = click.option(
    "--timeout", type=SECONDS, metavar="SECONDS", help="With --wait: give up after this long (exit 124)."
)
JSON_OPTION = click.option(
    "--json", "json_mode", is_flag=True, help="Print one JSON object (no progress bar)."
)


def wait_options(command: _F) -> _F:
    """``--wait``, ``--timeout`` and ``--json`` of every command that can follow the run it made."""
    return WAIT_OPTION(TIMEOUT_OPTION(JSON_OPTION(command)))


def check_wait_options(wait: bool, timeout: float | None) -> None:
    if timeout is not None and not wait:
        raise CliError("--timeout only applies with --wait")


def wait_signals(wait: bool) -> tuple[Interrupts, contextlib.AbstractContextManager[Any]]:
    """For a command that may wait: Ctrl-C/SIGTERM handling (only ends the wait), installed by the
    returned context; a no-op context when not waiting."""
    interrupts = Interrupts(on_second="exiting")
    if not wait:
        return interrupts, contextlib.nullcontext(interrupts)
    return interrupts, interrupts.installed(signal.SIGINT, signal.SIGTERM)


async def follow_and_report(
    durably: Durably,
    run_id: str,
    interrupts: Interrupts,
    *,
    timeout: float | None,
    json_mode: bool,
    extra: dict[str, Any] | None = None,
) -> int:
    """``--wait`` of any command: follow the run (progress bar, logs), then :func:`report`."""
    followed = await follow_run(
        durably, run_id, interrupted=interrupts.event, show=not json_mode, timeout=timeout
    )
    return report(followed, json_mode=json_mode, extra=extra)
