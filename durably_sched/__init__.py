"""durably-sched: cron schedules as durable, checkpointed jobs that run exactly once per fire time."""

from .cancel import CancelToken
from .durably import Durably, JobHandle, Run, RunResult, create_durably
from .errors import (
    AmbiguousRunIdError,
    ConfigError,
    DatabaseCorruptError,
    DatabaseLockedError,
    DatabaseReadOnlyError,
    DatabaseUnavailableError,
    DatabaseUrlError,
    DiskFullError,
    DurablyError,
    InputValidationError,
    InvalidArgumentError,
    InvalidStateError,
    LimitExceededError,
    NonRetryableError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    RunTimeoutError,
    ScheduleNotFoundError,
    SchemaVersionError,
    StepCancelled,
    StepError,
    StepTimeoutError,
    StepValueTooLargeError,
    StoreError,
    UnknownJobError,
)
from .jobs import JobDefinition, define_job
from .limits import Limits
from .retry import Retry
from .step import Step
from .store.attempts import AttemptRecord
from .store.base import LogRecord, Progress, RunRecord, ScheduleState, StepRecord, WorkerRecord

__version__ = "0.1.0"

__all__ = [
    "AmbiguousRunIdError",
    "AttemptRecord",
    "CancelToken",
    "ConfigError",
    "DatabaseCorruptError",
    "DatabaseLockedError",
    "DatabaseReadOnlyError",
    "DatabaseUnavailableError",
    "DatabaseUrlError",
    "DiskFullError",
    "Durably",
    "DurablyError",
    "InputValidationError",
    "InvalidArgumentError",
    "InvalidStateError",
    "JobDefinition",
    "JobHandle",
    "LimitExceededError",
    "Limits",
    "LogRecord",
    "NonRetryableError",
    "Progress",
    "Retry",
    "Run",
    "RunCancelledError",
    "RunFailedError",
    "RunNotFoundError",
    "RunRecord",
    "RunResult",
    "RunTimeoutError",
    "ScheduleNotFoundError",
    "ScheduleState",
    "SchemaVersionError",
    "Step",
    "StepCancelled",
    "StepError",
    "StepRecord",
    "StepTimeoutError",
    "StepValueTooLargeError",
    "StoreError",
    "UnknownJobError",
    "WorkerRecord",
    "__version__",
    "create_durably",
    "define_job",
]
