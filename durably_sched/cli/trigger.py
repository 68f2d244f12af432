"""``durably-sched trigger``: a run of a job, or one slot of a schedule; optionally wait for it."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from datetime import datetime
from typing import Any

import click

from .._bounds import check_key, check_labels, plain_labels, stored_input
from ..durably import Durably
from ..errors import InvalidArgumentError, LimitExceededError
from ..jobs import JobDefinition
from ..limits import Limits
from ..schedule import manual
from ..schedule.config import ScheduleEntry, load_schedules
from ..store.base import RunRecord
from ._base import (
    EXIT_FAILURE,
    EXIT_OK,
    REPORTED_RUNS,
    TIME,
    TIME_RULE_HELP,
    CliCommand,
    CliError,
    StepThreads,
    in_display_zone,
    open_durably,
    settings,
    utc_option,
)
from ._limits import limit_option, limits_from
from ._loader import job_inputs, load_jobs
from ._output import announce_run, echo_json, show_time, utc_json, zone_json
from ._wait import (
    JSON_OPTION,
    TIMEOUT_OPTION,
    WAIT_OPTION,
    Followed,
    Interrupts,
    check_wait_options,
    follow_run,
    report,
)
from .schedule_defs import with_stored

HERE_STOP_GRACE = 5.0
"""With --here, Ctrl-C (or --timeout) gives the run this long to finish before it is released."""


def read_input(text: str | None, file: str | None) -> Any:
    """The trigger's input from ``--input`` or ``--input-file`` (``-`` is stdin), parsed as JSON."""
    if text is not None and file is not None:
        raise CliError("use --input or --input-file, not both")
    source = "--input"
    if file is not None:
        source = "--input-file"
        try:
            if file == "-":
                text = sys.stdin.read()
            else:
                with open(file, encoding="utf-8") as fh:
                    text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise CliError(f"--input-file: cannot read {file}: {reason}") from None
    if text is None:
        return {}  # no input: an empty object, so models with defaults work
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{file}: " if file not in (None, "-") else ""
        raise CliError(
            f"{source}: {where}invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def parse_labels(values: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--label '{value}': expected KEY=VALUE")
        labels[key.strip()] = text
    return labels


def find_job(jobs: dict[str, JobDefinition[Any, Any]], name: str) -> tuple[str, JobDefinition[Any, Any]]:
    for key, job in jobs.items():
        if job.name == name:
            return key, job
    known = ", ".join(sorted(job.name for job in jobs.values())) or "none"
    raise CliError(f"unknown job '{name}' (registered: {known})")


def find_schedule(entries: dict[str, ScheduleEntry], name: str, path: str) -> ScheduleEntry:
    entry = entries.get(name)
    if entry is None:
        known = ", ".join(sorted(entries)) or "none"
        raise CliError(f"unknown schedule '{name}' in {path} (defined: {known})")
    return entry


def slot_time(entry: ScheduleEntry, at: datetime | None) -> datetime:
    """The fire time to trigger: ``at`` (which must be a fire time) or the latest one until now."""
    try:
        when = in_display_zone(at) if at is not None else None
    except OverflowError:
        raise CliError(f"--at {at} {manual.OUT_OF_RANGE}") from None
    try:
        return manual.slot_time(entry, when, name="--at", show=show_time)
    except manual.ScheduleActionError as exc:
        raise CliError(exc.message) from None


def _refuse_with_schedule(*given: tuple[str, object]) -> None:
    used = [flag for flag, value in given if value is not None]
    if used:
        raise CliError(
            f"{', '.join(used)} cannot be used with --schedule (a slot runs with the schedule's own "
            "input, key and labels)"
        )


def check_trigger(
    limits: Limits,
    job: JobDefinition[Any, Any],
    payload: Any,
    labels: dict[str, str],
    keys: dict[str, str | None],
    input_flag: str,
) -> None:
    """What the library checks at trigger time, before the database is opened: the input against
    the job's model, then every value against the limits; one line naming the flag."""
    flag = input_flag
    try:
        stored_input(limits, job, payload)
        flag = "--label"
        check_labels(limits, plain_labels(labels))
        for flag, key in keys.items():
            check_key(limits, flag.lstrip("-").replace("-", "_"), key)
    except InvalidArgumentError as exc:
        more = (
            f" (change it with --limit {exc.limit_name}=SIZE)" if isinstance(exc, LimitExceededError) else ""
        )
        raise CliError(f"{flag}: {exc}{more}") from None


