"""durably-sched: cron schedules as durable, checkpointed jobs that run exactly once per fire time."""

from .durably import Durably, JobHandle, Run, RunResult, create_durably
from .errors import (
    AmbiguousRunIdError,
    ConfigError,
    DatabaseUrlError,
    DurablyError,
    InputValidationError,
    InvalidArgumentError,
    InvalidStateError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    ScheduleNotFoundError,
    SchemaVersionError,
    StepError,
    StoreError,
    UnknownJobError,
)
from .jobs import JobDefinition, define_job
from .step import Step
from .store.base import LogRecord, Progress, RunRecord, ScheduleState, StepRecord

__version__ = "0.1.0"

__all__ = [
    "AmbiguousRunIdError",
    "ConfigError",
    "DatabaseUrlError",
    "Durably",
    "DurablyError",
    "InputValidationError",
    "InvalidArgumentError",
    "InvalidStateError",
    "JobDefinition",
    "JobHandle",
    "LogRecord",
    "Progress",
    "Run",
    "RunCancelledError",
    "RunFailedError",
    "RunNotFoundError",
    "RunRecord",
    "RunResult",
    "ScheduleNotFoundError",
    "ScheduleState",
    "SchemaVersionError",
    "Step",
    "StepError",
    "StepRecord",
    "StoreError",
    "UnknownJobError",
    "__version__",
    "create_durably",
    "define_job",
]
