"""uvicorn on the caller's event loop: how ``durably-sched serve --http`` serves the web app.

The server runs on the loop that runs the worker and the scheduler, on purpose: ``/healthz``
answering proves that *this* loop is alive (see ``ops/health.py``), which a server in another
thread or process could not. uvicorn normally installs its own SIGINT/SIGTERM handlers; serve owns
those signals (first signal: graceful stop, second: exit at once), so :class:`_LoopServer` turns
uvicorn's signal capture off and serve tells the server when to stop.

Stopping: :meth:`WebServer.close` first ends the app's live streams (server-sent events would
otherwise keep their connections open), then asks uvicorn to exit, which closes the listening socket,
lets requests in flight finish for up to :data:`GRACEFUL_SECONDS` and cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from ._protocol import GuardedH11Protocol
from .app import close_streams

__all__ = ["WebServer", "start_server"]

log = logging.getLogger("durably_sched.web")

GRACEFUL_SECONDS = 5.0
"""How long requests in flight may take to finish once the server stops."""
MAX_CONNECTIONS = 512
"""Connections open at once. A new connection past it closes the oldest one that has not sent a
complete request head yet; only when every connection is serving a request do new ones get 503
(100 dashboard tabs with live streams fit easily). See ``_protocol.py``."""
KEEP_ALIVE_SECONDS = 5
"""An idle keep-alive connection is closed after this long; a connection must send each request's
complete head within ``_protocol.HEAD_SECONDS`` in total, however slowly it trickles in."""


class _LoopServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    """An ASGI app served by uvicorn on the running loop; ``port`` is the bound port (port 0 works)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: _LoopServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and start serving. Raises OSError when the address cannot be bound."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family, backlog=2048)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",  # the process (serve) owns start-up and shut-down
            log_config=None,  # keep the process's logging as configured
            access_log=False,  # request lines could carry ids users consider private; not needed
            proxy_headers=False,
            server_header=False,
            limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
            http=GuardedH11Protocol,  # deadlines on reading requests, see _protocol.py
            ws="none",
        )
        quiet = logging.getLogger("uvicorn.error")
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)  # start/stop chatter; serve logs its own lines
        server = _LoopServer(config)
        self._server = server
        state = getattr(getattr(self.app, "state", None), "durably_web", None)
        if state is not None:
            state.health.watcher.start()  # /healthz and the lag metric from the first second
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="durably-http")
        while not server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # raises what made start-up fail
                raise OSError(f"the HTTP server on {self.host}:{self.port} stopped during start-up")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Stop listening, end live streams, let requests in flight finish briefly, then stop."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        close_streams(self.app)
        server.should_exit = True
        state = getattr(getattr(self.app, "state", None), "durably_web", None)
        if state is not None:
            await state.health.watcher.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), GRACEFUL_SECONDS + 5)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception as exc:  # a server that failed while running: nothing left to stop
            log.warning("HTTP server ended with an error: %s", exc)


async def start_server(app: Any, host: str, port: int) -> WebServer:
    """Serve ``app`` on ``host:port`` (port 0: any free port, see ``.port``) until ``close()``."""
    server = WebServer(app, host, port)
    await server.start()
    return server
