"""Who may see and do what over HTTP: bearer tokens, the dashboard's session cookie, cross-site
request protection and the Host check.

* **Tokens.** With a token configured, every ``/api`` and dashboard request needs it, on loopback
  too: ``Authorization: Bearer <token>``, or the session cookie the login page sets. An optional
  read-only token may read everything and change nothing (403). Tokens are compared in constant time
  (``hmac.compare_digest``) and never accepted in a URL.
* **Session cookie.** ``durably_session=<role>.<expiry>.<signature>``: HttpOnly, SameSite=Strict,
  ``Secure`` over https, path of the app's mount point, valid for :data:`SESSION_SECONDS`. The
  signature is an HMAC-SHA256 keyed by a key derived from the role's token, so the cookie works in
  every ``serve`` process sharing the token, survives restarts, and dies when the token changes.
  Nothing is stored server-side. (Hand-written on the standard library's ``hmac`` rather than
  Starlette's SessionMiddleware: that one needs another dependency, itsdangerous, and a separate
  secret to manage, for a cookie that holds two fields.)
* **Cross-site requests.** A state-changing request (POST, PUT, PATCH, DELETE) is refused (403)
  when the browser says it comes from another site (``Sec-Fetch-Site: cross-site|same-site``, or an
  ``Origin`` that is not this server's), and, unless it carries a bearer token (which browsers never
  add by themselves), it must carry the header ``X-Durably-CSRF``: with a session, the session's CSRF
  token (shown to the page in a meta tag); without a token configured (loopback only), any value. A
  page on another site cannot add a custom header to a request without a CORS preflight, which this
  app never grants; SameSite=Strict keeps the cookie off cross-site requests as well.
* **Host check.** Without a token (loopback only), requests must name a loopback host (or the bound
  one) in ``Host``, so a page on another site cannot reach the API through DNS rebinding.
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

Role = Literal["admin", "read"]
SESSION_COOKIE = "durably_session"
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

    def __post_init__(self) -> None:
        if self.read_token is not None and self.token is None:
            raise ValueError("a read-only token needs the full-access token as well")
        if self.read_token is not None and self.read_token == self.token:
            raise ValueError("the read-only token must differ from the full-access token")
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
        cookie = conn.cookies.get(SESSION_COOKIE)
        return self.verify_session(cookie) if cookie else None

    def role(self, conn: HTTPConnection) -> Role | None:
        """The caller's role, or None (not authenticated). Everyone is admin without a token."""
        if not self.enabled:
            return "admin"
        return self.bearer_role(conn) or self.session_role(conn)

    # -- the session cookie ---------------------------------------------------------------------
    def make_session(self, role: Role, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_SECONDS)
        body = f"{role}.{expires}"
        token = self._token_for(role)
        assert token is not None
        signature = hmac.new(_key(token, "session"), body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{signature}"

    def verify_session(self, value: str, now: float | None = None) -> Role | None:
        role, _, rest = value.partition(".")
        expires, _, signature = rest.partition(".")
        if role not in ("admin", "read") or not expires.isdigit():
            return None
        token = self._token_for(role)  # type: ignore[arg-type]
        if token is None:
            return None
        expected = hmac.new(_key(token, "session"), f"{role}.{expires}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return None
        if int(expires) < (now or time.time()):
            return None
        return role  # type: ignore[return-value]

    def csrf_token(self, conn: HTTPConnection) -> str:
        """The value pages send in ``X-Durably-CSRF``: bound to the session when there is one."""
        cookie = conn.cookies.get(SESSION_COOKIE)
        if self.enabled and cookie:
            role = self.verify_session(cookie)
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
            if parts.netloc.lower() != conn.headers.get("host", "").lower():
                return f"cross-site request refused (Origin {origin} is not this server)"
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


def safe_next(target: str | None, root: str) -> str:
    """A post-login redirect target inside this app (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return root + "/"
    return target
