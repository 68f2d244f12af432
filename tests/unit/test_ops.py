"""Operating durably-sched: log lines, metrics, health endpoints and retention, on a real SQLite store.

What an operator relies on: every log line about a run names the run (and its schedule and fire time);
the metrics count what happened with the right labels; /healthz and /readyz say exactly which check
failed; retention deletes old history without ever letting a fire time run twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from durably_sched import Durably, RunFailedError, Step, create_durably, define_job
from durably_sched.events import WorkerErrorEvent
from durably_sched.ops import health as ops_health
from durably_sched.ops.logging import JsonFormatter, TextFormatter, _StderrHandler, configure_logging
from durably_sched.ops.metrics import Metrics
from durably_sched.ops.retention import Retention, fire_record_horizon
from durably_sched.schedule.config import SchedulesConfig, parse_schedules
from durably_sched.schedule.scheduler import MISSED_LOOKBACK, Scheduler, make_fire
from durably_sched.store.base import NewRun
from durably_sched.web import create_app
from durably_sched.web.server import WebServer, start_server
from tests.helpers import FakeClock, until

# --- jobs and fixtures ----------------------------------------------------------------------------------


async def work(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    async def add() -> int:
        n: int = payload.get("n", 1) + 1
        step.log.info("added", result=n, note="two words")
        return n

    return {"n": await step.run("add", add)}


async def boom(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    await step.run("prepare", lambda: 1)
    raise RuntimeError("exploded")


GATE: dict[str, asyncio.Event] = {}


async def wait_gate(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    await GATE["gate"].wait()
    return {}


WORK = define_job(name="work", run=work)
BOOM = define_job(name="boom", run=boom)
WAIT = define_job(name="wait", run=wait_gate)
JOB_INPUTS: dict[str, Any] = {"work": None, "boom": None, "wait": None}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'x.db'}"


@pytest.fixture
async def durably(db_url: str) -> AsyncIterator[Durably]:
    d = create_durably(db_url, polling_interval=0.05).register([WORK, BOOM, WAIT])
    await d.init()
    yield d
    await d.close()


@pytest.fixture
async def idle(db_url: str) -> AsyncIterator[Durably]:
    """A Durably without a worker: triggered runs stay pending."""
    d = create_durably(db_url, polling_interval=0.05).register([WORK, BOOM, WAIT])
    await d.migrate()
    await d.start(worker=False)
    yield d
    await d.close()


def schedules(text: str) -> SchedulesConfig:
    return parse_schedules(text, job_inputs=JOB_INPUTS)


NIGHTLY = schedules(
    """
schedules:
  nightly:
    cron: "0 2 * * *"
    job: work
"""
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    quiet = logging.getLogger("aiosqlite").level
    yield
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiosqlite").setLevel(quiet)
    logging.captureWarnings(False)


# --- logging ---------------------------------------------------------------------------------------------


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


class Stderr:
    """What was written to stderr so far. A waiter may see a run finished (through the database)
    a moment before the worker that finished it logs so: wait for lines, never assume them."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    def read(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text

    async def wait_for(self, *needles: str) -> str:
        def found() -> bool:
            return any(all(n in line for n in needles) for line in self.read().splitlines())

        await until(found, what=f"a log line with {needles}")
        return self.text


