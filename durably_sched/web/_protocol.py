"""uvicorn's h11 protocol with deadlines on reading a request, so slow or idle clients cannot
hold the server's connection slots (the HTTP server of ``serve --http``, see ``server.py``).

uvicorn bounds a connection only by ``timeout_keep_alive``, which every received byte restarts: a
client that sends one header line every two seconds holds its connection for ever, and 512 of them
take every slot (``limit_concurrency``), after which even ``/healthz`` answers 503. This subclass adds:

* **A head deadline.** From the moment a connection opens (or finishes a response and waits for its
  next request) the client has :data:`HEAD_SECONDS` in total to send a complete request head;
  otherwise the connection is closed. Received bytes do not restart it.
* **A body deadline.** A request's body must arrive within :data:`BODY_SECONDS` of its head.
* **Shedding.** When the connections reach the cap, the *oldest connection that has not sent a
  complete head yet* is closed to make room, rather than answering 503 to the newcomer. A probe
  sends its head at once, so it is never the one shed, even when every other connection comes from
  the same (loopback) address, which a per-address cap could not tell apart.

Why a subclass rather than uvicorn's settings or another server: uvicorn (0.3x-0.5x) has no
header or body read timeout, only the keep-alive timer above; hypercorn has a read timeout that
each byte restarts as well, and moving servers would change how serve shares its event loop. The
hooks used here (``connection_made``, ``handle_events``, ``on_response_complete``,
``connection_lost`` and the ``conn`` h11 state) are the protocol's stable surface.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .._ratelimit import RateLimitedLog

__all__ = ["BODY_SECONDS", "HEAD_SECONDS", "GuardedH11Protocol"]

HEAD_SECONDS = 5.0
"""Time a client has, in total, to send a complete request head."""
BODY_SECONDS = 30.0
"""Time a client has to send a request's body once its head has arrived."""

_warn = RateLimitedLog(logging.getLogger("durably_sched.web"), 60.0)

# Per server (uvicorn's ServerState): the connections still waiting for a request head, oldest first.
_WAITING: weakref.WeakKeyDictionary[Any, dict[GuardedH11Protocol, None]] = weakref.WeakKeyDictionary()


class GuardedH11Protocol(H11Protocol):
    """See the module docstring; ``config.limit_concurrency`` is the connection cap."""

    head_seconds = HEAD_SECONDS
    body_seconds = BODY_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting = _WAITING.setdefault(self.server_state, {})

    # -- the connection's life ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()
        cap = self.limit_concurrency
        if cap is not None:
            while len(self.connections) >= cap and self._shed_oldest():
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._after_events()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._after_events()  # keep-alive: the next head has its own deadline

    def send_400_response(self, msg: str) -> None:
        """Malformed data from the client. uvicorn answers 400, which h11 refuses (and logs a
        traceback) once an answer was sent already, e.g. a 413 while the body still streams in
        and then breaks off mid-chunk: then the connection is just closed."""
        if self.conn.our_state is not h11.IDLE:
            self._close()
            return
        super().send_400_response(msg)

    # -- deadlines ------------------------------------------------------------------------------
    def _await_head(self) -> None:
        self._arm(self.head_seconds)
        self._waiting[self] = None

    def _after_events(self) -> None:
        """Move the deadline along with the client's side of the h11 state machine."""
        state = self.conn.their_state
        if state is h11.IDLE:  # waiting for a head: a new connection or the next request
            if self not in self._waiting:
                self._await_head()
        elif self in self._waiting:  # a head has just arrived
            self._waiting.pop(self, None)
            if state is h11.SEND_BODY:
                self._arm(self.body_seconds)
            else:
                self._cancel()
        elif state is not h11.SEND_BODY:  # the body is complete (or the connection is ending)
            self._cancel()

    def _arm(self, seconds: float) -> None:
        self._cancel()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _settle(self) -> None:
        self._cancel()
        self._waiting.pop(self, None)

    def _expired(self) -> None:
        self._deadline = None
        state = self.conn.their_state
        if self in self._waiting or state is h11.SEND_BODY:
            self._close()

    def _close(self) -> None:
        self._settle()
        self.connections.discard(self)
        if not self.transport.is_closing():
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self.transport.close()

    def _shed_oldest(self) -> bool:
        for victim in self._waiting:
            if victim is not self:
                victim._close()
                _warn.log(
                    logging.WARNING,
                    "HTTP connection cap (%d) reached: closed the oldest connection that had not sent "
                    "a complete request head (slow or idle clients)",
                    self.limit_concurrency,
                )
                return True
        return False
