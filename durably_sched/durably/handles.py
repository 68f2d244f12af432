"""``durably.jobs``: one handle per registered job."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic

from ..jobs import JobDefinition
from ..retry import Retry
from ..stream.waiters import LogCallback, ProgressCallback
from .values import Coalesce, O, Run, RunResult

if TYPE_CHECKING:
    from .triggers import Triggers


class JobHandle(Generic[O]):
    """``durably.jobs.<key>``: trigger a registered job."""

    def __init__(self, durably: Triggers, job: JobDefinition[Any, Any]) -> None:
        self._durably = durably
        self.job = job
        self.name = job.name

    async def trigger(
        self,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        labels: Mapping[str, Any] | None = None,
        coalesce: Coalesce | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
    ) -> Run:
        """A run of the job. With ``coalesce="skip"`` (needs ``concurrency_key``), a pending run of
        this job and key that has not started yet is returned instead (disposition ``coalesced``).
        ``retry`` (a Retry, or a mapping of fields to change in the job's policy) and ``run_timeout``
        override the job's for this run and are stored with it."""
        runs = await self._durably._trigger_many(
            self.job,
            [input],
            idempotency_key,
            concurrency_key,
            labels,
            coalesce=coalesce,
            retry=retry,
            run_timeout=run_timeout,
        )
        return runs[0]

    async def batch_trigger(
        self,
        inputs: Iterable[Any],
        *,
        concurrency_key: str | None = None,
        labels: Mapping[str, Any] | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
    ) -> list[Run]:
        """Trigger one run per input in a single write (all validated first; nothing is stored if
        any input is invalid). The runs share ``concurrency_key``, ``labels`` and overrides."""
        return await self._durably._trigger_many(
            self.job, list(inputs), None, concurrency_key, labels, retry=retry, run_timeout=run_timeout
        )

    async def trigger_and_wait(
        self,
        input: Any = None,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        labels: Mapping[str, Any] | None = None,
        coalesce: Coalesce | None = None,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
    ) -> RunResult[O]:
        """Trigger and wait until the run finishes (retries included); ``timeout`` bounds the wait,
        ``run_timeout`` each attempt of the run. ``on_progress``/``on_log`` as in
        :meth:`Durably.wait_for_run` (for a new run: all of its progress and log lines)."""
        durably = self._durably
        waiters = durably.waiters
        run_id = str(uuid.uuid4())
        waiter = waiters.add(run_id)
        try:
            runs = await durably._trigger_many(
                self.job,
                [input],
                idempotency_key,
                concurrency_key,
                labels,
                run_ids=[run_id],
                coalesce=coalesce,
                retry=retry,
                run_timeout=run_timeout,
                claim_here=True,
            )
            run = runs[0]
            if run.id != run_id:  # idempotent or coalesced: an existing run
                waiters.remove(run_id, waiter)
                run_id = run.id
                waiter = waiters.add(run_id)
                if run.record.is_finished:
                    waiters.resolve(run_id)
            if on_progress is not None or on_log is not None:
                after = 0 if run.disposition == "created" else await durably.store.last_log_id(run_id)
                record = await durably._follow(run.record, timeout, on_progress, on_log, after)
                return durably._result_of(self.job, record, run.disposition)
            return await durably._await_result(self.job, run_id, waiter, timeout, run.disposition)
        finally:
            waiters.remove(run_id, waiter)


class JobsNamespace:
    """``durably.jobs``: the handles by the key they were registered under."""

    def __init__(self) -> None:
        self._handles: dict[str, JobHandle[Any]] = {}

    def __getattr__(self, key: str) -> JobHandle[Any]:
        try:
            return self._handles[key]
        except KeyError:
            raise AttributeError(
                f"no job registered as {key!r}; registered: {', '.join(sorted(self._handles)) or 'none'}"
            ) from None

    def __getitem__(self, key: str) -> JobHandle[Any]:
        return self.__getattr__(key)

    def __iter__(self) -> Any:
        return iter(self._handles.items())

    def __len__(self) -> int:
        return len(self._handles)
