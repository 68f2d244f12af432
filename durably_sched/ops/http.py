"""``/healthz``, ``/readyz`` and ``/metrics`` over a small HTTP/1.1 server on the event loop.

Everything runs on the loop that runs the worker and the scheduler, deliberately: an answer from
``/healthz`` proves that this loop is alive, which a server in another thread could not. A ticker
task measures how late the loop wakes it up; ``/healthz`` fails when that lag exceeds
:data:`MAX_LOOP_LAG` (a blocking job function, a stuck C call), which an orchestrator's liveness
probe turns into a restart.

``/readyz`` checks what the process needs to do useful work, each check named in the JSON body:

* ``database``: ``store.ping()`` answers within :data:`CHECK_TIMEOUT`;
* ``schema``: ``store.check_schema()`` (the database was migrated to this version);
* ``scheduler`` (when one runs here): its loop is running and ticked within ``MAX_SLEEP + 15`` s
  (it ticks at least every ``MAX_SLEEP`` seconds);
* ``worker`` (when one runs here): its claim loop is running.

The server speaks just enough HTTP/1.1 for probes and Prometheus: GET and HEAD, one request per
connection (``Connection: close``), request head read within :data:`REQUEST_TIMEOUT` and capped at
:data:`MAX_HEAD_BYTES`, at most :data:`MAX_CONNECTIONS` at a time. Anything else gets 400, 404, 405,
408, 431 or 505.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric

from ..schedule.scheduler import MAX_SLEEP

if TYPE_CHECKING:
    from ..durably import Durably
    from ..schedule.scheduler import Scheduler
    from .metrics import Metrics

__all__ = ["HttpServer", "start_http_server"]

log = logging.getLogger("durably_sched.ops.http")

REQUEST_TIMEOUT = 5.0
"""Seconds a client gets to send its request head, and to take the response."""
MAX_HEAD_BYTES = 8192
"""Request line plus headers; a larger head gets 431."""
MAX_CONNECTIONS = 64
"""Connections served at once; more are closed at once (probes and scrapes need a handful)."""
CHECK_TIMEOUT = 2.0
"""Seconds each readiness check of the database may take."""
SCHEDULER_TICK_SLACK = 15.0
"""Seconds beyond ``MAX_SLEEP`` a scheduler tick may be overdue before the process is not ready."""
LAG_INTERVAL = 0.5
MAX_LOOP_LAG = 5.0
"""Event-loop lag, in seconds, above which ``/healthz`` answers 503."""

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class _Response:
    status: HTTPStatus
    body: bytes
    content_type: str = _TEXT
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: HTTPStatus, text: str, *headers: tuple[str, str]) -> _Response:
        return cls(status, (text + "\n").encode(), _TEXT, headers)


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class HttpServer:
    """A running server; ``port`` is the bound port (useful with port 0). ``await close()`` stops it."""

    def __init__(
        self,
        *,
        durably: Durably,
        scheduler: Scheduler | None,
        metrics: Metrics,
        worker: bool | None = None,
    ) -> None:
        self.durably = durably
        self.scheduler = scheduler
        self.metrics = metrics
        self._worker_expected = worker
        self._worker_seen = False
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._next_tick = 0.0
        self._last_lag = 0.0
        self._lag_collector = _LagCollector(self)
        self.host = ""
        self.port = 0

    async def _start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._next_tick = loop.time() + LAG_INTERVAL
        self._ticker = loop.create_task(self._watch_loop(), name="durably-http-lag")
        try:
            self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD_BYTES)
        except BaseException:
            await self._stop_ticker()
            raise
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        self.metrics.registry.register(self._lag_collector)
        shown = f"[{host}]" if ":" in host else host or "0.0.0.0"
        log.info("serving /healthz, /readyz and /metrics on http://%s:%d", shown, self.port)

    async def close(self) -> None:
        """Stop listening, drop connections still open, stop the loop-lag ticker."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for task in list(self._handlers):
                task.cancel()
            if self._handlers:
                await asyncio.wait(list(self._handlers))
            await server.wait_closed()
            with contextlib.suppress(KeyError):
                self.metrics.registry.unregister(self._lag_collector)
        await self._stop_ticker()

    async def _stop_ticker(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.wait([ticker])

    # -- event-loop lag ---------------------------------------------------------------------------------
    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._next_tick = loop.time() + LAG_INTERVAL
            await asyncio.sleep(LAG_INTERVAL)
            self._last_lag = max(0.0, loop.time() - self._next_tick)

    def loop_lag(self) -> float:
        """Seconds the loop was late at the last tick, or is late now for the next one (the larger)."""
        overdue = asyncio.get_running_loop().time() - self._next_tick
        return max(self._last_lag, overdue, 0.0)

    # -- connections --------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._handlers) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._handlers.add(task)
        try:
            await self._serve_one(reader, writer)
        except Exception as exc:  # the peer went away mid-response, and the like
            log.debug("http connection error: %r", exc)
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), REQUEST_TIMEOUT)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            head = await asyncio.wait_for(_read_head(reader), REQUEST_TIMEOUT)
        except TimeoutError:
            response = _Response.text(HTTPStatus.REQUEST_TIMEOUT, "request timeout")
        except _BadRequest as bad:
            response = _Response.text(bad.status, bad.detail)
        else:
            if head is None:  # connected and closed without a request (a TCP probe)
                return
            try:
                method, path = _parse_head(head)
                response = await self._route(method, path)
            except _BadRequest as bad:
                response = _Response.text(bad.status, bad.detail)
            except Exception:
                log.exception("http handler failed")
                response = _Response.text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
        log.debug("http %s -> %d", method, response.status)
        writer.write(_serialize(response, include_body=method != "HEAD"))
        await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)

    async def _route(self, method: str, path: str) -> _Response:
        routes: dict[str, Callable[[], Awaitable[_Response]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
        }
        route = routes.get(path)
        if route is None:
            return _Response.text(HTTPStatus.NOT_FOUND, "not found (try /healthz, /readyz or /metrics)")
        if method not in ("GET", "HEAD"):
            return _Response.text(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed", ("Allow", "GET, HEAD"))
        return await route()

    # -- endpoints --------------------------------------------------------------------------------------
    async def _healthz(self) -> _Response:
        if self._ticker is None or self._ticker.done():
            return _Response.text(HTTPStatus.SERVICE_UNAVAILABLE, "event-loop watcher is not running")
        lag = self.loop_lag()
        if lag > MAX_LOOP_LAG:
            return _Response.text(
                HTTPStatus.SERVICE_UNAVAILABLE, f"event loop lag {lag:.1f}s (limit {MAX_LOOP_LAG:.0f}s)"
            )
        return _Response.text(HTTPStatus.OK, "ok")

    async def readiness(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """(ready, {check name: {"status": "ok" | "fail", "detail": ...}}) as /readyz reports it."""
        store = self.durably.store
        database, schema = await asyncio.gather(_probe(store.ping), _probe(store.check_schema))
        checks: dict[str, dict[str, Any]] = {"database": database, "schema": schema}
        if self.scheduler is not None:
            checks["scheduler"] = self._scheduler_check(self.scheduler)
        worker = self.durably.worker
        if worker.running:
            self._worker_seen = True
        expected = self._worker_expected if self._worker_expected is not None else self._worker_seen
        if expected:
            checks["worker"] = _ok() if worker.running else _fail("the worker's claim loop is not running")
        return all(c["status"] == "ok" for c in checks.values()), checks

    @staticmethod
    def _scheduler_check(scheduler: Scheduler) -> dict[str, Any]:
        limit = MAX_SLEEP + SCHEDULER_TICK_SLACK
        if not scheduler.running:
            return _fail("the scheduler loop is not running")
        if scheduler.last_tick_monotonic <= 0:
            return _fail("the scheduler has not ticked yet")
        age = time.monotonic() - scheduler.last_tick_monotonic
        if age > limit:
            return _fail(f"last tick {age:.0f}s ago (limit {limit:.0f}s)")
        return _ok(f"last tick {age:.1f}s ago")

    async def _readyz(self) -> _Response:
        ready, checks = await self.readiness()
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
        return _Response(status, (json.dumps(body, indent=2) + "\n").encode(), _JSON)

    async def _metrics(self) -> _Response:
        await self.metrics.refresh()
        return _Response(HTTPStatus.OK, self.metrics.render(), self.metrics.content_type)


async def start_http_server(
    host: str,
    port: int,
    *,
    durably: Durably,
    scheduler: Scheduler | None,
    metrics: Metrics,
    worker: bool | None = None,
) -> HttpServer:
    """Listen on ``host:port`` (port 0: any free port, see ``.port``) and serve the three endpoints.

    ``worker``: whether ``/readyz`` requires the worker to be running. By default it does once the
    worker has been seen running, so a process started without a worker is not held unready.
    Raises OSError when the address cannot be bound.
    """
    server = HttpServer(durably=durably, scheduler=scheduler, metrics=metrics, worker=worker)
    await server._start(host, port)
    return server


# -- helpers --------------------------------------------------------------------------------------------
def _ok(detail: str | None = None) -> dict[str, Any]:
    return {"status": "ok"} if detail is None else {"status": "ok", "detail": detail}


def _fail(detail: str) -> dict[str, Any]:
    return {"status": "fail", "detail": detail}


async def _probe(check: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except TimeoutError:
        return _fail(f"no answer within {CHECK_TIMEOUT:.0f}s")
    except Exception as exc:
        return _fail(str(exc) or type(exc).__name__)
    return _ok()


async def _read_head(reader: asyncio.StreamReader) -> list[bytes] | None:
    """The request line and header lines, without line ends; None if the peer sent nothing."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # a line longer than the stream's limit
            raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large") from None
        size += len(line)
        if size > MAX_HEAD_BYTES:
            raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
        if not line.endswith(b"\n"):  # end of stream
            if not lines and not line:
                return None
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "incomplete request")
        line = line.rstrip(b"\r\n")
        if not line:
            if lines:
                return lines
            continue  # empty lines before the request line are allowed (RFC 9112, 2.2)
        lines.append(line)


def _parse_head(head: list[bytes]) -> tuple[str, str]:
    """(method, path without query) from a request head; _BadRequest when it is not HTTP/1.x."""
    parts = head[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    match = _VERSION.fullmatch(version)
    if match is None:
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    if match.group(1) != b"1":
        raise _BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.0 and HTTP/1.1")
    if target.startswith((b"http://", b"https://")):  # absolute form
        slash = target.find(b"/", target.index(b"//") + 2)
        target = target[slash:] if slash >= 0 else b"/"
    if not target.startswith(b"/") or any(c <= 0x20 or c == 0x7F for c in target):
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "malformed request target")
    for line in head[1:]:
        name, colon, _ = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "malformed header line")
    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    return method.decode("ascii"), path.decode("ascii")


def _serialize(response: _Response, *, include_body: bool) -> bytes:
    status = response.status
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Cache-Control", "no-store"),
        ("Connection", "close"),
        *response.headers,
    ]
    head = f"HTTP/1.1 {status.value} {status.phrase}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    return head.encode("latin-1") + (response.body if include_body else b"")


class _LagCollector:
    """``durably_event_loop_lag_seconds`` on the metrics registry while the server runs."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "durably_event_loop_lag_seconds",
            "How late the event loop ran a 0.5 s timer at its last tick (/healthz fails above 5 s).",
        )
        gauge.add_metric([], self._server._last_lag)
        yield gauge
