"""The worker on failures you can act on, in one process, on SQLite and PostgreSQL (``backend``):
tracebacks, automatic retries, timeouts, cooperative cancellation, a stop that stops, the worker
registry and early takeover of a gone worker on this host.

Crash and multi-process behaviour (kill -9, SIGSTOP, SIGTERM of real serve processes) is in
tests/system/test_failures_serve.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from durably_sched import (
    CancelToken,
    Durably,
    NonRetryableError,
    Retry,
    RunFailedError,
    Step,
    StepCancelled,
    define_job,
)
from durably_sched._tracebacks import ERROR_LIMIT, format_traceback
from durably_sched.errors import RunTimeoutError, StepTimeoutError
from durably_sched.ops.logging import exception_text
from durably_sched.registry import host_identity
from durably_sched.step import MAX_PENDING_LOGS
from durably_sched.store.base import WorkerInfo
from durably_sched.store.rows import TRACEBACK_LIMIT
from tests.backends import Backend
from tests.helpers import durably_factory, until


@pytest.fixture
def db_url(backend: Backend) -> str:
    return backend.url


@pytest.fixture
async def make(db_url: str) -> AsyncIterator[Callable[..., Any]]:
    async with durably_factory(db_url, stale_threshold=2.0) as factory:
        yield factory


def quick(**changes: Any) -> Retry:
    """A retry policy for tests: short, exact delays (no jitter)."""
    values: dict[str, Any] = {"max_attempts": 3, "backoff": 0.3, "multiplier": 1.0, "jitter": 0.0}
    values.update(changes)
    return Retry(**values)


def collect(durably: Durably, *types: str) -> list[Any]:
    seen: list[Any] = []
    for kind in types:
        durably.on(kind, seen.append)
    return seen


# -- tracebacks -------------------------------------------------------------------------------------


async def test_a_failed_run_keeps_its_traceback_and_events_and_the_log_carry_it(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def parse(data: bytes) -> None:
        raise ValueError("not a binary PPM image")

    async def convert(step: Step, payload: dict[str, Any]) -> None:
        await step.run("decode", lambda: parse(b"P3"))

    durably = await make(define_job(name="convert", run=convert))
    events = collect(durably, "run:fail", "step:fail")
    with caplog.at_level(logging.ERROR, logger="durably_sched.worker"):
        with pytest.raises(RunFailedError, match="not a binary PPM image") as failed:
            await durably.jobs.convert.trigger_and_wait({}, timeout=10)
    run = await durably.get_run(failed.value.run_id)
    assert run.error == "ValueError: not a binary PPM image"
    assert run.failed_step_name == "decode" and run.failed_attempts == 1
    assert run.traceback is not None
    assert run.traceback.startswith("Traceback (most recent call last):")
    assert 'test_worker.py", line' in run.traceback and "in parse" in run.traceback
    # The exception line ends it, followed (a note, as Python prints them) by what was left out.
    assert run.traceback.rstrip().splitlines()[-2:][0] == "ValueError: not a binary PPM image"
    step_fail = next(e for e in events if e.type == "step:fail")
    run_fail = next(e for e in events if e.type == "run:fail")
    assert "in parse" in step_fail.traceback and run_fail.traceback == run.traceback
    [record] = [r for r in caplog.records if r.name == "durably_sched.worker" and r.levelno == logging.ERROR]
    assert "run failed in step 'decode'" in record.getMessage()
    assert record.exc_info is not None and record.__dict__["run_id"] == run.id
    assert record.__dict__["job"] == "convert"
    # The worker, step.run and the step thread say nothing about the failure: their frames are left
    # out (counted), in the stored traceback and in serve's log alike.
    frames = [line for line in run.traceback.splitlines() if line.lstrip().startswith('File "')]
    assert frames and all("durably_sched" not in line for line in frames), run.traceback
    assert re.search(r"^\(\d+ frames of durably-sched not shown\)$", run.traceback, re.M)
    assert exception_text(record.exc_info) == run.traceback.rstrip("\n")


def test_a_traceback_keeps_the_frame_it_was_raised_in_and_tracebacks_of_the_library_alone() -> None:
    from durably_sched import _tracebacks

    def ours() -> BaseException:  # as if raised inside durably-sched (its file counts as ours)
        try:
            exec(compile("raise KeyError('inside')", _tracebacks.__file__, "exec"))
        except KeyError as exc:
            return exc
        raise AssertionError

    text = format_traceback(ours())
    assert text.count('File "') == 2 and "not shown" not in text  # test frame + the raise site, ours
    try:
        try:
            int("x")
        except ValueError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as exc:
        chained = format_traceback(exc)
    assert "ValueError: invalid literal" in chained and "RuntimeError: wrapped" in chained
    assert "direct cause" in chained and "not shown" not in chained  # nothing of ours to leave out


# -- automatic retries ------------------------------------------------------------------------------


async def test_a_retried_run_resumes_after_its_last_step_after_its_backoff(make: Any) -> None:
    calls: list[tuple[str, float]] = []

    def effect(name: str) -> str:
        calls.append((name, time.monotonic()))
        return name

    def flaky() -> str:
        calls.append(("flaky", time.monotonic()))
        if sum(1 for name, _ in calls if name == "flaky") < 3:
            raise OSError("connection reset")
        return "ok"

    async def sync(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        first = await step.run("download", lambda: effect("download"))
        second = await step.run("upload", flaky)
        return {"steps": [first, second], "failed_before": step.failed_attempts}

    job = define_job(name="sync", run=sync, retry=quick(max_attempts=3, backoff=0.4))
    durably = await make(job)
    events = collect(durably, "run:retry-scheduled", "run:fail", "run:complete")
    result = await durably.jobs.sync.trigger_and_wait({}, timeout=20)
    assert result.output == {"steps": ["download", "ok"], "failed_before": 2}
    assert [name for name, _ in calls] == ["download", "flaky", "flaky", "flaky"]  # download ran once
    flaky_times = [t for name, t in calls if name == "flaky"]
    assert flaky_times[1] - flaky_times[0] >= 0.4 and flaky_times[2] - flaky_times[1] >= 0.4
    assert [e.type for e in events] == ["run:retry-scheduled", "run:retry-scheduled", "run:complete"]
    first = events[0]
    assert (first.failed_attempts, first.max_attempts, first.delay) == (1, 3, pytest.approx(0.4))
    assert first.error == "OSError: connection reset" and first.failed_step_name == "upload"
    run = await durably.get_run(result.id)
    assert (run.status, run.failed_attempts, run.attempt, run.error, run.not_before) == (
        "completed",
        2,
        3,
        None,
        None,
    )
    assert [s.name for s in await durably.get_steps(result.id)] == ["download", "upload"]


async def test_every_attempt_of_a_retried_run_is_kept_and_the_resume_log_says_the_try_once(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 25: a run that failed twice and then completed keeps both errors (with their steps and
    tracebacks) next to its completion; serve's log of the retry says "try 2 of 3", once."""
    failures = iter(["connection reset", "timed out"])

    async def flaky(step: Step, payload: dict[str, Any]) -> dict[str, str]:
        await step.run("download", lambda: "bytes")
        message = next(failures, None)
        if message is not None:
            await step.run(f"upload-{message[:5]}", functools.partial(_raise, OSError(message)))
        return {"ok": "yes"}

    durably = await make(define_job(name="flaky", run=flaky, retry=quick(max_attempts=3, backoff=0.05)))
    with caplog.at_level(logging.INFO, logger="durably_sched.worker"):
        result = await durably.jobs.flaky.trigger_and_wait({}, timeout=20)
    attempts = await durably.get_attempts(result.id)
    assert [(a.attempt, a.outcome, a.failed_attempts) for a in attempts] == [
        (1, "failed", 1),
        (2, "failed", 2),
        (3, "completed", 2),
    ]
    assert [a.error for a in attempts] == ["OSError: connection reset", "OSError: timed out", None]
    assert [a.failed_step_name for a in attempts] == ["upload-conne", "upload-timed", None]
    assert all(
        a.traceback and "Traceback" in a.traceback and (a.error or "-") in a.traceback for a in attempts[:2]
    )
    assert attempts[2].traceback is None
    assert all(a.worker_id and a.started_at and a.started_at <= a.ended_at for a in attempts)
    resumed = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith(f"resumed run {result.id}")
    ]
    assert [m.split("(", 1)[1] for m in resumed] == ["try 2 of 3)", "try 3 of 3)"]