async def test_text_log_lines_name_the_run_and_its_schedule(
    durably: Durably, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("text", "info", utc=True)
    manual = await durably.jobs.work.trigger_and_wait({"n": 1}, timeout=5)
    clock = FakeClock(datetime(2026, 11, 21, 1, 59, 30, tzinfo=UTC))
    scheduler = Scheduler(durably, NIGHTLY, clock=clock)
    await scheduler.load()
    clock.advance(minutes=1)
    ((_, _, result),) = await scheduler.tick()
    assert result.run is not None
    stderr = Stderr(capsys)
    await stderr.wait_for("run completed in", manual.id[:8])
    err = await stderr.wait_for("run completed in", result.run.id[:8])

    (done,) = [line for line in lines_with(err, "run completed in") if manual.id[:8] in line]
    # 2026-11-21 05:30:02+00:00 INFO  work 0b6e0c1e: run completed in 0.012s
    day, clock_time, level, job, short_id, *rest = done.split()
    stamp = datetime.fromisoformat(f"{day} {clock_time}")
    assert stamp.utcoffset() == timedelta(0) and abs(stamp - datetime.now(UTC)) < timedelta(minutes=5)
    assert (level, job, short_id) == ("INFO", "work", f"{manual.id[:8]}:")
    assert " ".join(rest).startswith("run completed in ") and "[" not in done  # not a scheduled run
    assert manual.id not in done  # the whole id is for --log-format json and `runs show`

    # The scheduler's line about the fire time and the worker's line about its run start with the
    # same run, schedule and fire time, so one search for the short id finds both; the fire line
    # names the run once.
    identity = f"work {result.run.id[:8]} [nightly 2026-11-21 02:00:00+00:00]: "
    (fired,) = lines_with(err, "fired:")
    assert identity + "fired: run triggered" in fired and fired.count(result.run.id[:8]) == 1
    assert "durably_sched" not in fired and len(fired) <= 130, fired  # a catch-up line, with dates
    (scheduled,) = [line for line in lines_with(err, "run completed in") if result.run.id[:8] in line]
    assert identity + "run completed in" in scheduled and len(scheduled) <= 120, scheduled

    # A job's own step log: step name and data fields, values with spaces quoted.
    (step_line,) = [line for line in lines_with(err, " added ") if manual.id[:8] in line]
    assert f"INFO  work {manual.id[:8]} add: added result=2 " in step_line
    assert 'note="two words"' in step_line


async def test_text_log_times_follow_the_machines_zone_unless_utc(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    """The serve log follows the CLI's rule: this machine's zone (TZ) with the offset, UTC with
    --utc; the fire time of a scheduled run is shown in the same zone, its date only when it is
    not the line's date."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        record = logging.LogRecord("durably_sched.scheduler", logging.INFO, __file__, 1, "fired", (), None)
        record.created = datetime(2026, 7, 1, 12, 0, 5, tzinfo=UTC).timestamp()
        record.__dict__.update(
            run_id="0b6e0c1e-aaaa", job="j", schedule="s", scheduled_for="2026-07-01T12:00:00Z"
        )
        assert (
            TextFormatter().format(record)
            == "2026-07-01 08:00:05-04:00 INFO  j 0b6e0c1e [s 08:00:00-04:00]: fired"
        )
        assert TextFormatter(utc=True).format(record) == (
            "2026-07-01 12:00:05+00:00 INFO  j 0b6e0c1e [s 12:00:00+00:00]: fired"
        )
        record.__dict__["scheduled_for"] = "2026-06-30T12:00:00Z"  # a catch-up: another day
        assert "[s 2026-06-30 08:00:00-04:00]" in TextFormatter().format(record)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


async def test_json_log_lines_are_objects_with_the_structured_fields(
    durably: Durably, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("json", "info")
    fire_time = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    result = await durably.fire(make_fire(NIGHTLY.schedules["nightly"], fire_time, advance_cursor=False))
    assert result.run is not None
    with pytest.raises(RunFailedError):
        await durably.jobs.boom.trigger_and_wait(timeout=5)
    stderr = Stderr(capsys)
    await stderr.wait_for("run completed in", result.run.id)
    await stderr.wait_for("run failed")
    records = [json.loads(line) for line in stderr.text.splitlines()]  # every line is JSON

    (done,) = [r for r in records if r["message"].startswith("run completed in")]
    assert done["level"] == "INFO" and done["logger"] == "durably_sched.worker"
    assert datetime.fromisoformat(done["ts"]).utcoffset() == timedelta(0)
    assert {k: done[k] for k in ("run_id", "job", "schedule", "scheduled_for")} == {
        "run_id": result.run.id,
        "job": "work",
        "schedule": "nightly",
        "scheduled_for": "2026-11-21T02:00:00Z",
    }
    (step_log,) = [r for r in records if r["message"] == "added"]
    assert step_log["step"] == "add" and step_log["data"] == {"result": 2, "note": "two words"}
    (failed,) = [r for r in records if r["message"].startswith("run failed")]
    assert failed["level"] == "ERROR" and failed["job"] == "boom" and failed["run_id"]
    assert "schedule" not in failed
    # The traceback travels with the line (one JSON object), ending with the error itself and a
    # note counting the frames of durably-sched left out.
    assert failed["exc_info"].startswith("Traceback (most recent call last):")
    assert failed["exc_info"].splitlines()[-2:] == [
        "RuntimeError: exploded",
        "(1 frame of durably-sched not shown)",
    ]


def test_configure_logging_validates_and_does_not_stack_handlers(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    with pytest.raises(ValueError, match=r"invalid log level 'loud'.*debug, info, warning, error"):
        configure_logging("text", "loud")
    with pytest.raises(ValueError, match="invalid log format 'xml'"):
        configure_logging("xml", "info")  # type: ignore[arg-type]
    configure_logging("text", "DEBUG")
    configure_logging("json", "warning")
    ours = [h for h in logging.getLogger().handlers if isinstance(h, _StderrHandler)]
    assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)
    logging.getLogger("durably_sched.test").info("below the level")
    logging.getLogger("durably_sched.test").warning("once", extra={"run_id": "r1", "job": "j"})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "once" and json.loads(lines[0])["run_id"] == "r1"


def test_text_format_keeps_one_record_on_one_line() -> None:
    record = logging.LogRecord("myapp.db", logging.ERROR, __file__, 1, "bad\ninput %s", ("x",), None)
    record.__dict__.update(run_id="r1", job="j", step=None, data={"path": "a b", "n": 1}, custom="v")
    line = TextFormatter().format(record)
    assert "\n" not in line
    assert line.endswith('ERROR myapp.db j r1: bad\\ninput x path="a b" n=1 custom=v')
    try:
        raise ValueError("inner")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert TextFormatter().format(record).splitlines()[-1] == "ValueError: inner"
    assert json.loads(JsonFormatter().format(record))["exc_info"].endswith("ValueError: inner")


def test_text_format_prints_structured_values_as_json_once() -> None:
    """A step log's mapping or list reads as JSON in the text log, not as JSON quoted again."""
    record = logging.LogRecord("durably_sched.step", logging.INFO, __file__, 1, "fetched", (), None)
    data = {"rates": {"eur": 1.08, "note": "a b"}, "ids": [1, 2], "bad": {"x": "\x07"}, "q": 'say "hi"'}
    record.__dict__.update(run_id="r1", job="j", data=data)
    line = TextFormatter().format(record)
    assert line.endswith(
        'j r1: fetched rates={"eur":1.08,"note":"a b"} ids=[1,2] bad={"x":"\\u0007"} q="say \\"hi\\""'
    ), line
    assert "\n" not in line and "\x07" not in line  # one line, nothing unprintable


# --- metrics ----------------------------------------------------------------------------------------------


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def finished(metrics: Metrics, job: str, status: str) -> float:
    return value(samples(metrics), "durably_runs_finished_total", job=job, status=status)


async def test_metrics_count_finished_runs_with_durations(durably: Durably) -> None:
    metrics = Metrics(durably, None)
    await durably.jobs.work.trigger_and_wait(timeout=5)
    await durably.jobs.work.trigger_and_wait(timeout=5)
    with pytest.raises(RunFailedError):
        await durably.jobs.boom.trigger_and_wait(timeout=5)
    # The worker counts a run right after storing its end, which a waiter may see first.
    await until(lambda: finished(metrics, "boom", "failed") == 1, what="boom counted")
    await until(lambda: finished(metrics, "work", "completed") == 2, what="work counted")
    await metrics.refresh()
    found = samples(metrics)
    total = "durably_runs_finished_total"
    assert value(found, total, job="work", status="completed") == 2
    assert value(found, total, job="boom", status="failed") == 1
    assert value(found, total, job="work", status="failed") == 0  # known jobs start at zero
    assert value(found, total, job="wait", status="cancelled") == 0
    runs = "durably_run_duration_seconds"
    assert value(found, f"{runs}_count", job="work", status="completed") == 2
    assert value(found, f"{runs}_count", job="boom", status="failed") == 1
    assert value(found, f"{runs}_sum", job="work", status="completed") > 0
    assert value(found, "durably_step_duration_seconds_count", job="work") == 2
    assert value(found, "durably_step_duration_seconds_count", job="boom") == 1
    assert value(found, "durably_runs", job="work", status="completed") == 2
    assert value(found, "durably_runs", job="boom", status="failed") == 1
    assert value(found, "durably_runs", job="wait", status="running") == 0
    assert value(found, "durably_queue_depth") == 0
    assert value(found, "durably_database_up") == 1
    assert value(found, "durably_build_info", version="0.1.0", python=found_python(found)) == 1
    assert ("process_cpu_seconds_total", frozenset()) in found or not Path("/proc/self/stat").exists()


def found_python(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> str:
    (labels,) = [dict(labels) for name, labels in found if name == "durably_build_info"]
    return labels["python"]


async def test_queue_depth_counts_pending_runs_from_the_database(idle: Durably) -> None:
    fresh = Metrics(idle, None, cache_seconds=0)
    cached = Metrics(idle, None, cache_seconds=3600)
    for _ in range(3):
        await idle.jobs.work.trigger()
    await idle.jobs.boom.trigger()
    await fresh.refresh()
    await cached.refresh()
    assert value(samples(fresh), "durably_queue_depth") == 4
    assert value(samples(fresh), "durably_runs", job="work", status="pending") == 3
    await idle.jobs.work.trigger()
    await fresh.refresh()
    await cached.refresh()
    assert value(samples(fresh), "durably_queue_depth") == 5
    assert value(samples(cached), "durably_queue_depth") == 4  # read again only after cache_seconds


async def test_metrics_report_the_database_down_instead_of_stale_counts(idle: Durably) -> None:
    metrics = Metrics(idle, None, cache_seconds=0)
    await idle.jobs.work.trigger()
    await metrics.refresh()
    assert value(samples(metrics), "durably_queue_depth") == 1
    await idle.store.close()
    await metrics.refresh()
    found = samples(metrics)
    assert value(found, "durably_database_up") == 0
    assert not any(name in ("durably_queue_depth", "durably_runs") for name, _ in found)


async def test_fire_outcomes_and_lateness_from_the_scheduler(idle: Durably) -> None:
    config = schedules(
        """
schedules:
  a: {cron: "* * * * *", job: work, overlap: skip}
  b: {cron: "* * * * *", job: work, enabled: false}
  c: {cron: "* * * * *", job: work, catchup: none}
  d: {cron: "* * * * *", job: work}
"""
    )
    clock = FakeClock(datetime(2026, 1, 5, 10, 0, 30, tzinfo=UTC))
    scheduler = Scheduler(idle, config, clock=clock)
    metrics = Metrics(idle, scheduler)
    await scheduler.load()
    # Another process already fired d's 10:01 slot by hand.
    await idle.fire(
        make_fire(config.schedules["d"], clock.t.replace(minute=1, second=0), advance_cursor=False)
    )
    clock.advance(minutes=1)  # 10:01:30: every 10:01 fire time is 30 s late
    await scheduler.tick()
    clock.advance(minutes=1)  # 10:02:30: a's 10:01 run is still pending (no worker): skipped
    await scheduler.tick()
    found = samples(metrics)
    fires = "durably_fire_times_total"
    assert value(found, fires, schedule="a", outcome="triggered") == 1
    assert value(found, fires, schedule="a", outcome="skipped") == 1
    assert value(found, fires, schedule="b", outcome="disabled") == 2
    assert value(found, fires, schedule="c", outcome="missed") == 2
    assert value(found, fires, schedule="d", outcome="deduplicated") == 1
    assert value(found, fires, schedule="d", outcome="triggered") == 1
    lateness = "durably_scheduler_lateness_seconds"
    assert value(found, f"{lateness}_count", schedule="a") == 2
    assert value(found, f"{lateness}_sum", schedule="a") == pytest.approx(60.0)
    assert value(found, f"{lateness}_bucket", schedule="a", le="30.0") == 2
    assert value(found, f"{lateness}_bucket", schedule="a", le="10.0") == 0
    assert value(found, "durably_scheduler_last_tick_age_seconds") >= 0
    metrics.close()
    clock.advance(minutes=1)
    await scheduler.tick()
    assert value(samples(metrics), fires, schedule="b", outcome="disabled") == 2  # detached


async def test_process_state_metrics(durably: Durably) -> None:
    one, two = Metrics(durably, None), Metrics(durably, None)  # separate registries coexist
    GATE["gate"] = asyncio.Event()
    run = await durably.jobs.wait.trigger()
    await until(lambda: run.id in durably.worker.active, what="run claimed")
    durably.worker.leases.lease_losses = 2  # as two renewals finding their leases lost count them
    durably.events.emit(WorkerErrorEvent(error="StoreError: gone", context="claim"))
    for metrics in (one, two):
        found = samples(metrics)
        assert value(found, "durably_active_runs") == 1
        assert value(found, "durably_lease_losses_total") == 2
        assert value(found, "durably_worker_errors_total", context="claim") == 1
    assert value(samples(one), "durably_stream_subscribers") == 0
    subscription = durably.subscribe(run.id)  # a live stream of the run, as a dashboard page holds
    assert value(samples(one), "durably_stream_subscribers") == 1
    GATE["gate"].set()
    await durably.wait_for_run(run.id, timeout=5)
    await until(lambda: value(samples(one), "durably_active_runs") == 0, what="run finished")
    assert [e.type async for e in subscription][-1] == "run:complete"
    assert value(samples(one), "durably_stream_subscribers") == 0  # it ended with its run


# --- HTTP (the web app's probes, served by uvicorn on this loop) --------------------------------------------
# Transport-specific checks of the former hand-written server (its 400/431/505 for each malformed
# head, the 408 for a silent client) now belong to uvicorn/h11; what remains is that malformed
# requests get a 4xx and never stop the server, and that a silent client does not hold it up.


async def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split(" ")[1]), headers, body


async def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return await request(
        port, f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    )


@dataclass
class Served:
    server: WebServer
    metrics: Metrics

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
async def serve(durably: Durably) -> AsyncIterator[Callable[..., Any]]:
    servers: list[Served] = []

    async def start(scheduler: Scheduler | None = None, on: Durably | None = None, **options: Any) -> Served:
        target = on or durably
        metrics = Metrics(target, scheduler)
        app = create_app(target, scheduler=scheduler, metrics=metrics, **options)
        served = Served(await start_server(app, "127.0.0.1", 0), metrics)
        servers.append(served)
        return served

    yield start
    for served in servers:
        await served.server.close()


async def test_endpoints_answer_on_a_free_port(durably: Durably, serve: Callable[..., Any]) -> None:
    server = await serve()
    assert server.port > 0
    status, headers, body = await get(server.port, "/healthz")
    assert (status, body) == (200, b"ok\n") and headers["content-type"] == "text/plain; charset=utf-8"

    status, headers, body = await get(server.port, "/readyz")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "status": "ready",
        "checks": {"database": {"status": "ok"}, "schema": {"status": "ok"}, "worker": {"status": "ok"}},
    }

    await durably.jobs.work.trigger_and_wait(timeout=5)
    await until(lambda: finished(server.metrics, "work", "completed") == 1, what="work counted")
    status, headers, body = await get(server.port, "/metrics?x=1")
    assert status == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    assert 'durably_runs_finished_total{job="work",status="completed"} 1.0' in text
    assert 'durably_runs{job="work",status="completed"} 1.0' in text  # refreshed before rendering
    assert "durably_event_loop_lag_seconds " in text

    status, headers, body = await get(server.port, "/metrics", "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000

    assert (await get(server.port, "/nope"))[0] == 404
    status, headers, _ = await get(server.port, "/healthz", "POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /healthz SPDY/3\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    ],
)
async def test_bad_requests_get_4xx_and_the_server_keeps_serving(
    serve: Callable[..., Any], raw: bytes
) -> None:
    server = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data == b"" or 400 <= int(data.split(b" ")[1]) < 500, data[:100]
    assert (await get(server.port, "/healthz"))[0] == 200


async def test_a_silent_client_does_not_hold_up_others(serve: Callable[..., Any]) -> None:
    server = await serve()
    _, probe = await asyncio.open_connection("127.0.0.1", server.port)  # a TCP probe: connect, close
    probe.close()
    _, silent = await asyncio.open_connection("127.0.0.1", server.port)
    silent.write(b"GET /healthz HTTP/1.1\r\n")  # and nothing more
    try:
        assert (await get(server.port, "/healthz"))[0] == 200
    finally:
        silent.close()


async def test_readyz_names_the_failing_check(durably: Durably, serve: Callable[..., Any]) -> None:
    clock = FakeClock(datetime(2026, 1, 5, 10, 0, 30, tzinfo=UTC))
    scheduler = Scheduler(durably, NIGHTLY, clock=clock)
    server = await serve(scheduler)
    status, _, body = await get(server.port, "/readyz")
    assert status == 503 and json.loads(body)["checks"]["scheduler"] == {
        "status": "fail",
        "detail": "the scheduler loop is not running",
    }
    scheduler.start()
    try:
        await until(lambda: scheduler.last_tick_monotonic > 0, what="first scheduler tick")
        status, _, body = await get(server.port, "/readyz")
        assert status == 200, body
        assert json.loads(body)["checks"]["scheduler"]["status"] == "ok"

        scheduler.last_tick_monotonic = time.monotonic() - 100  # stuck for 100 s
        status, _, body = await get(server.port, "/readyz")
        report = json.loads(body)
        assert status == 503 and report["status"] == "not ready"
        assert report["checks"]["scheduler"]["status"] == "fail"
        assert report["checks"]["scheduler"]["detail"].startswith("last tick 100s ago (limit 45s)")
        assert report["checks"]["database"] == {"status": "ok"}
    finally:
        await scheduler.stop()

    # The schema is behind this version: not ready until `durably-sched migrate` ran.
    await durably.store._write(lambda c: c.execute("PRAGMA user_version = 0"))  # type: ignore[attr-defined]
    status, _, body = await get(server.port, "/readyz")
    checks = json.loads(body)["checks"]
    assert status == 503 and checks["database"] == {"status": "ok"}
    assert checks["schema"]["status"] == "fail" and "durably-sched migrate" in checks["schema"]["detail"]


async def test_readyz_fails_without_database_or_worker(durably: Durably, serve: Callable[..., Any]) -> None:
    server = await serve()
    assert (await get(server.port, "/readyz"))[0] == 200
    await durably.worker.stop(0)
    status, _, body = await get(server.port, "/readyz")
    assert status == 503 and json.loads(body)["checks"]["worker"]["status"] == "fail"

    await durably.store.close()
    status, _, body = await get(server.port, "/readyz")
    checks = json.loads(body)["checks"]
    assert status == 503 and checks["database"]["status"] == "fail"
    assert "not connected" in checks["database"]["detail"]
    assert (await get(server.port, "/healthz"))[0] == 200  # liveness does not depend on the database
    assert (await get(server.port, "/metrics"))[0] == 200


async def test_readyz_does_not_require_a_worker_that_never_ran(
    idle: Durably, serve: Callable[..., Any]
) -> None:
    server = await serve(on=idle)
    status, _, body = await get(server.port, "/readyz")
    assert status == 200 and "worker" not in json.loads(body)["checks"]
    server = await serve(on=idle, worker=True)
    assert (await get(server.port, "/readyz"))[0] == 503


async def test_healthz_fails_while_the_event_loop_is_blocked(
    serve: Callable[..., Any], monkeypatch: Any
) -> None:
    monkeypatch.setattr(ops_health, "LAG_INTERVAL", 0.2)
    monkeypatch.setattr(ops_health, "MAX_LOOP_LAG", 0.3)
    server = await serve()
    assert (await get(server.port, "/healthz"))[0] == 200  # the watcher runs
    # The probe is sent and waiting in the server's socket when a job blocks the loop.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    await writer.drain()
    time.sleep(0.8)  # noqa: ASYNC251 - the point: a job that blocks the event loop
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 503 ") and b"event loop lag " in data

    async def healthy() -> bool:
        return (await get(server.port, "/healthz"))[0] == 200

    await until(healthy, what="healthz recovered")


async def test_close_stops_listening(serve: Callable[..., Any]) -> None:
    server = await serve()
    port = server.port
    await server.server.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_the_server_leaves_the_signal_handlers_alone(serve: Callable[..., Any]) -> None:
    """serve owns SIGTERM/SIGINT (graceful stop, then exit at once); uvicorn must not take them."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = await serve()
    assert (await get(server.port, "/healthz"))[0] == 200
    assert {sig: signal.getsignal(sig) for sig in before} == before
    await server.server.close()
    assert {sig: signal.getsignal(sig) for sig in before} == before


# --- retention ----------------------------------------------------------------------------------------------


async def make_old(durably: Durably, run_ids: list[str]) -> None:
    marks = ",".join("?" * len(run_ids))
    await durably.store._write(  # type: ignore[attr-defined]
        lambda c: c.execute(f"UPDATE runs SET completed_at = 0 WHERE id IN ({marks})", run_ids)
    )


async def test_retention_purges_old_finished_runs_only(durably: Durably) -> None:
    done = [await durably.jobs.work.trigger_and_wait(timeout=5) for _ in range(4)]
    with pytest.raises(RunFailedError) as failed:
        await durably.jobs.boom.trigger_and_wait(timeout=5)
    # A pending run of a job no worker here runs, created long ago: unfinished, so kept.
    ((pending, _),) = await durably.store.create_runs([NewRun(id="p1", job_name="elsewhere", input={})])
    await durably.store._write(lambda c: c.execute("UPDATE runs SET created_at = 0 WHERE id = 'p1'"))  # type: ignore[attr-defined]
    old = [r.id for r in done[:3]] + [failed.value.run_id]
    await make_old(durably, old)

    retention = Retention(durably, timedelta(days=30), lambda: None, batch_size=2)
    result = await retention.run_once()
    assert result.runs == 4 and result.fire_records is None
    remaining = {r.id for r in await durably.get_runs(limit=100)}
    assert remaining == {done[3].id, pending.id}
    assert await durably.store.get_steps(old[0]) == []
    assert await durably.store.get_logs(old[0]) == []
    assert await durably.get_attempts(old[0]) == [] and await durably.get_attempts(old[3]) == []
    assert [a.outcome for a in await durably.get_attempts(done[3].id)] == ["completed"]  # kept with its run
    assert (await retention.run_once()).runs == 0


def test_fire_record_horizon_covers_the_longest_catch_up_window() -> None:
    day = timedelta(days=1)
    week = schedules(
        """
schedules:
  short: {cron: "0 * * * *", job: work, catchup_window: 1h}
  long: {cron: "0 2 * * *", job: work, catchup_window: 7d}
"""
    )
    assert MISSED_LOOKBACK == day
    assert fire_record_horizon(timedelta(hours=1), week) == 7 * day + MISSED_LOOKBACK + day
    assert fire_record_horizon(30 * day, week) == 30 * day + day
    empty = schedules("schedules: {}")
    assert fire_record_horizon(timedelta(hours=1), empty) == MISSED_LOOKBACK + day
    assert fire_record_horizon(timedelta(hours=1), NIGHTLY) == 3 * day  # 24h window + 1d + 1d


async def fire_and_finish(durably: Durably, fire_time: datetime) -> str:
    result = await durably.fire(make_fire(NIGHTLY.schedules["nightly"], fire_time, advance_cursor=False))
    assert result.outcome == "triggered" and result.run is not None
    await durably.wait_for_run(result.run.id, timeout=5)
    return result.run.id


async def test_a_purged_scheduled_run_is_not_created_again(durably: Durably) -> None:
    slot = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0) - timedelta(days=1)
    run_id = await fire_and_finish(durably, slot)
    await make_old(durably, [run_id])
    retention = Retention(durably, timedelta(hours=1), lambda: NIGHTLY)
    assert (await retention.run_once()).runs == 1
    assert await durably.store.get_run(run_id) is None
    again = await durably.fire(make_fire(NIGHTLY.schedules["nightly"], slot))
    assert again.outcome == "deduplicated" and again.run is None
    assert await durably.get_runs(schedule="nightly") == []


async def test_fire_records_are_kept_for_the_horizon(durably: Durably) -> None:
    today = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    slots = {age: today - timedelta(days=age) for age in (10, 4, 2, 1)}
    ids = {age: await fire_and_finish(durably, t) for age, t in slots.items()}
    await make_old(durably, list(ids.values()))
    retention = Retention(durably, timedelta(hours=1), lambda: NIGHTLY, batch_size=1)
    result = await retention.run_once()  # horizon: 24h window + 1d lookback + 1d margin = 3 days
    assert result.runs == 4
    assert result.fire_records == 2
    kept = {r.fire_time for r in await durably.store.list_fire_records("nightly")}
    assert kept == {slots[2], slots[1]}
    # Inside the horizon the record still guards the slot; beyond it only an explicit backfill
    # can reach the slot (the scheduler never looks back that far), and it makes a new run.
    for age in (2, 1):
        assert (await durably.fire(make_fire(NIGHTLY.schedules["nightly"], slots[age]))).run is None
    backfill = await durably.fire(make_fire(NIGHTLY.schedules["nightly"], slots[10], advance_cursor=False))
    assert backfill.outcome == "triggered"


async def test_retention_survives_errors_and_stops(
    durably: Durably, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def broken() -> SchedulesConfig | None:
        nonlocal calls
        calls += 1
        raise RuntimeError("schedules unavailable")

    retention = Retention(durably, timedelta(days=1), broken, interval=0.01)
    retention.start()
    await until(lambda: calls >= 3, what="three retention passes")
    assert retention.running
    await durably.store.close()  # the database goes away: logged, retried, never raised
    seen = calls
    await until(lambda: calls >= seen + 2, what="passes after the database went away")
    assert retention.running
    await retention.stop()
    assert not retention.running
    messages = [r.getMessage() for r in caplog.records if r.name == "durably_sched.ops.retention"]
    assert any("could not purge fire records" in m and "schedules unavailable" in m for m in messages)
    assert any("could not purge finished runs" in m for m in messages)


def test_retention_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="older_than"):
        Retention(None, timedelta(0), lambda: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        Retention(None, timedelta(days=1), lambda: None, batch_size=0)  # type: ignore[arg-type]


async def test_fire_records_are_kept_for_the_longest_window_of_the_api_schedules(durably: Durably) -> None:
    """An API schedule (schedules as data) with a 7-day catch-up window keeps every schedule's
    records for that window too, as a file's schedule with that window would."""
    today = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    slots = {age: today - timedelta(days=age) for age in (10, 4)}
    ids = [await fire_and_finish(durably, t) for t in slots.values()]
    await make_old(durably, ids)
    await durably.schedules.create("weekly-api", cron="0 3 * * 1", job=NIGHTLY.schedules["nightly"].job,
                                   catchup_window="7d")  # fmt: skip
    result = await Retention(durably, timedelta(hours=1), lambda: NIGHTLY).run_once()
    assert result.fire_records == 1  # 7d + 1d lookback + 1d margin: the 4-day-old record stays
    assert {r.fire_time for r in await durably.store.list_fire_records("nightly")} == {slots[4]}
