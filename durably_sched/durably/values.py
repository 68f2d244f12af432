"""What a trigger returns, and how a trigger's overrides are stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar

from ..errors import InvalidArgumentError
from ..jobs import JobDefinition
from ..retry import Retry, RetryPolicyError, timeout_seconds
from ..store.base import Disposition, RunRecord, RunStatus

O = TypeVar("O")  # noqa: E741

Coalesce = Literal["skip"]
COALESCE_MODES: tuple[str, ...] = ("skip",)


@dataclass(frozen=True, slots=True)
class Run:
    """A run as returned by a trigger: the stored record plus how the trigger was resolved."""

    record: RunRecord
    disposition: Disposition

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def status(self) -> RunStatus:
        return self.record.status

    @property
    def job_name(self) -> str:
        return self.record.job_name


@dataclass(frozen=True, slots=True)
class RunResult(Generic[O]):
    """What ``trigger_and_wait`` returns for a completed run."""

    id: str
    output: O
    disposition: Disposition = "created"


def stored_retry_policy(
    job: JobDefinition[Any, Any], override: Retry | Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """What a run stores of a retry override: the complete policy (the job's, with the fields the
    override changes), or None when there is no override (the job's policy applies as it is)."""
    if override is None:
        return None
    if isinstance(override, Retry):
        return override.to_json()
    if not isinstance(override, Mapping):
        raise TypeError(f"retry must be a Retry or a mapping of its fields (got {type(override).__name__})")
    try:
        return (job.retry or Retry()).merged(override).to_json()
    except RetryPolicyError as exc:
        raise InvalidArgumentError(f"job '{job.name}': retry.{exc}") from None


def stored_timeout(job: JobDefinition[Any, Any], value: float | timedelta | str | None) -> float | None:
    """A run's timeout override as stored (seconds; None: the job's applies); errors name the job."""
    try:
        return timeout_seconds(value)
    except RetryPolicyError as exc:
        raise InvalidArgumentError(f"job '{job.name}': {exc}") from None
