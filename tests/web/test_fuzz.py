"""Generated requests at every endpoint of the app (issue 20): no 500, whatever a client sends.

What users rely on: the API's promise that bad input is a 4xx with a JSON error, never a 500, holds
for any JSON body, any query string and any path segment, on every route the app has (enumerated
from the app itself, so a new route is covered without touching this test), with a valid token
(so the requests reach the handlers). 503 keeps its documented meanings only: /readyz not ready.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount, Route

from durably_sched import Durably
from durably_sched.web import create_app
from tests.backends import Backend
from tests.web.test_api import TOKEN, config, started

EXAMPLES = 200

TEXT = st.text(max_size=24)
EDGE_TEXT = st.sampled_from(
    [
        "", "0", "-1", "1e3", "\u00b2", "\u0661", "9" * 25, str(2**63), "\ud800", "\x00", "a\x00b",
        "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2026-05-01T02:00:00Z", "2026-05-01",
        "hourly", "skippy", "counted", "broken", "pending", "team=ops", "=", "%", "../..", "\u2028", " ",
    ]
)  # fmt: skip
ANY_TEXT = st.one_of(TEXT, EDGE_TEXT)
LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), ANY_TEXT,
)  # fmt: skip
JSON = st.recursive(
    LEAF,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(ANY_TEXT, inner, max_size=4)),
    max_leaves=12,
)
FIELDS = [
    "input", "labels", "idempotency_key", "concurrency_key", "at", "from", "to", "dry_run", "force",
    "reason", "catchup",
]  # fmt: skip
BODY = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4),
    JSON,
    st.binary(max_size=40),
    st.sampled_from([b"[" * 5000, b'{"input": ' + b"[" * 1000 + b"]" * 1000 + b"}", b'"\\ud800"']),
)
PARAMS = [
    "job", "status", "schedule", "created_after", "created_before", "limit", "cursor", "labels",
    "label.team", "after", "before", "next", "x",
]  # fmt: skip
QUERY = st.lists(st.tuples(st.sampled_from(PARAMS), ANY_TEXT), max_size=4)
HEADERS = st.fixed_dictionaries({}, optional={"Last-Event-ID": st.sampled_from(["1", "9" * 23, "x", "-1"])})


def endpoints(app: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(method, path template) of every route of the app, mounts included (not static files)."""
    found: list[tuple[str, str]] = []
    for route in app.routes:
        if isinstance(route, Mount) and route.routes:
            found.extend(endpoints(route, prefix + route.path))
        elif isinstance(route, Route):
            found.extend((method, prefix + route.path) for method in sorted(route.methods or ["GET"]))
    return found


@pytest.fixture
async def idle(backend: Backend) -> AsyncIterator[Durably]:
    durably = await started(backend, worker=False)
    yield durably
    await durably.close()


@pytest.fixture
async def fuzzed(idle: Durably) -> AsyncIterator[tuple[httpx.AsyncClient, list[tuple[str, str]], list[str]]]:
    app = create_app(idle, schedules=config(), token=TOKEN, stream_seconds=0.05)
    routes = endpoints(app)
    assert ("POST", "/api/jobs/{job}/trigger") in routes and ("GET", "/healthz") in routes
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://localhost",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    ) as http:
        made = await http.post("/api/jobs/counted/trigger", json={"input": {"count": 1}})
        assert made.status_code == 201
        yield http, routes, [made.json()["run"]["id"]]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_no_request_gets_a_500(
    fuzzed: tuple[httpx.AsyncClient, list[tuple[str, str]], list[str]], data: st.DataObject
) -> None:
    http, routes, run_ids = fuzzed
    method, template = data.draw(st.sampled_from(routes), label="route")
    names = re.findall(r"{(\w+)(?::\w+)?}", template)
    path = template
    for name in names:
        value = data.draw(st.one_of(st.sampled_from(run_ids), ANY_TEXT), label=name)
        path = re.sub(
            r"{" + name + r"(?::\w+)?}", quote(value.encode("utf-8", "surrogatepass"), safe=""), path
        )
    query = data.draw(QUERY, label="query")
    body = data.draw(BODY, label="body")
    headers = data.draw(HEADERS, label="headers")
    if isinstance(body, bytes):
        content = body
    else:
        import json

        content = json.dumps(body).encode()
    query_text = "&".join(
        f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}" for k, v in query
    )
    url = path + ("?" + query_text if query_text else "")
    answer = await http.request(
        method, url, content=content, headers={"Content-Type": "application/json", **headers}
    )
    status = answer.status_code
    assert status < 500 or (status == 503 and template == "/readyz"), (
        method,
        url,
        content[:200],
        answer.text[:500],
    )
    if template.startswith("/api") and status >= 400 and method != "HEAD":
        body_json = answer.json()
        assert set(body_json) == {"error", "detail"}, body_json
