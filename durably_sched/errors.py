"""Exceptions raised by durably-sched.

Every error a user can cause derives from :class:`DurablyError` and renders as one line that says
what is wrong and where, so the CLI can print ``str(error)`` and exit without a traceback.
"""

from __future__ import annotations


class DurablyError(Exception):
    """Base class of every error durably-sched raises on purpose."""


class ConfigError(DurablyError):
    """A configuration file (schedules.yaml) is invalid.

    ``str()`` gives ``<file>:<line>: <message>`` (line omitted when unknown).
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class InputValidationError(DurablyError):
    """A job's input (at trigger time) or output (at completion) does not match its model."""


class UnknownJobError(DurablyError):
    """A job name that is not registered."""


class RunNotFoundError(DurablyError):
    """A run id that does not exist."""


class AmbiguousRunIdError(DurablyError):
    """A short run id (an id prefix) that more than one run starts with; ``candidates`` lists some."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


class ScheduleNotFoundError(DurablyError):
    """A schedule name that is not defined (in the schedules in use) and not known to the database."""


class InvalidArgumentError(DurablyError, ValueError):
    """An argument of a library call is invalid; the message names the argument."""


class InvalidStateError(DurablyError):
    """An operation that the run's current status does not allow (e.g. retry of a completed run)."""


class StepError(DurablyError):
    """Misuse of steps inside a job (duplicate step name, unencodable value)."""


class RunFailedError(DurablyError):
    """Raised by ``trigger_and_wait`` when the run failed; carries the run's error."""

    def __init__(self, run_id: str, error: str | None, failed_step_name: str | None = None) -> None:
        self.run_id = run_id
        self.error = error
        self.failed_step_name = failed_step_name
        step = f" in step '{failed_step_name}'" if failed_step_name else ""
        super().__init__(f"run {run_id} failed{step}: {error}")


class RunCancelledError(DurablyError):
    """Raised by ``trigger_and_wait`` when the run was cancelled."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} was cancelled")


class StoreError(DurablyError):
    """The database cannot be used (unreachable, not writable, corrupt, locked for too long)."""


class DatabaseUrlError(StoreError):
    """The database URL itself is wrong (its form, an unknown option): a usage error."""


class SchemaVersionError(StoreError):
    """The database was created by a newer durably-sched, or its schema is not current."""


class LeaseLostError(BaseException):
    """Internal: the worker no longer holds the run (lease expired and taken, or the run deleted).

    A BaseException so that a job's ``except Exception`` cannot swallow it; it never reaches users:
    the worker stops and writes nothing more for the run.
    """


class RunCancelledSignal(BaseException):
    """Internal: the run was cancelled; raised by ``step.run`` instead of starting another step."""
