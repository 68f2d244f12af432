"""What the commands that run jobs here share (``serve``, ``serve --once``, ``work --until-idle``):
the facade made from their options, the step threads around their run, the ``--stop-grace`` option."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import click

from ..durably import Durably, create_durably
from ..limits import Limits
from ._base import SECONDS, CliError, StepThreads

F = TypeVar("F", bound=Callable[..., Any])


class RunnerOptions(Protocol):
    """The options every command that runs jobs in its process has."""

    @property
    def concurrency(self) -> int: ...
    @property
    def heartbeat_interval(self) -> float: ...
    @property
    def stale_threshold(self) -> float: ...
    @property
    def worker_id(self) -> str | None: ...
    @property
    def retention(self) -> timedelta | None: ...
    @property
    def limits(self) -> Limits | None: ...


def durably_for(database: str, opts: RunnerOptions, command: str, **more: Any) -> Durably:
    """The facade for a command's options; a bad combination is a usage error naming the command."""
    try:
        return create_durably(
            database,
            heartbeat_interval=opts.heartbeat_interval,
            stale_threshold=opts.stale_threshold,
            max_concurrent_runs=opts.concurrency,
            worker_id=opts.worker_id,
            retain_runs=opts.retention,  # the library's retention: runs from start() to stop()
            limits=opts.limits,
            **more,
        )
    except ValueError as exc:  # e.g. heartbeat interval not shorter than the stale threshold
        raise CliError(f"{command}: {exc}") from None


async def in_step_threads(run: Callable[[], Awaitable[int]]) -> int:
    """``run()`` with sync steps on threads this process can account for at exit (see StepThreads)."""
    threads = StepThreads()
    threads.install()
    code = await run()
    await threads.exit_if_lingering(code)
    return code


def seconds_option(flag: str, default: float, help: str, envvar: str | None = None) -> Callable[[F], F]:
    return click.option(
        flag, type=SECONDS, default=default, show_default=True, envvar=envvar, metavar="SECONDS", help=help
    )


def stop_grace_option(help: str) -> Callable[[F], F]:
    return seconds_option("--stop-grace", 25.0, help, "DURABLY_STOP_GRACE")


def concurrency_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--concurrency",
        type=click.IntRange(min=1),
        default=4,
        show_default=True,
        envvar="DURABLY_CONCURRENCY",
        help=help,
    )