async def test_a_huge_error_message_is_bounded_on_the_run_and_its_attempts(make: Any) -> None:
    async def huge(step: Step, payload: dict[str, Any]) -> None:
        raise ValueError("x" * 200_000)

    durably = await make(define_job(name="huge", run=huge))
    with pytest.raises(RunFailedError):
        await durably.jobs.huge.trigger_and_wait({}, timeout=20)
    [run] = await durably.get_runs(limit=1)
    [attempt] = await durably.get_attempts(run.id)
    assert run.error is not None and attempt.error == run.error
    assert len(run.error) <= ERROR_LIMIT and run.error.startswith("ValueError: xxx")
    assert run.error.endswith("characters cut]")
    assert attempt.traceback is not None and len(attempt.traceback) <= TRACEBACK_LIMIT + 100


def _raise(exc: BaseException) -> None:
    raise exc


async def test_a_run_waiting_for_its_backoff_is_pending_held_by_nobody(make: Any) -> None:
    async def fails(step: Step, payload: dict[str, Any]) -> None:
        raise RuntimeError("down")

    durably = await make(define_job(name="fails", run=fails, retry=quick(backoff=60)))
    run = await durably.jobs.fails.trigger({})
    await until(lambda: _status(durably, run.id, "pending", failed=1), 10, "first attempt failed")
    waiting = await durably.get_run(run.id)
    assert waiting.lease_expires_at is None and waiting.not_before is not None
    assert waiting.not_before > datetime.now(UTC)
    assert waiting.error == "RuntimeError: down" and waiting.traceback
    reason = await durably.waiting_reason(waiting)
    assert reason is not None and reason.startswith("retry after 1 failed attempt, in ")

    # Other runs go ahead meanwhile.
    async def ok(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    other = await make(define_job(name="ok", run=ok))
    assert (await other.jobs.ok.trigger_and_wait({}, timeout=10)).output == {"ok": True}
    assert (await durably.get_run(run.id)).status == "pending"


async def _status(durably: Durably, run_id: str, status: str, failed: int | None = None) -> bool:
    run = await durably.get_run(run_id)
    return run.status == status and (failed is None or run.failed_attempts == failed)


async def test_retries_give_up_after_max_attempts(make: Any) -> None:
    attempts: list[int] = []

    async def always(step: Step, payload: dict[str, Any]) -> None:
        attempts.append(step.attempt)
        raise ConnectionError("no route to host")

    durably = await make(define_job(name="always", run=always, retry=quick(max_attempts=3, backoff=0.05)))
    events = collect(durably, "run:retry-scheduled", "run:fail")
    with pytest.raises(RunFailedError, match="no route to host") as failed:
        await durably.jobs.always.trigger_and_wait({}, timeout=20)
    assert attempts == [1, 2, 3]
    run = await durably.get_run(failed.value.run_id)
    assert (run.status, run.failed_attempts) == ("failed", 3)
    assert [e.type for e in events] == ["run:retry-scheduled", "run:retry-scheduled", "run:fail"]
    assert events[-1].failed_attempts == 3


class BadInput(Exception):
    pass


@pytest.mark.parametrize("error", ["give_up_on", "non_retryable", "not_retry_on"])
async def test_errors_the_policy_does_not_retry_fail_at_once(make: Any, error: str) -> None:
    async def job_fn(step: Step, payload: dict[str, Any]) -> None:
        if error == "give_up_on":
            raise BadInput("row 3 has no date")
        if error == "non_retryable":
            raise NonRetryableError("the account was closed")
        raise KeyError("missing")

    policy = quick(give_up_on=(BadInput,), retry_on=(OSError, BadInput, NonRetryableError))
    durably = await make(define_job(name="strict", run=job_fn, retry=policy))
    with pytest.raises(RunFailedError) as failed:
        await durably.jobs.strict.trigger_and_wait({}, timeout=10)
    run = await durably.get_run(failed.value.run_id)
    assert (run.status, run.failed_attempts, run.attempt) == ("failed", 1, 1)


async def test_an_invalid_output_is_not_retried(make: Any) -> None:
    class Out(BaseModel):
        count: int

    async def wrong(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {"count": "many"}

    durably = await make(define_job(name="wrong", run=wrong, output=Out, retry=quick()))
    with pytest.raises(RunFailedError, match="invalid output") as failed:
        await durably.jobs.wrong.trigger_and_wait({}, timeout=10)
    assert (await durably.get_run(failed.value.run_id)).failed_attempts == 1


async def test_a_trigger_overrides_the_jobs_policy_and_the_run_keeps_it(make: Any) -> None:
    attempts: list[int] = []

    async def fails(step: Step, payload: dict[str, Any]) -> None:
        attempts.append(step.attempt)
        raise RuntimeError("flaky")

    durably = await make(define_job(name="fails", run=fails, retry=quick(max_attempts=2, backoff=0.05)))
    with pytest.raises(RunFailedError) as failed:
        await durably.jobs.fails.trigger_and_wait({}, timeout=20, retry={"max_attempts": 4})
    assert attempts == [1, 2, 3, 4]
    run = await durably.get_run(failed.value.run_id)
    assert run.retry_policy is not None
    assert run.retry_policy["max_attempts"] == 4 and run.retry_policy["backoff"] == 0.05  # rest: the job's
    plain = await durably.jobs.fails.trigger({})
    assert (await durably.get_run(plain.id)).retry_policy is None


async def test_bad_retry_and_timeout_values_name_the_field(make: Any) -> None:
    with pytest.raises(ValueError, match=r"^max_attempts: must be at least 1"):
        Retry(max_attempts=0)
    with pytest.raises(ValueError, match=r"^backoff: must not be negative"):
        Retry(backoff=-1)
    with pytest.raises(ValueError, match=r"^backoff: 2d is more than a day; set max_backoff"):
        Retry(backoff="2d")
    with pytest.raises(ValueError, match=r"^job 'x': timeout: must be longer than 0"):
        define_job(name="x", run=_noop, timeout=0)
    with pytest.raises(ValueError, match=r"^job 'x': timeout: .*must not be negative"):
        define_job(name="x", run=_noop, timeout="-5s")
    durably = await make(define_job(name="x", run=_noop))
    with pytest.raises(ValueError, match=r"job 'x': retry.max_attempts: must be at least 1"):
        await durably.jobs.x.trigger({}, retry={"max_attempts": 0})
    assert await durably.get_runs() == []  # nothing half-written


async def _noop(step: Step, payload: dict[str, Any]) -> None:
    return None


async def test_a_manual_retry_gives_a_fresh_budget(make: Any) -> None:
    attempts: list[int] = []

    async def fails(step: Step, payload: dict[str, Any]) -> None:
        attempts.append(step.failed_attempts)
        raise RuntimeError("down")

    durably = await make(define_job(name="fails", run=fails, retry=quick(max_attempts=2, backoff=0.05)))
    with pytest.raises(RunFailedError) as failed:
        await durably.jobs.fails.trigger_and_wait({}, timeout=20)
    run_id = failed.value.run_id
    await durably.retry(run_id)
    await until(lambda: _status(durably, run_id, "failed", failed=2), 20, "the retried run failed twice")
    assert attempts == [0, 1, 0, 1]  # two attempts, then two more after the manual retry


# -- timeouts ---------------------------------------------------------------------------------------


async def test_an_async_step_is_cancelled_at_its_timeout(make: Any) -> None:
    reached: list[str] = []

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            reached.append("cancelled")
            raise
        return "never"

    async def job_fn(step: Step, payload: dict[str, Any]) -> None:
        await step.run("slow", slow, timeout=0.2)

    durably = await make(define_job(name="t", run=job_fn))
    with pytest.raises(RunFailedError) as failed:
        await durably.jobs.t.trigger_and_wait({}, timeout=10)
    assert reached == ["cancelled"]
    run = await durably.get_run(failed.value.run_id)
    assert run.error == "StepTimeoutError: step 'slow' did not finish within 0.2s"
    assert run.failed_step_name == "slow"


async def test_a_sync_step_past_its_timeout_is_told_to_stop_and_its_late_result_is_dropped(
    make: Any,
) -> None:
    release = threading.Event()
    seen: dict[str, Any] = {}

    def stubborn(token: CancelToken) -> str:
        seen["cancelled_at_timeout"] = token.wait(30)  # wakes when the step times out
        seen["reason"] = token.reason
        release.wait(30)  # and then ignores it for a while
        seen["returned"] = True
        return "late"

    async def job_fn(step: Step, payload: dict[str, Any]) -> None:
        await step.run("stubborn", stubborn, timeout=0.3)

    durably = await make(define_job(name="s", run=job_fn))
    with pytest.raises(RunFailedError, match="StepTimeoutError") as failed:
        await durably.jobs.s.trigger_and_wait({}, timeout=10)
    # The token is set before the run fails; the thread notes it on its own time.
    await until(lambda: "reason" in seen, 10, "the thread saw the token")
    assert seen == {"cancelled_at_timeout": True, "reason": "timeout"}  # failed before the thread ended
    release.set()
    await until(lambda: seen.get("returned"), 10, "the thread returned")
    assert await durably.get_steps(failed.value.run_id) == []  # the late result was not checkpointed


async def test_a_run_timeout_fails_one_attempt_and_a_retry_gets_a_fresh_one(make: Any) -> None:
    durations: list[float] = []

    async def job_fn(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("quick", lambda: "done")
        seconds = 5.0 if step.failed_attempts == 0 else 0.05
        durations.append(seconds)
        await step.run("wait", lambda: asyncio.sleep(seconds))
        return {"attempt": step.attempt}

    job = define_job(name="rt", run=job_fn, timeout=1.0, retry=quick(max_attempts=2, backoff=0.05))
    durably = await make(job)
    events = collect(durably, "run:retry-scheduled", "step:cancel")
    result = await durably.jobs.rt.trigger_and_wait({}, timeout=20)
    assert result.output == {"attempt": 2} and durations == [5.0, 0.05]
    retry = next(e for e in events if e.type == "run:retry-scheduled")
    assert retry.error == f"RunTimeoutError: run {result.id} did not finish within 1s"
    assert retry.failed_step_name == "wait"
    cancel = next(e for e in events if e.type == "step:cancel")
    assert (cancel.step_name, cancel.reason) == ("wait", "timeout")


async def test_a_run_timeout_override_from_a_trigger(make: Any) -> None:
    async def sleeper(step: Step, payload: dict[str, Any]) -> None:
        await asyncio.sleep(30)

    durably = await make(define_job(name="sleeper", run=sleeper))
    with pytest.raises(RunFailedError, match="RunTimeoutError") as failed:
        await durably.jobs.sleeper.trigger_and_wait({}, timeout=10, run_timeout="0.3s")
    assert (await durably.get_run(failed.value.run_id)).timeout == 0.3


def test_timeout_errors_are_timeout_errors() -> None:
    assert issubclass(StepTimeoutError, TimeoutError) and issubclass(RunTimeoutError, TimeoutError)
    assert Retry(give_up_on=(TimeoutError,)).retries(RunTimeoutError("r", 1)) is False


# -- cooperative cancellation -------------------------------------------------------------------------


async def test_cancelling_a_run_sets_the_token_of_its_sync_step_which_stops_itself(make: Any) -> None:
    started = threading.Event()
    rows: list[int] = []

    def export(token: CancelToken) -> int:
        started.set()
        for row in range(10_000):
            token.raise_if_cancelled()
            rows.append(row)
            token.wait(0.01)
        return len(rows)

    async def job_fn(step: Step, payload: dict[str, Any]) -> None:
        assert not step.cancelled
        await step.run("export", export)
        await step.run("never", lambda: "no")

    durably = await make(define_job(name="export", run=job_fn))
    events = collect(durably, "step:cancel", "step:complete", "run:fail")
    run = await durably.jobs.export.trigger({})
    await until(started.is_set, 10, "the step started")
    await durably.cancel(run.id)
    await until(lambda: [e for e in events if e.type == "step:cancel"], 10, "step:cancel")
    [cancel] = events
    assert (cancel.step_name, cancel.reason, cancel.run_id) == ("export", "cancelled", run.id)
    await until(lambda: not durably.worker.active, 10, "the run's task ended")
    final = await durably.get_run(run.id)
    assert final.status == "cancelled" and final.step_count == 0  # nothing was checkpointed
    assert len(rows) < 10_000


async def test_step_cancelled_is_not_swallowed_by_except_exception(make: Any) -> None:
    def careless(token: CancelToken) -> str:
        token.wait(30)
        try:
            token.raise_if_cancelled()
        except Exception:  # a BaseException, like asyncio.CancelledError: not caught here
            return "swallowed"
        return "unreachable"

    async def job_fn(step: Step, payload: dict[str, Any]) -> None:
        await step.run("careless", careless)

    durably = await make(define_job(name="careless", run=job_fn))
    run = await durably.jobs.careless.trigger({})
    await until(lambda: run.id in durably.worker.active, 10, "claimed")
    await durably.cancel(run.id)
    await until(lambda: not durably.worker.active, 10, "the run's task ended")
    assert (await durably.get_run(run.id)).step_count == 0
    with pytest.raises(StepCancelled):
        token = CancelToken()
        token.cancel("stopping")
        token.raise_if_cancelled()


async def test_a_lost_lease_sets_the_token(make: Any, backend: Backend) -> None:
    reasons: list[str | None] = []

    def long(token: CancelToken) -> None:
        token.wait(30)
        reasons.append(token.reason)

    async def job_fn(step: Step, payload: dict[str, Any]) -> None:
        await step.run("long", long)

    durably = await make(define_job(name="long", run=job_fn))
    run = await durably.jobs.long.trigger({})
    await until(lambda: run.id in durably.worker.active, 10, "claimed")
    # Another worker takes the run over (its lease expired); the next renewal says "lost".
    other = await backend.open_store()

    async def steal() -> bool:
        await backend.expire_lease(run.id)  # the holder's heartbeat may renew it again first
        return bool(await other.claim("thief", ["long"], 1, 60))

    await until(steal, 10, "another worker took the run")
    await until(lambda: reasons, 10, "the step saw its token")
    assert reasons == ["lease-lost"]


# -- a stop that stops ------------------------------------------------------------------------------------


async def test_stop_starts_no_new_step_lets_the_step_in_flight_checkpoint_and_releases_at_once(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    in_step = asyncio.Event()
    finish = asyncio.Event()
    started: list[int] = []

    async def long_step(i: int) -> int:
        started.append(i)
        if i == 2:
            in_step.set()
            await finish.wait()
        return i

    async def many(step: Step, payload: dict[str, Any]) -> None:
        for i in range(200):
            await step.run(f"s{i}", lambda i=i: long_step(i))

    durably = await make(define_job(name="many", run=many), stale_threshold=30.0)
    run = await durably.jobs.many.trigger({})
    await asyncio.wait_for(in_step.wait(), 10)
    with caplog.at_level(logging.INFO, logger="durably_sched.worker"):
        stopping = asyncio.create_task(durably.stop(grace=30))
        await until(lambda: durably.worker._stopping, 5, "stop began")
        finish.set()  # the step in flight finishes within the grace
        t0 = time.monotonic()
        await asyncio.wait_for(stopping, 10)
    assert time.monotonic() - t0 < 10  # released at once, not after the 30 s grace
    assert started == [0, 1, 2]  # no step after the one in flight
    released = await durably.get_run(run.id)
    assert (released.status, released.step_count, released.lease_expires_at) == ("pending", 3, None)
    assert any(f"released run {run.id} at step 3" in r.getMessage() for r in caplog.records)


async def test_a_step_outliving_the_grace_is_told_to_stop_and_the_run_is_released(make: Any) -> None:
    reasons: list[str | None] = []
    started = threading.Event()

    def long(token: CancelToken) -> None:
        started.set()
        token.wait(30)
        reasons.append(token.reason)

    async def job_fn(step: Step, payload: dict[str, Any]) -> None:
        await step.run("long", long)

    durably = await make(define_job(name="long", run=job_fn), stale_threshold=30.0)
    events = collect(durably, "step:cancel")
    await durably.jobs.long.trigger({})
    # The step runs (claimed is not enough: a stop before the step starts releases the run with
    # the step never begun, which a test of its own covers).
    await until(started.is_set, 10, "the step started")
    run = next(iter(durably.worker.active.values())).ctx.run
    await durably.stop(grace=0.3)
    released = await durably.get_run(run.id)
    assert (released.status, released.lease_expires_at) == ("pending", None)
    await until(lambda: reasons, 10, "the step saw its token")
    assert reasons == ["stopping"]
    assert [(e.step_name, e.reason) for e in events] == [("long", "stopping")]


async def test_a_claim_in_flight_during_stop_is_never_left_held(make: Any) -> None:
    """The claim has committed but its answer has not reached the worker when the stop begins."""

    async def job_fn(step: Step, payload: dict[str, Any]) -> None:
        await step.run("one", lambda: 1)

    durably = await make(define_job(name="j", run=job_fn), start=False, stale_threshold=60.0)
    run = await durably.jobs.j.trigger({})
    store = durably.store
    claim = store.claim
    in_flight = asyncio.Event()

    async def slow_answer(*args: Any, **kwargs: Any) -> Any:
        claimed = await claim(*args, **kwargs)  # committed: the run is running, held by us
        if claimed:
            in_flight.set()
            # ... and the answer is still on its way when the stop begins
            await until(lambda: durably.worker.stopping, 10, "the stop began")
        return claimed

    store.claim = slow_answer  # type: ignore[method-assign]
    await durably.start()
    await asyncio.wait_for(in_flight.wait(), 10)
    await durably.stop(grace=1)
    final = await durably.get_run(run.id)
    assert (final.status, final.lease_expires_at, final.step_count) == ("pending", None, 0)


async def test_a_claim_in_flight_outliving_the_grace_is_released_too(make: Any) -> None:
    durably = await make(define_job(name="j", run=_noop), start=False, stale_threshold=60.0)
    run = await durably.jobs.j.trigger({})
    claim = durably.store.claim
    in_flight = asyncio.Event()

    async def slow_answer(*args: Any, **kwargs: Any) -> Any:
        claimed = await claim(*args, **kwargs)
        if claimed:
            in_flight.set()
            await until(lambda: durably.worker.stopping, 10, "the stop began")
            await asyncio.sleep(0.3)  # outlives the stop's 0.1 s grace: the case under test
        return claimed

    durably.store.claim = slow_answer  # type: ignore[method-assign]
    await durably.start()
    await asyncio.wait_for(in_flight.wait(), 10)
    await durably.stop(grace=0.1)
    final = await durably.get_run(run.id)
    assert (final.status, final.lease_expires_at) == ("pending", None)


# -- registry and takeover ---------------------------------------------------------------------------------


async def test_workers_register_beat_and_deregister(make: Any) -> None:
    durably = await make(define_job(name="a", run=_noop), max_concurrent_runs=3)
    await until(lambda: durably.worker.leases.registered, 10, "registered")
    [row] = [w for w in await durably.list_workers() if w.id == durably.worker.worker_id]
    identity = host_identity()
    assert (row.host, row.pid, row.jobs, row.concurrency, row.state) == (
        identity.host,
        os.getpid(),
        ("a",),
        3,
        "live",
    )
    assert row.host_key == identity.host_key and row.lease_seconds == 2.0
    first = row.heartbeat_at
    await until(lambda: _beat_after(durably, first), 10, "a heartbeat")
    await durably.stop()
    assert durably.worker.worker_id not in {w.id for w in await durably.list_workers()}


async def _beat_after(durably: Durably, when: datetime) -> bool:
    rows = [w for w in await durably.list_workers() if w.id == durably.worker.worker_id]
    return bool(rows) and rows[0].heartbeat_at > when


async def test_pending_runs_of_a_job_no_live_worker_has_are_named(make: Any) -> None:
    served = await make(define_job(name="served", run=_noop), start=False)
    await served.jobs.served.trigger({})
    trigger_only = await make(define_job(name="oops", run=_noop), start=False)
    oops = await trigger_only.jobs.oops.trigger({})
    await served.start()
    await until(lambda: served.worker.leases.registered, 10, "registered")
    assert await served.jobs_without_worker() == {"oops": 1}
    reason = await served.waiting_reason(await served.get_run(oops.id))
    assert reason == "no live worker has job 'oops'"


async def test_a_pending_run_behind_its_concurrency_key_says_so(make: Any) -> None:
    gate = asyncio.Event()

    async def blocker(step: Step, payload: dict[str, Any]) -> None:
        await gate.wait()

    durably = await make(define_job(name="b", run=blocker))
    first = await durably.jobs.b.trigger({}, concurrency_key="k")
    second = await durably.jobs.b.trigger({}, concurrency_key="k")
    await until(lambda: first.id in durably.worker.active, 10, "first running")
    reason = await durably.waiting_reason(await durably.get_run(second.id))
    assert reason == f"concurrency key 'k': run {first.id} (running) goes first"
    gate.set()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    "holder, taken_over",
    [
        ("dead pid on this host", True),
        ("pid reused by another process", True),
        ("alive on this host", False),
        ("dead pid, other host", False),
        ("unknown host", False),
    ],
)
async def test_only_a_certainly_gone_worker_on_this_host_is_taken_over_early(
    make: Any, backend: Backend, holder: str, taken_over: bool
) -> None:
    identity = host_identity()
    assert identity.host_key is not None, "these tests need Linux /proc"
    pid, start, key = _dead_pid(), None, identity.host_key
    if holder == "pid reused by another process":
        pid, start = os.getpid(), "1"  # our pid, registered with another start time
    elif holder == "alive on this host":
        pid, start = os.getpid(), identity.process_start
    elif holder == "dead pid, other host":
        key = "other-host|" + key.split("|", 1)[1]
    elif holder == "unknown host":
        key = None
    store = await backend.open_store()
    await store.register_worker(
        WorkerInfo(
            id="old-worker",
            host=identity.host,
            host_key=key,
            pid=pid,
            process_start=start,
            version="test",
            jobs=("j",),
            concurrency=1,
            lease_seconds=600.0,
        )
    )
    durably = await make(define_job(name="j", run=_noop), start=False)
    run = await durably.jobs.j.trigger({})
    [held] = await store.claim("old-worker", ["j"], 1, 600)  # a lease far longer than this test
    assert held.id == run.id
    await durably.start()
    if taken_over:
        final = await durably.wait_for_run(run.id, timeout=20)
        assert final.status == "completed"
        rows = {w.id: w for w in await durably.list_workers()}
        assert rows["old-worker"].state == "gone" and rows["old-worker"].gone_by == durably.worker.worker_id
    else:
        await until(lambda: durably.worker.leases.registry_checks >= 3, 20, "a few registry checks")
        still = await durably.get_run(run.id)
        assert (still.status, still.worker_id, still.generation) == ("running", "old-worker", held.generation)


# -- bounded buffers -----------------------------------------------------------------------------------


async def test_log_lines_that_cannot_be_stored_are_bounded(make: Any) -> None:
    durably = await make(define_job(name="j", run=_noop), start=False)
    from durably_sched.step import RunContext
    from durably_sched.store.base import NewLog

    run = await durably.jobs.j.trigger({})
    ctx = RunContext(await durably.get_run(run.id), durably.store, durably.events, {})
    for i in range(MAX_PENDING_LOGS + 250):
        ctx.add_log(NewLog("info", f"line {i}", None, {}, datetime.now(UTC)))
    assert len(ctx.pending_logs) == MAX_PENDING_LOGS and ctx.dropped_logs == 250
    assert ctx.pending_logs[0].message == "line 250"  # the oldest were dropped


# -- the pieces, on their own ----------------------------------------------------------------------------


def test_retry_delays_grow_are_capped_and_jittered_downwards() -> None:
    import random

    policy = Retry(max_attempts=10, backoff=2, multiplier=3, max_backoff=60, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [2, 6, 18, 54, 60]
    jittered = Retry(backoff=10, jitter=0.5)
    rng = random.Random(1)
    delays = [jittered.delay(1, rng) for _ in range(200)]
    assert all(5 <= d <= 10 for d in delays) and max(delays) - min(delays) > 3
    assert Retry(jitter=0).delay(10_000) == 24 * 3600  # capped at a day, no overflow
    assert Retry(backoff="30s").merged({"max_attempts": 5}) == Retry(max_attempts=5, backoff=30)
    stored = Retry(give_up_on=(BadInput,)).to_json()
    assert Retry.from_json(stored).retries(BadInput("x")) is False  # matched by name after storage
    assert Retry.from_json(stored).retries(OSError("x")) is True


def test_the_innermost_frame_of_user_code_is_found_in_a_stored_traceback() -> None:
    from durably_sched._tracebacks import user_frame

    text = """Traceback (most recent call last):
  File "/srv/app/.venv/lib/python3.11/site-packages/durably_sched/worker.py", line 518, in _run_job
    result = await job.run(step, payload)
  File "/srv/app/jobs/images.py", line 12, in convert
    await step.run("decode", lambda: decode(data))
  File "/srv/app/jobs/images.py", line 7, in decode
    return parse(data)
  File "/srv/app/.venv/lib/python3.11/site-packages/ppm/reader.py", line 88, in parse
    raise ValueError("not a binary PPM image")
  File "/usr/lib/python3.11/json/decoder.py", line 3, in nothing
    pass
ValueError: not a binary PPM image
"""
    assert user_frame(text) == "/srv/app/jobs/images.py:7 in decode"
    only_packages = 'Traceback (most recent call last):\n  File "/x/site-packages/pkg/mod.py", line 3, in f\n'
    assert user_frame(only_packages) == "/x/site-packages/pkg/mod.py:3 in f"
    assert user_frame(None) is None and user_frame("no frames here") is None


def test_repeated_identical_warnings_are_logged_once_a_period_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from durably_sched._ratelimit import RateLimitedLog

    limited = RateLimitedLog(logging.getLogger("test.ratelimit"), every=0.2)
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        for _ in range(50):
            limited.warning("database %s is down", "x")
        limited.warning("another problem")
        time.sleep(0.25)
        limited.warning("database %s is down", "x")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "database x is down",
        "another problem",
        "database x is down (repeated 49 more times in the last 0.2s)",
    ]


def test_which_step_functions_get_a_token() -> None:
    from durably_sched.step import _takes_token

    class Exporter:
        def run(self, token: CancelToken) -> None: ...

        def plain(self) -> None: ...

    def takes(token: CancelToken) -> None: ...

    async def takes_async(token: CancelToken) -> None: ...

    def loop_default(i: int = 1) -> None: ...

    assert _takes_token(takes) and _takes_token(takes_async) and _takes_token(Exporter().run)
    assert (
        not _takes_token(lambda: 1) and not _takes_token(loop_default) and not _takes_token(Exporter().plain)
    )
    assert _takes_token(functools.partial(lambda a, token: None, 1))
    assert not _takes_token(print)  # a builtin with no signature to read: called without one


async def test_check_cancelled_in_the_job_body_stops_the_run_as_cancelled(make: Any) -> None:
    gate = asyncio.Event()

    async def job_fn(step: Step, payload: dict[str, Any]) -> None:
        await step.run("one", lambda: 1)
        await gate.wait()
        step.check_cancelled()  # between steps, in the job's own code
        await step.run("two", lambda: 2)

    durably = await make(define_job(name="body", run=job_fn))
    run = await durably.jobs.body.trigger({})
    await until(lambda: _step_count(durably, run.id, 1), 10, "the first step")
    await durably.cancel(run.id)
    gate.set()
    await until(lambda: not durably.worker.active, 10, "the run's task ended")
    final = await durably.get_run(run.id)
    assert (final.status, final.step_count) == ("cancelled", 1)


async def _step_count(durably: Durably, run_id: str, count: int) -> bool:
    return (await durably.get_run(run_id)).step_count >= count


async def test_metrics_count_retries_and_runs_without_a_worker(make: Any) -> None:
    from durably_sched.ops.metrics import Metrics

    async def fails(step: Step, payload: dict[str, Any]) -> None:
        raise RuntimeError("flaky")

    durably = await make(define_job(name="fails", run=fails, retry=quick(max_attempts=2, backoff=0.05)))
    orphan = await make(define_job(name="oops", run=_noop), start=False)
    await orphan.jobs.oops.trigger({})
    metrics = Metrics(durably, None)
    try:
        with pytest.raises(RunFailedError):
            await durably.jobs.fails.trigger_and_wait({}, timeout=20)
        await until(lambda: durably.worker.leases.registered, 10, "registered")
        await metrics.refresh()
        text = metrics.render().decode()
        assert 'durably_run_retries_scheduled_total{job="fails"} 1.0' in text
        assert 'durably_runs_without_worker{job="oops"} 1.0' in text
        assert "durably_worker_takeovers_total 0.0" in text
    finally:
        metrics.close()