EPILOG = (
    """\b
Examples:
  durably-sched trigger process-image --input '{"filename": "cat.ppm"}'
  durably-sched trigger many-steps --input '{"count": 50}' --wait
  durably-sched trigger many-steps --wait --here          # run it in this process
  durably-sched trigger nightly-report --idempotency-key report-2026-05-01 --json
  durably-sched trigger many-steps --concurrency-key batch --coalesce skip   # at most one waiting
  durably-sched trigger --schedule nightly-report --at 2026-05-01T02:00 --wait

\b
--wait follows the run through the database (a `serve` elsewhere may execute it): a live
progress bar, the run's logs, then the output (exit 0) or the error (exit 1). Ctrl-C stops
waiting, not the run (exit 130). --here executes exactly this run in this process; Ctrl-C
then gives it 5 s to finish and releases it for a `serve` to resume (a second Ctrl-C exits
at once). Without --input the input is {}.

--schedule triggers one slot of a schedule with the scheduler's own idempotency key
(schedule:<name>:<UTC fire time>), so it never duplicates what the scheduler fires; without
--at it is the most recent fire time. --at without an offset is read in this machine's time
zone (in UTC with --utc), like every time the CLI reads; give an offset (+02:00, Z) to be
explicit.

"""
    + TIME_RULE_HELP
)


@click.command("trigger", cls=CliCommand, epilog=EPILOG)
@click.argument("job", required=False)
@click.option("--input", "input_text", metavar="JSON", help="The job's input as a JSON object.")
@click.option(
    "--input-file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Read the input JSON from a file ('-' for stdin).",
)
@click.option(
    "--idempotency-key", metavar="KEY", help="A second trigger with this key returns the first run."
)
@click.option("--concurrency-key", metavar="KEY", help="Runs with the same key run one at a time, in order.")
@click.option(
    "--coalesce",
    type=click.Choice(["skip"]),
    help="With --concurrency-key: join the key's pending run of this job that has not started yet, "
    "instead of queuing another.",
)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="A label (repeatable).")
@click.option("--schedule", "schedule_name", metavar="NAME", help="Trigger a slot of this schedule instead.")
@click.option("--at", type=TIME, help="With --schedule: the fire time (default: the most recent one).")
@WAIT_OPTION
@click.option("--here", is_flag=True, help="Execute the run in this process (implies --wait).")
@TIMEOUT_OPTION
@JSON_OPTION
@limit_option
@utc_option
async def trigger(
    job: str | None,
    input_text: str | None,
    input_file: str | None,
    idempotency_key: str | None,
    concurrency_key: str | None,
    coalesce: str | None,
    labels: tuple[str, ...],
    schedule_name: str | None,
    at: datetime | None,
    wait: bool,
    here: bool,
    timeout: float | None,
    json_mode: bool,
    limits: tuple[tuple[str, int], ...],
) -> int:
    """Trigger a run of JOB, or one fire time of a schedule (--schedule NAME [--at TIME])."""
    s = settings()
    wait = wait or here
    check_wait_options(wait, timeout)
    _check_target(job, schedule_name, at, coalesce, concurrency_key)
    if schedule_name is not None:
        _refuse_with_schedule(
            ("--input", input_text),
            ("--input-file", input_file),
            ("--idempotency-key", idempotency_key),
            ("--concurrency-key", concurrency_key),
            ("--coalesce", coalesce),
            ("--label", labels or None),
        )
    # Everything the user gave is checked before the database is opened.
    payload = read_input(input_text, input_file)
    label_map = parse_labels(labels)
    jobs = load_jobs(s.jobs)
    entry: ScheduleEntry | None = None
    if schedule_name is not None:
        config = await with_stored(load_schedules(s.schedules, job_inputs(jobs)), schedule_name)
        assert config is not None
        entry = find_schedule(config.schedules, schedule_name, config.path)
        fire_time = slot_time(entry, at)
    else:
        assert job is not None
        _, definition = find_job(jobs, job)
        keys = {"--idempotency-key": idempotency_key, "--concurrency-key": concurrency_key}
        flag = "--input-file" if input_file is not None else "--input"
        check_trigger(limits_from(limits), definition, payload, label_map, keys, flag)

    options: dict[str, Any] = {"max_concurrent_runs": 1, "polling_interval": 0.1} if here else {}
    threads = StepThreads() if here else None
    if threads is not None:
        threads.install()
    # Ctrl-C is handled from here on when waiting: from the moment the run may exist, it only
    # ends the wait (or, with --here, releases the run).
    interrupts = _interrupts(here)
    with interrupts.installed(signal.SIGINT, signal.SIGTERM) if wait else contextlib.nullcontext(interrupts):
        async with open_durably(s.database, jobs, limits=limits_from(limits), **options) as durably:
            extra: dict[str, Any]
            if entry is not None:
                record, extra = await _fire_slot(durably, entry, fire_time, json_mode=json_mode, wait=wait)
                if record is None:
                    return EXIT_FAILURE if wait else EXIT_OK
            else:
                assert job is not None
                run = await durably.trigger(
                    job, payload, idempotency_key=idempotency_key, concurrency_key=concurrency_key,
                    labels=label_map, coalesce="skip" if coalesce else None,
                )  # fmt: skip
                record, extra = run.record, {"disposition": run.disposition}
                line = _triggered_line(record, run.disposition)
                announce_run(record, extra, line, json_mode=json_mode, wait=wait)
            if not wait:
                return EXIT_OK
            if here:
                REPORTED_RUNS.add(record.id)
            code = await _wait(
                durably, record, interrupts, here=here, timeout=timeout, json_mode=json_mode, extra=extra
            )
    if threads is not None:
        await threads.exit_if_lingering(code)
    return code


