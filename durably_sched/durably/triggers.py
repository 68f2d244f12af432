"""Creating runs (triggers, batches, the hand-off to this process's producer, schedule fire times)
and waiting for them to finish."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .._bounds import SYSTEM_LABELS, check_key, check_labels, plain_labels, stored_input
from ..errors import InputValidationError, InvalidArgumentError, RunCancelledError, RunFailedError
from ..events import RunCoalescedEvent, RunTriggerEvent, run_scope
from ..jobs import JobDefinition, describe_validation_error
from ..retry import Retry
from ..store.base import Disposition, Fire, FireResult, NewRun, RunRecord
from ..stream.waiters import LogCallback, ProgressCallback, follow_run_updates
from .base import FacadeBase
from .values import COALESCE_MODES, Coalesce, Run, RunResult, stored_retry_policy, stored_timeout

if TYPE_CHECKING:
    from ..execution.producer import HandOff
    from ..stream.waiters import Done


class Triggers(FacadeBase):
    """Creating runs (directly, by schedule fire times) and waiting for them to finish."""

    # -- triggers ------------------------------------------------------------------------------
    async def _trigger_many(
        self,
        job: JobDefinition[Any, Any],
        inputs: Sequence[Any],
        idempotency_key: str | None,
        concurrency_key: str | None,
        labels: Mapping[str, Any] | None,
        run_ids: Sequence[str] | None = None,
        coalesce: Coalesce | None = None,
        *,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
        claim_here: bool = False,
    ) -> list[Run]:
        if coalesce is not None:
            if coalesce not in COALESCE_MODES:
                raise InvalidArgumentError(
                    f"coalesce: unknown mode {coalesce!r} (the mode is 'skip', or None to queue)"
                )
            if concurrency_key is None:
                raise InvalidArgumentError(
                    f"coalesce={coalesce!r} needs a concurrency_key: it joins the pending run of "
                    f"job '{job.name}' with the same key"
                )
        label_map = self.validate_labels(labels)
        check_key(self.limits, "idempotency_key", idempotency_key)
        check_key(self.limits, "concurrency_key", concurrency_key)
        policy = stored_retry_policy(job, retry)
        seconds = stored_timeout(job, run_timeout)
        new_runs = [
            NewRun(
                id=run_ids[i] if run_ids else str(uuid.uuid4()),
                job_name=job.name,
                input=stored_input(self.limits, job, raw),
                idempotency_key=idempotency_key,
                concurrency_key=concurrency_key,
                labels=label_map,
                coalesce=coalesce is not None,
                retry_policy=policy,
                timeout=seconds,
            )
            for i, raw in enumerate(inputs)
        ]
        if not new_runs:
            return []
        slot = self.worker.hand_off(job.name) if claim_here and len(new_runs) == 1 else None
        if slot is not None:
            return [await self._create_here(new_runs[0], slot)]
        runs = [Run(record, disposition) for record, disposition in await self.store.create_runs(new_runs)]
        self._after_trigger(runs, new_runs)
        return runs

    async def _create_here(self, new: NewRun, slot: HandOff) -> Run:
        """Create a run already claimed by this process's worker, in a slot held for it: it
        starts without waiting for a wake-up or a claim's round trips (where the store can do it in
        the insert; see Store.create_and_claim)."""
        async with slot:
            record, disposition = await self.store.create_and_claim(
                new, slot.worker_id, list(self._by_name), slot.lease_seconds
            )
            run = Run(record, disposition)
            if disposition != "created" or record.status != "running" or record.worker_id != slot.worker_id:
                self._after_trigger([run], [new])
                return run
            self._after_trigger([run], [new], wake=False)
            await slot.take(record)
            return run

    def _after_trigger(self, runs: Sequence[Run], asked: Sequence[NewRun] = (), *, wake: bool = True) -> None:
        if wake and any(r.disposition == "created" for r in runs):
            self.worker.wake()
        if self.events.wants("run:trigger"):
            for run in runs:
                if run.disposition == "created":
                    rec = run.record
                    self.events.emit(RunTriggerEvent(**run_scope(rec), input=rec.input))
        if self.events.wants("run:coalesced"):
            for run, new in zip(runs, asked, strict=False):
                if run.disposition == "coalesced":
                    rec = run.record
                    self.events.emit(
                        RunCoalescedEvent(
                            **run_scope(rec),
                            skipped_input=new.input,
                            skipped_labels=new.labels,
                        )
                    )

    def validate_labels(self, labels: Mapping[str, Any] | None, *, where: str = "") -> dict[str, str]:
        """The labels a trigger stores: checked against the ``labels`` model when there is one
        (its defaults filled in), else as a plain str -> str mapping, then against ``limits``
        (LimitExceededError). Raises InputValidationError naming the field. ``schedule``,
        ``scheduled_for`` and ``apscheduler_job`` (set by durably-sched) pass through unless the
        model declares them."""
        model = self.labels_model
        if model is None:
            return check_labels(self.limits, plain_labels(labels), where)
        given = dict(labels or {})
        for key in given:
            if not isinstance(key, str):
                raise InputValidationError(f"{where}labels: keys must be strings (got {key!r})")
        declared = model.model_fields
        system = {k: v for k, v in given.items() if k in SYSTEM_LABELS and k not in declared}
        try:
            parsed = model.model_validate({k: v for k, v in given.items() if k not in system})
        except ValidationError as exc:
            raise InputValidationError(
                f"{where}labels: {describe_validation_error(exc)} ({model.__name__})"
            ) from None
        out: dict[str, str] = {}
        for key, value in parsed.model_dump(mode="json", exclude_none=True).items():
            if not isinstance(value, str):
                raise InputValidationError(
                    f"{where}labels: field '{key}' of {model.__name__} is {type(value).__name__} "
                    f"{value!r}; label values are strings (declare the field as str)"
                )
            out[key] = value
        for key, value in system.items():
            if not isinstance(value, str):
                raise InputValidationError(f"{where}labels: '{key}' must be a string (got {value!r})")
            out[key] = value
        return check_labels(self.limits, out, where)

    async def trigger(
        self,
        job_name: str,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        labels: Mapping[str, Any] | None = None,
        coalesce: Coalesce | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        run_timeout: float | timedelta | str | None = None,
    ) -> Run:
        """Trigger a job by its name (``durably.jobs.<key>.trigger`` is the usual way)."""
        job = self.job_by_name(job_name)
        runs = await self._trigger_many(
            job,
            [input],
            idempotency_key,
            concurrency_key,
            labels,
            coalesce=coalesce,
            retry=retry,
            run_timeout=run_timeout,
        )
        return runs[0]

    async def fire(self, fire: Fire) -> FireResult:
        """Handle one schedule fire time (used by the scheduler and slot triggers)."""
        return (await self.fire_many([fire]))[0]

    async def fire_many(self, fires: Sequence[Fire], *, checked: bool = False) -> list[FireResult]:
        """Handle several fire times in one transaction, in the order given (backfills, a
        scheduler's tick): their runs are created in that order, so a queue of them runs in
        fire-time order. ``checked``: the runs are as :meth:`scheduled_run` returns them (the
        scheduler checks each schedule's run once, when it loads), so they are not checked again."""
        ready = (
            fires
            if checked
            else [
                dataclasses.replace(f, run=self.scheduled_run(f.schedule, f.run)) if f.run is not None else f
                for f in fires
            ]
        )
        results = await self.store.fire_many(ready)
        created = [Run(r.run, "created") for r in results if r.run is not None and r.outcome == "triggered"]
        if created:
            self._after_trigger(created)
        return results

    def scheduled_run(self, schedule: str, run: NewRun) -> NewRun:
        """A schedule's run as it is stored, exactly as a direct trigger would store it (defaults
        filled in, the retry override completed from the job's policy, the limits checked); the
        errors name the schedule. The scheduler checks each schedule once this way when it loads."""
        job = self.job_by_name(run.job_name)
        where = f"schedule '{schedule}': "
        stored = stored_input(self.limits, job, run.input, where)
        labels = self.validate_labels(run.labels, where=where)
        check_key(self.limits, "idempotency_key", run.idempotency_key, where)
        check_key(self.limits, "concurrency_key", run.concurrency_key, where)
        policy, seconds = stored_retry_policy(job, run.retry_policy), stored_timeout(job, run.timeout)
        return dataclasses.replace(run, input=stored, labels=labels, retry_policy=policy, timeout=seconds)

    # -- waiting ---------------------------------------------------------------------------------
    def _finished_here(self, run_id: str, completed: bool, output: Any) -> None:
        """The worker finished a run: wake its waiters without a database round trip."""
        self.waiters.resolve(run_id, (True, output) if completed else None)

    async def _await_result(
        self,
        job: JobDefinition[Any, Any],
        run_id: str,
        waiter: asyncio.Future[Done],
        timeout: float | None,
        disposition: Disposition,
    ) -> RunResult[Any]:
        (here, value), record = await self.waiters.wait(run_id, waiter, timeout)
        if here or record is None:
            return RunResult(id=run_id, output=value, disposition=disposition)
        return self._result_of(job, record, disposition)

    def _result_of(
        self, job: JobDefinition[Any, Any], record: RunRecord, disposition: Disposition
    ) -> RunResult[Any]:
        if record.status == "completed":
            return RunResult(id=record.id, output=job.parse_output(record.output), disposition=disposition)
        if record.status == "cancelled":
            raise RunCancelledError(record.id)
        raise RunFailedError(record.id, record.error, record.failed_step_name)

    async def wait_for_run(
        self,
        run_id: str,
        timeout: float | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
    ) -> RunRecord:
        """Wait until a run (triggered anywhere, executing anywhere) finishes; returns its final
        record, whatever its status. Raises TimeoutError after ``timeout`` seconds (the run goes on).

        ``on_progress(progress)`` is called for every change of the run's progress and
        ``on_log(log_record)`` for every log line stored, both from the moment of the call on (as in
        the TypeScript library: no replay; ``get_run(...).progress`` and ``get_logs`` give what
        was before), in order, once each. Either may be a coroutine function; an exception it
        raises ends the wait and propagates.
        """
        waiter = self.waiters.add(run_id)
        try:
            record = await self.get_run(run_id)
            if record.is_finished:
                return record
            if on_progress is not None or on_log is not None:
                after = await self.store.last_log_id(run_id) if on_log is not None else 0
                return await self._follow(record, timeout, on_progress, on_log, after)
            _, final = await self.waiters.wait(run_id, waiter, timeout)
            return final if final is not None else await self.get_run(run_id)
        finally:
            self.waiters.remove(run_id, waiter)

    async def _follow(
        self,
        record: RunRecord,
        timeout: float | None,
        on_progress: ProgressCallback | None,
        on_log: LogCallback | None,
        after_log_id: int,
    ) -> RunRecord:
        try:
            async with asyncio.timeout(timeout):
                return await follow_run_updates(
                    self.feed, record, on_progress=on_progress, on_log=on_log, after_log_id=after_log_id
                )
        except TimeoutError:
            raise TimeoutError(f"run {record.id} did not finish within {timeout}s") from None
