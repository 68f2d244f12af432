"""durably-sched: cron schedules as durable, checkpointed jobs that run exactly once per fire time."""

from .durably import Durably, JobHandle, Run, RunResult, create_durably
from .errors import (
    AmbiguousRunIdError,
    ConfigError,
    DatabaseUrlError,
    DurablyError,
    InputValidationError,
    InvalidStateError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    SchemaVersionError,
    StepError,
    StoreError,
    UnknownJobError,
)
from .jobs import JobDefinition, define_job
from .step import Step
from .store.base import LogRecord, Progress, RunRecord, StepRecord

__version__ = "0.1.0"

__all__ = [
    "AmbiguousRunIdError",
    "ConfigError",
    "DatabaseUrlError",
    "Durably",
    "DurablyError",
    "InputValidationError",
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
