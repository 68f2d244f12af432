"""The CLI's plumbing: one place that runs async commands and turns every error into one line.

Exit codes (also in ``durably-sched --help``):

* 0: success
* 1: a runtime failure: the run failed or was cancelled, the database cannot be used (missing file,
  unreachable, corrupt, not writable, locked, newer schema), the health check failed
* 2: a usage or validation error: bad option or argument, bad input, unknown job/run/schedule, an
  invalid schedules file, a jobs module that fails to import, an action the run's state forbids
* 124: ``--wait --timeout`` expired (the run continues)
* 130: interrupted (Ctrl-C); with ``--wait`` the run continues
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click

from .._durations import parse_duration
from .._step_threads import busy_threads as busy_step_threads
from ..durably import Durably, create_durably
from ..errors import DurablyError, RunCancelledError, RunFailedError, StoreError
from ..jobs import JobDefinition
from ..store import open_store

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0    success
  1    runtime failure: the run failed or was cancelled; the database is missing,
       unreachable, corrupt, not writable or of a newer version; unhealthy
  2    usage or validation error: bad option, bad input, unknown job, run or
       schedule, invalid schedules file, jobs module that fails to import
  124  --wait --timeout expired (the run continues)
  130  interrupted with Ctrl-C (a waited-for run continues)"""

log = logging.getLogger("durably_sched.cli")

REPORTED_RUNS: set[str] = set()
"""Runs whose failures the command reports itself, one line per attempt and the final error
(``trigger --here``): the worker's own "run failed" log lines for them are not printed again."""


class CliError(Exception):
    """A problem reported as one line ``error: <message>`` with an exit code (2 unless given)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def one_line(text: object) -> str:
    """Any message on one line: line breaks and runs of spaces become one space."""
    return " ".join(str(text).split())


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, CliError):
        return exc.exit_code
    if isinstance(exc, StoreError | RunFailedError | RunCancelledError):
        return EXIT_FAILURE
    return EXIT_USAGE


class StepThreads:
    """Finds sync steps (and other ``to_thread`` work) still running at exit, and ends the process.

    Sync step functions run on the step threads of ``durably_sched._step_threads``; other blocking
    work (``asyncio.to_thread``) runs in the loop's default executor, which :meth:`install` makes
    this class's. A thread cannot be cancelled: after a graceful stop whose grace a step outlived,
    its run has been released (another worker resumes it), but the interpreter would wait for an
    executor thread before exiting, and the abandoned step would go on. :meth:`exit_if_lingering`
    reports such threads and ends the process instead.
    """

    def __init__(self) -> None:
        self.prefix = f"durably-step-{os.getpid()}-{id(self):x}"
        self.executor = ThreadPoolExecutor(thread_name_prefix=self.prefix)

    def install(self) -> None:
        asyncio.get_running_loop().set_default_executor(self.executor)

    async def exit_if_lingering(self, code: int, settle: float = 0.5) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + settle
        while True:  # idle threads leave at once; busy ones are still in a step
            busy = [t for t in threading.enumerate() if t.name.startswith(self.prefix) and t.is_alive()]
            busy += busy_step_threads()
            if not busy or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        if not busy:
            return
        log.warning(
            "%d step(s) still running after the graceful stop; exiting without waiting for them", len(busy)
        )
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _error(message: str) -> None:
    click.echo(f"error: {one_line(message)}", err=True)


class CliCommand(click.Command):
    """A command whose callback may be ``async def``: it runs in a fresh event loop."""

    def invoke(self, ctx: click.Context) -> Any:
        result = super().invoke(ctx)
        if inspect.iscoroutine(result):
            return asyncio.run(result)
        return result


class CliGroup(click.Group):
    """A group whose commands are :class:`CliCommand` and whose ``main`` maps errors to one line.

    Every error, from click's usage errors to a :class:`DurablyError` raised deep in a store, is
    printed as ``error: <one line>`` on stderr and ends the process with the documented exit code.
    Anything else is a bug and keeps its traceback.
    """

    command_class = CliCommand
    group_class = type  # subgroups (runs, schedules) are CliGroups too

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _error(exc.format_message() + hint)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            _error(exc.format_message())
            sys.exit(exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            _error("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except (CliError, DurablyError) as exc:
            _error(str(exc))
            sys.exit(exit_code_for(exc))
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            # Output piped into `head` and the like: stop quietly.
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")
            sys.exit(EXIT_FAILURE)
        sys.exit(result if isinstance(result, int) else EXIT_OK)


# --- global settings ---------------------------------------------------------------------------


@dataclass
class Settings:
    """The global options, shared by every command through ``ctx.obj``."""

    database: str
    jobs: str
    schedules: str
    schedules_explicit: bool
    utc: bool = False
    """Show and read times in UTC instead of this machine's time zone (``--utc``)."""


def settings() -> Settings:
    ctx = click.get_current_context()
    found = ctx.find_object(Settings)
    assert found is not None, "the durably-sched group stores Settings in ctx.obj"
    return found


# --- times: one rule for every command ------------------------------------------------------------

TIME_RULE_HELP = "\b\nTimes:\n  " + "\n  ".join(
    (
        "shown in this machine's time zone with their UTC offset, or in UTC with",
        "--utc (or DURABLY_UTC=1); a time typed without an offset is read in that",
        "same zone; --json always writes UTC (...Z).",
    )
)
"""The rule, as every command that shows or reads times states it at the end of its --help."""

_F = TypeVar("_F", bound=Callable[..., Any])


