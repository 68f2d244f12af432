"""Size limits and text that cannot be stored, through the library, on SQLite and on PostgreSQL.

What users rely on: a trigger past a limit (input, labels, keys) or with text that is not valid
Unicode is refused with one InvalidArgumentError that names the field and the limit, and nothing is
stored; a schedule's fire time is refused the same way, naming the schedule; a step whose value is
over ``limits.step_value`` fails its run at once (no retry policy retries it) without a checkpoint;
a long log line is cut with a marker and its run goes on; a job whose error text or log line holds a
lone surrogate fails or completes like any other (before, the store refused the text and the run was
released and claimed again forever); durations and slot times out of range are refused in one line.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from durably_sched import (
    ConfigError,
    InputValidationError,
    InvalidArgumentError,
    Limits,
    Retry,
    RunFailedError,
    Step,
    StepError,
    define_job,
)
from durably_sched.cli._limits import LimitType
from durably_sched.errors import LimitExceededError, NonRetryableError, StepValueTooLargeError
from durably_sched.limits import parse_size
from durably_sched.schedule import manual
from durably_sched.schedule.config import parse_schedules
from durably_sched.schedule.scheduler import Scheduler
from tests.backends import Backend
from tests.helpers import FakeClock, durably_factory

KIB = 1024
NOT_UNICODE = "not valid Unicode (a lone surrogate such as \\ud800 has no UTF-8 form)"


@pytest.fixture
async def make(backend: Backend) -> AsyncIterator[Callable[..., Any]]:
    async with durably_factory(backend.url, stale_threshold=1.0) as factory:
        yield factory


async def _plain(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    return {}


PLAIN = define_job(name="plain", run=_plain)


class Named(BaseModel):
    name: str


def _blob(size: int) -> dict[str, str]:
    """An input whose compact JSON is exactly ``size`` bytes."""
    return {"b": "x" * (size - len('{"b":""}'))}


# -- triggers: input, labels, keys ---------------------------------------------------------------------


async def test_an_input_over_the_limit_is_refused_naming_the_field_and_nothing_is_stored(make: Any) -> None:
    durably = await make(PLAIN, start=False)
    with pytest.raises(LimitExceededError) as refused:
        await durably.jobs.plain.trigger(_blob(300 * KIB))
    assert str(refused.value) == "input: 300 KiB is over the limit of 256 KiB (limits.input)"
    assert isinstance(refused.value, InvalidArgumentError)
    over = refused.value
    assert (over.field, over.size, over.limit, over.limit_name) == ("input", 300 * KIB, 256 * KIB, "input")
    with pytest.raises(LimitExceededError, match=r"^input: 262,145 bytes is over the limit of 262,144 bytes"):
        await durably.trigger("plain", _blob(256 * KIB + 1))  # just over: exact figures
    with pytest.raises(LimitExceededError, match=r"limits\.input"):  # all or nothing
        await durably.jobs.plain.batch_trigger([{}, _blob(300 * KIB)])
    with pytest.raises(LimitExceededError, match=r"limits\.input"):
        await durably.jobs.plain.trigger_and_wait(_blob(300 * KIB), timeout=5)
    assert await durably.get_runs() == []
    run = await durably.jobs.plain.trigger(_blob(256 * KIB))  # at the limit: stored whole
    assert (await durably.get_run(run.id)).input == _blob(256 * KIB)


async def test_limits_are_set_per_instance(make: Any) -> None:
    small = await make(PLAIN, start=False, limits=Limits(input=100, labels=2, label=8, key=10))
    assert small.limits.input == 100
    with pytest.raises(LimitExceededError, match=r"^input: 101 bytes is over the limit of 100 bytes"):
        await small.jobs.plain.trigger(_blob(101))
    with pytest.raises(LimitExceededError, match=r"^labels: 3 labels are over the limit of 2 \("):
        await small.jobs.plain.trigger({}, labels={"a": "1", "b": "2", "c": "3"})
    with pytest.raises(LimitExceededError, match=r"^labels\['a'\]: 9 bytes is over .* 8 bytes \(limits"):
        await small.jobs.plain.trigger({}, labels={"a": "x" * 9})
    with pytest.raises(LimitExceededError, match=r"^labels key 'kkkkkkkkk': 9 bytes .*limits.label"):
        await small.jobs.plain.trigger({}, labels={"k" * 9: "v"})
    with pytest.raises(LimitExceededError, match=r"^idempotency_key: 11 bytes .* 10 bytes \(limits.key\)"):
        await small.jobs.plain.trigger({}, idempotency_key="k" * 11)
    with pytest.raises(LimitExceededError, match=r"^concurrency_key: 12 bytes"):  # bytes, not characters
        await small.jobs.plain.trigger({}, concurrency_key="é" * 6)
    assert await small.get_runs() == []
    run = await small.jobs.plain.trigger(
        _blob(100), labels={"a": "x" * 8, "b": "é" * 4}, idempotency_key="k" * 10, concurrency_key="c" * 10
    )
    record = await small.get_run(run.id)
    assert (record.labels, record.idempotency_key) == ({"a": "x" * 8, "b": "é" * 4}, "k" * 10)


async def test_labels_checked_by_a_model_are_held_to_the_limits_too(backend: Backend) -> None:
    class Labels(BaseModel):
        team: str

    async with durably_factory(backend.url) as make:
        durably = await make(PLAIN, start=False, labels=Labels, limits=Limits(label=4))
        with pytest.raises(LimitExceededError, match=r"^labels\['team'\]: 5 bytes"):
            await durably.jobs.plain.trigger({}, labels={"team": "infra"})
        assert (await durably.jobs.plain.trigger({}, labels={"team": "ops"})).record.labels == {"team": "ops"}


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"input": {"name": "a\ud800b"}}, "input['name']"),
        ({"input": {"list": [1, "\udfff"]}}, "input['list'][1]"),
        ({"input": {"\ud800": 1}}, "input (a key: '\\ud800')"),
        ({"labels": {"team": "\udc80"}}, "labels['team']"),
        ({"labels": {"\ud800": "x"}}, "labels (a key: '\\ud800')"),
        ({"idempotency_key": "run-\ud800"}, "idempotency_key"),
        ({"concurrency_key": "\udcff"}, "concurrency_key"),
    ],
)
async def test_text_that_is_not_valid_unicode_is_refused_naming_the_field(
    make: Any, options: dict[str, Any], field: str
) -> None:
    durably = await make(PLAIN, start=False)
    with pytest.raises(InvalidArgumentError) as refused:
        await durably.jobs.plain.trigger(**options)
    assert str(refused.value) == f"{field}: {NOT_UNICODE}"
    assert await durably.get_runs() == []


async def test_text_that_is_not_valid_unicode_in_a_model_input_or_a_query_is_refused(make: Any) -> None:
    async def named(step: Step, payload: Named) -> dict[str, Any]:
        return {}

    durably = await make(define_job(name="named", input=Named, run=named), start=False)
    with pytest.raises(InvalidArgumentError, match=r"^input\['name'\]: not valid Unicode"):
        await durably.jobs.named.trigger({"name": "\ud800"})
    with pytest.raises(InvalidArgumentError, match=r"^labels\['a'\]: not valid Unicode"):
        await durably.get_runs(labels={"a": "\ud800"})
    assert await durably.get_runs() == []


# -- schedules ---------------------------------------------------------------------------------------


async def test_a_fire_time_past_a_limit_is_refused_naming_the_schedule_and_nothing_is_recorded(
    make: Any,
) -> None:
    config = parse_schedules(
        "schedules:\n  big:\n    cron: '0 * * * *'\n    job: plain\n    timezone: UTC\n"
        "    input: {b: '" + "x" * 200 + "'}\n    labels: {team: infra}\n"
    )
    entry = config.schedules["big"]
    at = datetime(2026, 5, 1, 2, tzinfo=UTC)
    durably = await make(PLAIN, start=False, limits=Limits(input=100))
    with pytest.raises(LimitExceededError) as refused:
        await manual.trigger_slot(durably, entry, at)
    assert str(refused.value) == (
        "schedule 'big': input: 208 bytes is over the limit of 100 bytes (limits.input)"
    )
    assert await durably.store.list_fire_records("big", limit=10) == []
    assert await durably.get_runs() == []
    labelled = await make(PLAIN, start=False, limits=Limits(label=4))
    with pytest.raises(LimitExceededError, match=r"^schedule 'big': labels\['team'\]: 5 bytes"):
        await manual.trigger_slot(labelled, entry, at)
    fine = await make(PLAIN, start=False)
    slot = await manual.trigger_slot(fine, entry, at)
    assert slot.outcome == "triggered" and slot.result.run is not None
    assert slot.result.run.input == {"b": "x" * 200}


async def test_the_scheduler_refuses_a_schedule_past_a_limit_when_it_loads(make: Any) -> None:
    def config(size: int) -> Any:
        return parse_schedules(
            "schedules:\n  s:\n    cron: '* * * * *'\n    job: plain\n    timezone: UTC\n"
            f"    input: {{b: '{'x' * size}'}}\n",
            "schedules.yaml",
        )

    durably = await make(PLAIN, start=False, limits=Limits(input=100))
    with pytest.raises(ConfigError) as refused:
        Scheduler(durably, config(200))
    assert str(refused.value) == (
        "schedules.yaml: schedule 's': input: 208 bytes is over the limit of 100 bytes (limits.input)"
    )
    assert isinstance(refused.value.__cause__, LimitExceededError)
    clock = FakeClock(datetime(2026, 5, 1, tzinfo=UTC))
    scheduler = Scheduler(durably, config(10), clock=clock)
    await scheduler.load()
    with pytest.raises(ConfigError, match=r"^schedules.yaml: schedule 's': input: 208 bytes"):
        await scheduler.reload(config(200))
    assert scheduler.config.schedules["s"].input == {"b": "x" * 10}  # the loaded schedules stay
    clock.advance(minutes=1)
    fired = await scheduler.tick()
    assert [result.outcome for _, _, result in fired] == ["triggered"]


def test_slot_times_out_of_the_supported_range_are_refused_in_one_line() -> None:
    entry = parse_schedules(
        "schedules:\n  s:\n    cron: '* * * * *'\n    job: plain\n    timezone: Pacific/Kiritimati\n"
    ).schedules["s"]
    for text in ("9999-12-31T23:59:59-14:00", "9999-12-31T23:59:00+00:00", "0001-01-01T00:00:00+14:00"):
        with pytest.raises(manual.ScheduleActionError) as refused:
            manual.slot_time(entry, datetime.fromisoformat(text))
        assert str(refused.value) == (
            f"at {text} is out of the supported range of times (years 2 to 9998, UTC)"
        )
        assert refused.value.field == "at"
    edge = manual.slot_time(entry, datetime(9998, 12, 30, 23, 59))  # a wall time there: fine
    assert edge.astimezone(UTC) == datetime(9998, 12, 30, 9, 59, tzinfo=UTC)


async def test_durations_out_of_range_are_refused_as_invalid_arguments(make: Any) -> None:
    durably = await make(PLAIN, start=False)
    for timeout in (1e300, -1e300, 36501 * 86400):
        with pytest.raises(InvalidArgumentError, match="timeout: must"):
            await durably.jobs.plain.trigger({}, run_timeout=timeout)
    with pytest.raises(InvalidArgumentError, match=r"retry.backoff: must be at most 36500d"):
        await durably.jobs.plain.trigger({}, retry={"backoff": 1e300})
    assert await durably.get_runs() == []
    run = await durably.jobs.plain.trigger({}, run_timeout="36500d")
    assert run.record.timeout == 36500 * 86400


# -- what jobs produce -------------------------------------------------------------------------------


async def test_a_step_value_over_the_limit_fails_the_run_at_once_without_a_checkpoint(make: Any) -> None:
    calls: list[str] = []

    async def big(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("small", lambda: "x" * (KIB - 2))  # exactly 1 KiB of JSON: kept
        await step.run("fetch", lambda: calls.append("fetch") or "x" * 2000)
        return {}

    job = define_job(name="big", run=big, retry=Retry(max_attempts=5, backoff=0.01))
    durably = await make(job, limits=Limits(step_value=KIB))
    with pytest.raises(RunFailedError) as failed:
        await durably.jobs.big.trigger_and_wait({}, timeout=10)
    assert failed.value.failed_step_name == "fetch"
    assert failed.value.error == (
        "StepValueTooLargeError: step 'fetch' returned 2.0 KiB of JSON, over the limit of 1 KiB "
        "(limits.step_value); store large data elsewhere (a file, an object store) and return a "
        "reference to it"
    )
    record = await durably.get_run(failed.value.run_id)
    assert (record.status, record.failed_attempts) == ("failed", 1)  # the policy did not retry it
    assert [s.name for s in await durably.get_steps(record.id)] == ["small"]
    assert calls == ["fetch"]
    assert issubclass(StepValueTooLargeError, NonRetryableError)
    assert issubclass(StepValueTooLargeError, StepError)


async def test_a_job_output_over_the_step_value_limit_fails_the_run_unretried(make: Any) -> None:
    async def wide(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return {"rows": ["x" * 100] * 20}

    job = define_job(name="wide", run=wide, retry=Retry(max_attempts=3, backoff=0.01))
    durably = await make(job, limits=Limits(step_value=KIB))
    with pytest.raises(RunFailedError, match=r"job 'wide' returned an output of 2.0 KiB of JSON, over the"):
        await durably.jobs.wide.trigger_and_wait({}, timeout=10)
    assert (await durably.get_runs())[0].failed_attempts == 1


async def test_a_long_log_line_is_cut_with_a_marker_and_the_run_goes_on(make: Any) -> None:
    async def chatty(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        step.log.info("m" * 5000)
        step.log.info("rows", rows=["r" * 100] * 50)
        step.log.info("é" * 3000, n=1)
        await step.progress(1, 2, "p" * 5000)
        return {"ok": True}

    durably = await make(define_job(name="chatty", run=chatty), limits=Limits(log_line=KIB))
    result = await durably.jobs.chatty.trigger_and_wait({}, timeout=10)
    assert result.output == {"ok": True}
    logs = await durably.get_logs(result.id)
    assert len(logs) == 3
    first, second, third = logs
    assert first.message.startswith("m" * 900)
    assert first.message.endswith(" [... cut from 4.9 KiB to limits.log_line (1 KiB)]")
    assert len(first.message.encode()) <= KIB
    assert (second.message, second.data) == (
        "rows",
        {"truncated": "5.0 KiB of data over limits.log_line (1 KiB)"},
    )
    assert len(third.message.encode()) <= KIB and third.message.startswith("é" * 400)
    progress = (await durably.get_run(result.id)).progress
    assert progress is not None and progress.message is not None
    assert len(progress.message.encode()) <= KIB
    assert progress.message.endswith(" [... cut from 4.9 KiB to limits.log_line (1 KiB)]")


async def test_text_that_is_not_valid_unicode_from_a_job_never_loops_its_run(make: Any) -> None:
    async def odd_log(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        step.log.warning("bad \ud800 text", **{"k\udc00": "v\ud800"})
        await step.progress(1, 1, "half \udfff")
        await step.run("one", lambda: 1)
        return {}

    async def odd_error(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("cannot parse \ud800")

    async def odd_step(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        await step.run("item-\ud800", lambda: 1)
        return {}

    class Out(BaseModel):
        text: str

    async def odd_output(step: Step, payload: dict[str, Any]) -> Out:
        return Out(text="\ud800")

    jobs = [
        define_job(name="odd-log", run=odd_log),
        define_job(name="odd-error", run=odd_error, retry=Retry(max_attempts=2, backoff=0.01)),
        define_job(name="odd-step", run=odd_step),
        define_job(name="odd-output", run=odd_output, output=Out),
    ]
    durably = await make(*jobs)
    done = await durably.jobs["odd-log"].trigger_and_wait({}, timeout=10)
    [line] = await durably.get_logs(done.id)
    assert (line.message, line.data) == ("bad \ufffd text", {"k\ufffd": "'v\\ud800'"})
    progress = (await durably.get_run(done.id)).progress
    assert progress is not None and progress.message == "half \ufffd"
    with pytest.raises(RunFailedError) as failed:
        await durably.jobs["odd-error"].trigger_and_wait({}, timeout=10)
    assert failed.value.error == "ValueError: cannot parse \ufffd"
    record = await durably.get_run(failed.value.run_id)
    assert record.failed_attempts == 2 and record.traceback is not None and "\ufffd" in record.traceback
    with pytest.raises(RunFailedError, match=r"step name 'item-\\ud800' is not valid Unicode"):
        await durably.jobs["odd-step"].trigger_and_wait({}, timeout=10)
    with pytest.raises(RunFailedError) as failed:
        await durably.jobs["odd-output"].trigger_and_wait({}, timeout=10)
    assert failed.value.error == (
        f"{InputValidationError.__name__}: job 'odd-output': output['text']: not valid Unicode "
        "(a lone surrogate such as \\ud800 has no UTF-8 form)"
    )


async def test_a_huge_error_message_is_kept_as_a_bounded_line(make: Any) -> None:
    async def loud(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("e" * 100_000)

    durably = await make(define_job(name="loud", run=loud))
    with pytest.raises(RunFailedError) as failed:
        await asyncio.wait_for(durably.jobs.loud.trigger_and_wait({}), 10)
    error = failed.value.error
    assert error is not None
    assert error.startswith("RuntimeError: eeee") and error.endswith("[... 95918 characters cut]")
    assert len(error) == 4096


# -- the documentation ---------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "limits.md"


def test_the_limits_page_states_the_defaults_and_its_examples_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = DOCS.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", text, re.M)
    defaults = Limits()
    assert {name: parse_size(shown.replace("bytes", "").replace(" ", "")) for name, shown in rows} == {
        name: getattr(defaults, name) for name in Limits.__dataclass_fields__
    }
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), {})
    options = (
        re.findall(r"--limit (\w+=\d\w*)", text)
        + " ".join(re.findall(r'DURABLY_LIMITS="([^"]+)"', text)).split()
    )
    assert len(options) >= 5
    for option in options:
        LimitType().convert(option, None, None)
