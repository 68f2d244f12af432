"""The checks every request of the app passes before any route sees it (an ASGI middleware):

* **Host.** Without a token, a Host that is not a loopback name or the bound address gets 403 on
  every route, the probes and ``/metrics`` included, so a page on another site cannot read them
  through DNS rebinding (see ``auth.py``).
* **Body size.** A body over the limit gets 413 with ``{"error": "too_large", "detail"}`` before it
  is read: at once when its ``Content-Length`` says so, and while it streams (chunked) as soon as
  the bytes received pass the limit, so at most the limit plus one chunk is ever held. The limits
  are ``durably.limits.login_body`` for ``POST /login`` and ``durably.limits.request_body`` for
  everything else.
* **Sessions.** A request with a well-signed session cookie has its session looked up in the
  database once (logout deletes it there); the role found is left in the scope for ``Auth``. The
  probes and static files skip this, so they never wait on the database.
* **Caching.** Every answer under ``/api`` carries ``Cache-Control: no-store`` (they hold run data
  a shared cache must not keep).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from ..errors import StoreError
from .auth import SESSION_COOKIE, SESSION_SCOPE_KEY, Auth

if TYPE_CHECKING:
    from ..ports import WebFacade

__all__ = ["RequestGuard", "TooLarge", "size_text"]


class TooLarge(Exception):
    """A request body passed its limit while it was being read."""


def size_text(size: int) -> str:
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def _answer(status: int, error: str, detail: str, *, api: bool) -> tuple[dict[str, Any], list[Any]]:
    if api or status == 413:
        body = json.dumps({"error": error, "detail": detail}).encode()
        kind = b"application/json"
    else:
        body = (detail + "\n").encode()
        kind = b"text/plain; charset=utf-8"
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", kind),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ],
    }
    return start, [{"type": "http.response.body", "body": body}]


class RequestGuard:
    """See the module docstring; ``auth`` and ``durably`` are the app's."""

    def __init__(self, app: Any, auth: Auth, durably: WebFacade) -> None:
        self.app = app
        self.auth = auth
        self.durably = durably

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root = scope.get("root_path", "")
        path: str = scope.get("path", "")
        api = path == root + "/api" or path.startswith(root + "/api/")
        conn = HTTPConnection(scope)
        problem = self.auth.host_problem(conn)
        if problem is not None:
            await self._send(send, 403, "forbidden", problem, api=api)
            return
        if not path.startswith((root + "/healthz", root + "/readyz", root + "/static/")):
            try:
                await self._load_session(conn)
            except StoreError as exc:
                await self._send(send, 503, "unavailable", str(exc), api=True)
                return
        limits = self.durably.limits
        login = path == root + "/login"
        limit = limits.login_body if login else limits.request_body
        name = "login_body" if login else "request_body"
        detail = f"the request body is over the limit of {size_text(limit)} (limits.{name})"
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._send(send, 413, "too_large", detail, api=api)
            return
        received = 0
        started = False

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(detail)
            return message

        async def marked(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if api:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                    message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
            await send(message)

        try:
            await self.app(scope, counted, marked)
        except TooLarge:
            if not started:
                await self._send(send, 413, "too_large", detail, api=api)

    async def _load_session(self, conn: HTTPConnection) -> None:
        cookie = conn.cookies.get(SESSION_COOKIE) if self.auth.enabled else None
        verified = self.auth.verify_session(cookie) if cookie else None
        if verified is None:
            return
        role, session_id = verified
        live = await self.durably.web_session_role(session_id)
        conn.scope[SESSION_SCOPE_KEY] = role if live == role else None

    @staticmethod
    async def _send(send: Any, status: int, error: str, detail: str, *, api: bool) -> None:
        start, bodies = _answer(status, error, detail, api=api)
        await send(start)
        for body in bodies:
            await send(body)


def _content_length(scope: Any) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else None
    return None
