"""durably-sched: cron schedules as durable, checkpointed jobs that run exactly once per fire time."""

from .cancel import CancelToken
from .durably import Durably, JobHandle, Run, RunResult, create_durably
from .errors import (
    ConfigError,
    DatabaseCorruptError,
    DatabaseLockedError,
    DatabaseReadOnlyError,
    DatabaseUnavailableError,
    DatabaseUrlError,
    DiskFullError,
    DurablyError,
    InputValidationError,
    InvalidStateError,
    NonRetryableError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    RunTimeoutError,
    SchemaVersionError,
    StepCancelled,
    StepError,
    StepTimeoutError,
    StoreError,
    UnknownJobError,
)
from .jobs import JobDefinition, define_job
from .retry import Retry
from .step import Step
from .store.base import LogRecord, Progress, RunRecord, StepRecord, WorkerRecord

__version__ = "0.1.0"

__all__ = [
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
    "InvalidStateError",
    "JobDefinition",
    "JobHandle",
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
    "SchemaVersionError",
    "Step",
    "StepCancelled",
    "StepError",
    "StepRecord",
    "StepTimeoutError",
    "StoreError",
    "UnknownJobError",
    "WorkerRecord",
    "__version__",
    "create_durably",
    "define_job",
]
