"""Who may see and do what over HTTP: bearer tokens, the dashboard's session cookie, cross-site
request protection and the Host check.

* **Tokens.** With a token configured, every ``/api`` and dashboard request needs it, on loopback
  too: ``Authorization: Bearer <token>``, or the session cookie the login page sets. An optional
  read-only token may read everything and change nothing (403). Tokens are compared in constant time
  (``hmac.compare_digest``) and never accepted in a URL.
* **Session cookie.** ``durably_session=<role>.<expiry>.<secret>.<signature>``: HttpOnly,
  SameSite=Strict, ``Secure`` over https, path of the app's mount point, valid for
  :data:`SESSION_SECONDS`. The signature is an HMAC-SHA256 keyed by a key derived from the role's
  token, so the cookie dies when the token changes. The session is also a row in the database
  (``web_sessions``, keyed by a hash of the secret): logging out deletes it, which ends the session
  in every ``serve`` process on the database, across restarts. :class:`~._guard.RequestGuard` looks
  the row up once per request that carries the cookie and leaves the answer in the ASGI scope.
* **Login throttling.** Failed logins (and requests with a wrong bearer token) are counted per
  client address (the TCP peer; ``X-Forwarded-For`` only with ``trust_proxy_headers``); after
  :data:`~._throttle.FREE_FAILURES` failures each attempt must wait a delay that doubles with every
  further failure (429 with ``Retry-After``), and the token is not even checked meanwhile.
* **Cross-site requests.** A state-changing request (POST, PUT, PATCH, DELETE) is refused (403)
  when the browser says it comes from another site (``Sec-Fetch-Site: cross-site|same-site``, or an
  ``Origin`` whose scheme, host or port is not this server's), and, unless it carries a bearer
  token (which browsers never add by themselves), it must carry the header ``X-Durably-CSRF``:
  with a session, the session's CSRF token (shown to the page in a meta tag); without a token
  configured (loopback only), any value. A page on another site cannot add a custom header to a
  request without a CORS preflight, which this app never grants; SameSite=Strict keeps the cookie
  off cross-site requests as well.
* **Host check.** Without a token (loopback only), requests must name a loopback host (or the bound
  one) in ``Host``, so a page on another site cannot reach the API, the pages, the probes or the
  metrics through DNS rebinding (checked by :class:`~._guard.RequestGuard` on every route).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from ..errors import InvalidArgumentError

Role = Literal["admin", "read"]
SESSION_COOKIE = "durably_session"
SESSION_SCOPE_KEY = "durably_session_role"
"""Where RequestGuard leaves the role of a live session (absent or None: no live session)."""
SESSION_SECONDS = 12 * 3600
CSRF_HEADER = "x-durably-csrf"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def _key(token: str, purpose: str) -> bytes:
    return hashlib.sha256(f"durably-sched:{purpose}:".encode() + token.encode()).digest()


@dataclass(frozen=True)
class Auth:
    """The access rules of one app (see the module docstring)."""

    token: str | None = None
    read_token: str | None = None
    metrics_public: bool | None = None
    allowed_hosts: Sequence[str] | None = None
    trust_proxy_headers: bool = False
    """Take the client address from ``X-Forwarded-For`` and the scheme from ``X-Forwarded-Proto``
    (only behind a reverse proxy that sets them; anyone can send them otherwise)."""

    def __post_init__(self) -> None:
        if self.read_token is not None and self.token is None:
            raise InvalidArgumentError("a read-only token needs the full-access token as well")
        if self.read_token is not None and self.read_token == self.token:
            raise InvalidArgumentError("the read-only token must differ from the full-access token")
        object.__setattr__(self, "_open_csrf", secrets.token_urlsafe(16))

    @property
    def enabled(self) -> bool:
        return self.token is not None

    @property
    def metrics_open(self) -> bool:
        return self.metrics_public if self.metrics_public is not None else not self.enabled

    # -- identifying the caller -----------------------------------------------------------------
    def _token_for(self, role: Role) -> str | None:
        return self.token if role == "admin" else self.read_token

    def role_for_token(self, presented: str) -> Role | None:
        found: Role | None = None
        roles: tuple[Role, ...] = ("admin", "read")
        for role in roles:
            expected = self._token_for(role)
            if expected is not None and hmac.compare_digest(presented.encode(), expected.encode()):
                found = role
        return found

    def bearer_role(self, conn: HTTPConnection) -> Role | None:
        header = conn.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        return self.role_for_token(value.strip())

    def session_role(self, conn: HTTPConnection) -> Role | None:
        """The role of the request's session, as RequestGuard found it in the database."""
        found: Role | None = conn.scope.get(SESSION_SCOPE_KEY)
        return found

    # -- where the request comes from -----------------------------------------------------------
    def client_address(self, conn: HTTPConnection) -> str:
        """The TCP peer, or the address the nearest trusted proxy saw (``trust_proxy_headers``)."""
        if self.trust_proxy_headers:
            forwarded = conn.headers.get("x-forwarded-for", "").split(",")[-1].strip()
            if forwarded:
                return forwarded[:64]
        client = conn.client
        return client.host if client is not None and client.host else "unknown"

    def scheme(self, conn: HTTPConnection) -> str:
        if self.trust_proxy_headers:
            forwarded = conn.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
            if forwarded in ("http", "https"):
                return forwarded
        return conn.url.scheme

    def role(self, conn: HTTPConnection) -> Role | None:
        """The caller's role, or None (not authenticated). Everyone is admin without a token."""
        if not self.enabled:
            return "admin"
        return self.bearer_role(conn) or self.session_role(conn)

    # -- the session cookie ---------------------------------------------------------------------
    def make_session(self, role: Role, now: float | None = None) -> tuple[str, str]:
        """A new session: (the cookie's value, the id to record in the database)."""
        expires = int((now or time.time()) + SESSION_SECONDS)
        secret = secrets.token_urlsafe(24)
        body = f"{role}.{expires}.{secret}"
        token = self._token_for(role)
        assert token is not None
        signature = hmac.new(_key(token, "session"), body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{signature}", session_id(secret)

    def verify_session(self, value: str, now: float | None = None) -> tuple[Role, str] | None:
        """(role, session id) of a well-signed, unexpired cookie; whether the session is still
        live is the database's to say (``Store.web_session_role``)."""
        parts = value.split(".")
        if len(parts) != 4:
            return None
        role, expires, secret, signature = parts
        if (
            role not in ("admin", "read")
            or not (expires.isascii() and expires.isdigit())
            or len(expires) > 12
        ):
            return None
        token = self._token_for(role)  # type: ignore[arg-type]
        if token is None:
            return None
        body = f"{role}.{expires}.{secret}"
        expected = hmac.new(_key(token, "session"), body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return None
        if int(expires) < (now or time.time()):
            return None
        return role, session_id(secret)  # type: ignore[return-value]

    def csrf_token(self, conn: HTTPConnection) -> str:
        """The value pages send in ``X-Durably-CSRF``: bound to the session when there is one."""
        cookie = conn.cookies.get(SESSION_COOKIE)
        if self.enabled and cookie:
            role = self.session_role(conn)
            token = self._token_for(role) if role else None
            if token is not None:
                return hmac.new(_key(token, "csrf"), cookie.encode(), hashlib.sha256).hexdigest()
        return str(getattr(self, "_open_csrf"))  # noqa: B009 - set in __post_init__

    # -- request checks -------------------------------------------------------------------------
    def host_problem(self, conn: HTTPConnection) -> str | None:
        if self.enabled or self.allowed_hosts is None:
            return None
        host = conn.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        allowed = {h.lower() for h in (*LOOPBACK_HOSTS, *self.allowed_hosts)}
        if name.lower() not in allowed:
            return f"Host '{host}' is not this server's (open mode answers loopback names only)"
        return None

    def cross_site_problem(self, conn: HTTPConnection, method: str) -> str | None:
        """Why an unsafe request looks cross-site (None: it does not)."""
        if method not in UNSAFE_METHODS:
            return None
        site = conn.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"cross-site request refused (Sec-Fetch-Site: {site})"
        origin = conn.headers.get("origin")
        if origin is not None and origin != "null":
            parts = urlsplit(origin)
            same_host = parts.netloc.lower() == conn.headers.get("host", "").lower()
            if not same_host or parts.scheme.lower() != self.scheme(conn):
                return f"cross-site request refused (Origin {origin[:100]} is not this server)"
        elif origin == "null":
            return "cross-site request refused (Origin: null)"
        return None

    def csrf_problem(self, conn: HTTPConnection, method: str) -> str | None:
        """Why an unsafe request without a bearer token lacks CSRF proof (None: it has it)."""
        if method not in UNSAFE_METHODS or (self.enabled and self.bearer_role(conn) is not None):
            return None
        presented = conn.headers.get(CSRF_HEADER)
        if not presented:
            return "state-changing requests need the X-Durably-CSRF header (or a bearer token)"
        if self.enabled and not hmac.compare_digest(presented.encode(), self.csrf_token(conn).encode()):
            return "the X-Durably-CSRF header does not match this session"
        return None


def session_id(secret: str) -> str:
    """The database's key for a session: a hash, so the table holds no usable credential."""
    return hashlib.sha256(f"durably-sched:session:{secret}".encode()).hexdigest()


def safe_next(target: str | None, root: str) -> str:
    """A post-login redirect target inside this app (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return root + "/"
    return target
