"""The ``durably-sched`` command line: ``main`` is the console script (a click group)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import click

from .._version import __version__
from ..store import DEFAULT_DATABASE_URL
from ._base import EXIT_CODES_HELP, REPORTED_RUNS, TIME_RULE_HELP, CliGroup, Settings
from .admin import healthcheck, migrate
from .events import events
from .runs import runs
from .schedules import schedules
from .serve import serve
from .trigger import trigger
from .work import work
from .workers import workers

__all__ = ["main"]


@click.group(
    "durably-sched",
    cls=CliGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=f"""\b
Examples:
  durably-sched serve                                   # scheduler + worker on ./durably.db
  durably-sched serve --once                            # fire what is due, work until idle, exit
  durably-sched trigger process-image --input '{{"filename": "cat.ppm"}}' --wait
  durably-sched runs list --status failed
  durably-sched schedules next
  durably-sched --utc runs list                         # times in UTC
  durably-sched workers list

{TIME_RULE_HELP}

{EXIT_CODES_HELP}""",
)
@click.option(
    "--database",
    envvar="DURABLY_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    metavar="URL",
    help="sqlite:///path.db or postgresql://user@host:5432/db (env DURABLY_DATABASE_URL).",
)
@click.option(
    "--jobs",
    envvar="DURABLY_JOBS",
    default="jobs",
    show_default=True,
    metavar="MODULE",
    help="Module or package (imported from the current directory) defining the jobs (env DURABLY_JOBS).",
)
@click.option(
    "--schedules",
    envvar="DURABLY_SCHEDULES",
    default="schedules.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="The schedules file (env DURABLY_SCHEDULES).",
)
@click.option(
    "--utc",
    is_flag=True,
    envvar="DURABLY_UTC",
    help="Show and read times in UTC instead of this machine's time zone (env DURABLY_UTC=1).",
)
@click.version_option(__version__, "--version", prog_name="durably-sched")
@click.pass_context
def main(ctx: click.Context, database: str, jobs: str, schedules: str, utc: bool) -> None:
    """durably-sched: cron schedules as durable, checkpointed jobs that run exactly once per fire time."""
    source = ctx.get_parameter_source("schedules")
    ctx.obj = Settings(
        database=database,
        jobs=jobs,
        schedules=schedules,
        schedules_explicit=source not in (None, click.core.ParameterSource.DEFAULT),
        utc=utc,
    )
    if ctx.invoked_subcommand not in ("serve", "work"):
        ctx.call_on_close(_plain_logging())


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (click's test runner swaps it)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class _OneLineFormatter(logging.Formatter):
    """One line per record: a traceback (of a run that failed under ``trigger --here``, say) is left
    to ``runs show``, where it is stored; the command itself prints the error and its frame."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return " ".join(super().format(record).split())
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _not_reported(record: logging.LogRecord) -> bool:
    """False for the worker's "run failed" line about a run the command reports itself."""
    return not (
        record.name == "durably_sched.worker"
        and getattr(record, "run_id", None) in REPORTED_RUNS
        and record.getMessage().startswith("run failed")
    )


def _plain_logging() -> Callable[[], None]:
    """Commands other than serve: warnings and errors only, one line each, on stderr.

    Returns the function that puts logging back as it was (run when the command ends).
    """
    root = logging.getLogger()
    level = root.level
    handler = _StderrHandler()
    handler.setFormatter(_OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_not_reported)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(level)

    return restore


for command in (serve, work, migrate, healthcheck, trigger, runs, schedules, workers, events):
    main.add_command(command)
