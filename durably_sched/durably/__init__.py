"""The ``Durably`` facade: jobs, triggers, waiting, operator actions, schedules, lifecycle.

One class made of parts, one module each (issue 21): :mod:`.base` (the state and jobs by name),
:mod:`.triggers` (creating runs and waiting for them), :mod:`.actions` (reading runs, operator
actions, workers), :mod:`.schedules` (pausing and resuming), :mod:`.facade` (``Durably`` itself:
construction, registration, lifecycle, one-shot processing; and ``create_durably``).
:mod:`.handles` holds ``durably.jobs.<key>`` and :mod:`.values` what a trigger returns.
"""

from .actions import MIN_RUN_ID_PREFIX as MIN_RUN_ID_PREFIX
from .facade import Durably, create_durably
from .handles import JobHandle
from .values import Run, RunResult, stored_retry_policy, stored_timeout

__all__ = [
    "Durably",
    "JobHandle",
    "Run",
    "RunResult",
    "create_durably",
    "stored_retry_policy",
    "stored_timeout",
]