def _check_target(
    job: str | None,
    schedule_name: str | None,
    at: datetime | None,
    coalesce: str | None,
    concurrency_key: str | None,
) -> None:
    """A job or a schedule, and the flags that go with a job's trigger."""
    if (job is None) == (schedule_name is None):
        raise CliError("name a JOB or a --schedule (one of them)")
    if schedule_name is None and at is not None:
        raise CliError("--at only applies with --schedule")
    if schedule_name is None and coalesce is not None and concurrency_key is None:
        raise CliError(
            "--coalesce skip needs --concurrency-key (it joins the pending run of the job with that key)"
        )


def _interrupts(here: bool) -> Interrupts:
    def first(signum: int) -> None:
        if here:
            click.echo(
                f"\nstopping: a step in progress gets up to {HERE_STOP_GRACE:.0f}s to finish, then the run "
                "is released for another worker (an unfinished step runs again there); Ctrl-C again exits "
                "at once",
                err=True,
            )

    second = "exiting at once; the run resumes elsewhere when its lease expires" if here else "exiting"
    return Interrupts(on_second=second, on_first=first)


def _triggered_line(record: RunRecord, disposition: str) -> str:
    if disposition == "created":
        return f"run {record.id} created ({record.job_name})"
    if disposition == "coalesced":
        return (
            f"run {record.id} is already pending for concurrency key '{record.concurrency_key}' "
            f"({record.job_name}); this trigger joined it (coalesced)"
        )
    return (
        f"run {record.id} already exists for idempotency key '{record.idempotency_key}' "
        f"({record.job_name}, {record.status})"
    )


async def _fire_slot(
    durably: Durably, entry: ScheduleEntry, fire_time: datetime, *, json_mode: bool, wait: bool
) -> tuple[RunRecord | None, dict[str, Any]]:
    """Fire one slot and say what happened; returns the slot's run (None when it has none)."""
    fired = await manual.trigger_slot(durably, entry, fire_time)
    result, key = fired.result, fired.key
    run = result.run
    extra: dict[str, Any] = {
        "schedule": entry.name,
        "fire_time": utc_json(fire_time),
        "fire_time_in_zone": zone_json(fire_time, entry.timezone),
        "idempotency_key": key,
        "outcome": result.outcome,
        "disposition": "created" if result.outcome == "triggered" else "idempotent",
    }
    if json_mode:
        if not wait or run is None:
            echo_json(
                {
                    "id": run.id if run else None,
                    "job_name": entry.job,
                    "status": run.status if run else None,
                    **extra,
                }
            )
        return run, extra
    slot = f"schedule {entry.name} slot {show_time(fire_time)} ({key})"
    if result.outcome == "triggered":
        assert run is not None
        text = f"{slot}: triggered run {run.id}"
    elif result.outcome == "skipped":
        text = f"{slot}: skipped (overlap: skip, a run of the schedule is still active)"
    elif run is not None:
        text = f"{slot}: deduplicated, already handled by run {run.id} ({run.status})"
    else:
        known = fired.recorded
        text = f"{slot}: deduplicated, already handled ({f'recorded as {known}' if known else 'no run'})"
    # While waiting, stdout is kept for the run's output.
    click.echo(text, err=wait and run is not None)
    if wait and run is None:
        click.echo("error: this slot has no run to wait for", err=True)
    return run, extra


async def _wait(
    durably: Durably,
    record: RunRecord,
    interrupts: Interrupts,
    *,
    here: bool,
    timeout: float | None,
    json_mode: bool,
    extra: dict[str, Any],
) -> int:
    if here and not record.is_finished and not interrupts.event.is_set():
        durably.worker.only_run_ids = frozenset({record.id})
        durably.worker.start()
    followed = await follow_run(
        durably, record.id, interrupted=interrupts.event, show=not json_mode, timeout=timeout
    )
    if here and followed.reason != "finished":
        await durably.stop(grace=HERE_STOP_GRACE)
        final = await durably.get_run(record.id)
        followed = Followed(final, "finished" if final.is_finished else followed.reason)
    return report(followed, json_mode=json_mode, here=here, extra=extra)
