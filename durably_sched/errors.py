"""Exceptions raised by durably-sched.

Every error a user can cause derives from :class:`DurablyError` and renders as one line that says
what is wrong and where, so the CLI can print ``str(error)`` and exit without a traceback.
"""

from __future__ import annotations


class DurablyError(Exception):
    """Base class of every error durably-sched raises on purpose."""


class ConfigError(DurablyError):
    """A configuration file (schedules.yaml) is invalid.

    ``str()`` gives ``<file>:<line>: <message>`` (line omitted when unknown). It is the first problem
    in the file; ``problems`` holds every problem found (this one first), each such an error.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.problems: tuple[ConfigError, ...] = (self,)
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


class ArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of a library call has the wrong type (also a ``TypeError``); the message names it."""


class LimitExceededError(InvalidArgumentError):
    """A value over one of the size limits (:class:`durably_sched.Limits`), refused before anything
    is stored. ``field`` names the value (``input``, ``labels['team']``, ``idempotency_key``),
    ``size`` and ``limit`` are bytes (a count for ``labels``), ``limit_name`` the Limits field."""

    def __init__(self, message: str, *, field: str, size: int, limit: int, limit_name: str) -> None:
        super().__init__(message)
        self.field = field
        self.size = size
        self.limit = limit
        self.limit_name = limit_name


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
    """The database cannot be used (unreachable, not writable, corrupt, locked for too long).

    The subclasses below name the causes an operator acts on differently; each one's text is one
    line that says which database and what to do. Code that only needs "the store failed" catches
    ``StoreError``.
    """


class DiskFullError(StoreError):
    """The disk (or the database's size limit) is full: free space, then the writes go through."""


class DatabaseReadOnlyError(StoreError):
    """The database can be read but not written (file or directory permissions, a read-only
    mount, a PostgreSQL standby or a read-only transaction setting)."""


class DatabaseLockedError(StoreError):
    """Another process held the database's lock for longer than the busy budget."""


class DatabaseCorruptError(StoreError):
    """The file is not a database, or the database reports corrupt data."""


class DatabaseUnavailableError(StoreError):
    """The database server could not be reached (or reached again) within the retry budget."""


class DatabaseUrlError(StoreError):
    """The database URL itself is wrong (its form, an unknown option): a usage error."""


class SchemaVersionError(StoreError):
    """The database was created by a newer durably-sched, or its schema is not current."""


class NonRetryableError(Exception):
    """Raise it (or a subclass) from a job to fail the run at once, whatever its retry policy."""


class StepValueTooLargeError(StepError, NonRetryableError):
    """A step's return value (or a job's output) whose JSON form is over ``limits.step_value``.

    The step fails without a checkpoint and the run fails at once: no retry policy retries it, as
    the same code would return the same value again. ``step_name`` is None for a job's output.
    """

    def __init__(self, message: str, *, step_name: str | None, size: int, limit: int) -> None:
        super().__init__(message)
        self.step_name = step_name
        self.size = size
        self.limit = limit


class StepTimeoutError(TimeoutError):
    """A step ran longer than the ``timeout`` given to ``step.run``.

    An async step is cancelled at its timeout; a sync step's thread cannot be stopped from outside:
    the run goes on (or fails) without it and the thread's late result is discarded.
    """

    def __init__(self, step_name: str, timeout: float) -> None:
        self.step_name = step_name
        self.timeout = timeout
        super().__init__(f"step '{step_name}' did not finish within {_seconds(timeout)}")


class RunTimeoutError(TimeoutError):
    """One attempt of a run ran longer than its ``timeout`` (the job's, a schedule's or a trigger's)."""

    def __init__(self, run_id: str, timeout: float) -> None:
        self.run_id = run_id
        self.timeout = timeout
        super().__init__(f"run {run_id} did not finish within {_seconds(timeout)}")


class StepCancelled(BaseException):
    """Raised by ``token.raise_if_cancelled()`` / ``step.check_cancelled()`` in a step that was
    told to stop (``reason``: cancelled, lease-lost, timeout or stopping).

    A BaseException, like ``asyncio.CancelledError``, so that a step's ``except Exception`` does
    not swallow it. The step ends without a result (nothing is checkpointed, ``step:cancel`` is
    emitted) and the run stops the way its reason says: cancelled, given up, failed by its timeout,
    or released for another worker.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"step cancelled ({reason})")


def _seconds(value: float) -> str:
    return f"{value:g}s"


class EventTimeoutError(TimeoutError):
    """Raised in a job by ``step.wait_for_event`` when no event of its key came within the timeout.

    A step failure like any other: the run's retry policy decides; a retried wait starts over with
    its full timeout."""

    def __init__(self, step_name: str, key: str, timeout: float) -> None:
        self.step_name = step_name
        self.key = key
        self.timeout = timeout
        super().__init__(f"step '{step_name}': no event '{key}' within {_seconds(timeout)}")


class ChildRunFailedError(DurablyError):
    """Raised in a job by ``step.run_job`` when the child run failed or was cancelled; carries the
    child's error."""

    def __init__(self, run_id: str, status: str, error: str | None, failed_step_name: str | None) -> None:
        self.run_id = run_id
        self.status = status
        self.error = error
        self.failed_step_name = failed_step_name
        step = f" in step '{failed_step_name}'" if failed_step_name else ""
        what = "was cancelled" if status == "cancelled" else f"failed{step}: {error}"
        super().__init__(f"child run {run_id} {what}")


class RunSuspended(BaseException):
    """Raised by a durable wait once the run is stored as ``waiting``: the attempt ends here (the
    executor writes nothing more) and the run resumes, on any worker, when its wait ends.

    A BaseException, so that a job's ``except Exception`` does not swallow it."""

    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(why)