def utc_option(command: _F) -> _F:
    """``--utc`` on a command: the same switch as ``durably-sched --utc``, in either place."""

    def switch(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            found = ctx.find_object(Settings)
            if found is not None:
                found.utc = True

    option = click.option(
        "--utc",
        is_flag=True,
        expose_value=False,
        callback=switch,
        help="Show and read times in UTC (same as durably-sched --utc).",
    )
    return option(command)


def display_utc() -> bool:
    """Whether this command shows times in UTC (else in this machine's time zone)."""
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(Settings) if ctx is not None else None
    return found is not None and found.utc


def in_display_zone(value: datetime) -> datetime:
    """An aware time: a value typed without an offset is a wall time of the display zone."""
    if value.tzinfo is not None and value.utcoffset() is not None:
        return value
    if display_utc():
        return value.replace(tzinfo=UTC)
    return value.astimezone()  # naive = local wall time (DST resolved by the C library)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:`` URL (None for other databases). Raises StoreError for bad URLs."""
    store = open_store(url)
    path = getattr(store, "path", None)
    return path if url.lower().startswith("sqlite:") and isinstance(path, str) else None


def require_existing_database(url: str) -> None:
    """Read-only commands never create a database: a missing SQLite file is an error."""
    path = sqlite_path(url)
    if path is not None and not os.path.exists(path):
        raise CliError(
            f"database file {path} does not exist (run `durably-sched migrate` or `serve`)", EXIT_FAILURE
        )


@contextlib.asynccontextmanager
async def open_durably(
    url: str,
    jobs: Mapping[str, JobDefinition[Any, Any]] | None = None,
    *,
    create: bool = False,
    read_only: bool = False,
    **options: Any,
) -> AsyncIterator[Durably]:
    """A connected Durably (worker not started). Without ``create`` the database must exist and
    have the current schema; with it, the schema is created or upgraded first. ``read_only``
    (commands that only look): a SQLite file is opened read-only, so it may sit where this user
    cannot write."""
    if not create:
        require_existing_database(url)
    if read_only:
        durably = Durably(open_store(url, read_only=True), **options)
    else:
        durably = create_durably(url, **options)
    if jobs:
        durably.register(jobs)
    try:
        if create:
            await durably.migrate()
        await durably.start(worker=False)
        yield durably
    finally:
        await durably.close()


# --- parameter types ----------------------------------------------------------------------------


if TYPE_CHECKING:  # click 8.2+ types ParamType by the value it converts to
    _DurationParam = click.ParamType[timedelta]
    _SecondsParam = click.ParamType[float]
    _RetentionParam = click.ParamType[timedelta | None]
    _AddressParam = click.ParamType["HttpAddress"]
    _TimeParam = click.ParamType[datetime]
else:
    _DurationParam = _SecondsParam = _RetentionParam = _AddressParam = _TimeParam = click.ParamType


def _duration(
    kind: click.ParamType[Any], value: Any, param: click.Parameter | None, ctx: click.Context | None
) -> timedelta:
    if isinstance(value, timedelta):
        return value
    try:
        return parse_duration(value)
    except ValueError as exc:
        kind.fail(str(exc), param, ctx)


class DurationType(_DurationParam):
    """``30s``, ``15m``, ``6h``, ``1d``, ``1h30m`` or a number of seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        return _duration(self, value, param, ctx)


class SecondsType(_SecondsParam):
    """A duration given in seconds (``25``, ``0.5``) or with units (``1m``), as float seconds."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float | int) and not isinstance(value, bool):
            return float(value)
        return _duration(self, value, param, ctx).total_seconds()


class RetentionType(_RetentionParam):
    """A duration, or ``off`` to keep finished runs forever (converted to None)."""

    name = "duration|off"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none", "never")):
            return None
        result = _duration(self, value, param, ctx)
        if result <= timedelta(0):
            self.fail("must be longer than 0 (use 'off' to keep runs forever)", param, ctx)
        return result


@dataclass(frozen=True)
class HttpAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def local(self) -> HttpAddress:
        """Where a client on this machine connects: a wildcard address means loopback."""
        if self.host in ("0.0.0.0", ""):
            return HttpAddress("127.0.0.1", self.port)
        if self.host == "::":
            return HttpAddress("::1", self.port)
        return self


class HttpAddressType(_AddressParam):
    """``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``PORT`` (the last two bind 127.0.0.1).

    Port 0 lets ``serve`` pick a free port (it logs the one it got)."""

    name = "host:port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> HttpAddress:
        if isinstance(value, HttpAddress):
            return value
        text = str(value).strip()
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = "", text
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            self.fail(f"'{text}': write an IPv6 address in brackets, e.g. [::1]:8080", param, ctx)
        if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
            self.fail(f"'{text}': expected HOST:PORT, :PORT or PORT (port 0 to 65535)", param, ctx)
        return HttpAddress(host or "127.0.0.1", int(port_text))


class TimeType(_TimeParam):
    """An ISO 8601 time (``2026-03-29T02:30``, ``2026-03-29 02:30+02:00``, ``...Z``) or ``now``.

    The value may be naive; commands read naive times in the display zone (:func:`in_display_zone`).
    """

    name = "iso8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        if text.lower() == "now":
            return datetime.now().astimezone()
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"'{text}' is not an ISO 8601 time (e.g. 2026-03-29T02:30:00+02:00, 2026-03-29T00:30:00Z, "
                "2026-03-29 or now)",
                param,
                ctx,
            )


DURATION = DurationType()
SECONDS = SecondsType()
RETENTION = RetentionType()
HTTP_ADDRESS = HttpAddressType()
TIME = TimeType()
