"""The HTTP API against hostile clients (issue 20), on SQLite and PostgreSQL.

What users rely on: nothing a client sends produces a 500 (deep JSON, text that is not valid
Unicode, times at the calendar's ends, odd cursors and event ids get 400 naming the field); bodies
over the limits get 413 JSON before they are read; lists and streams never carry a large value
whole; a tokenless server answers no other Host on any route; logging out ends a session in every
process on the database; guessing tokens gets slower after a few failures; API answers are never
cached.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from durably_sched import Durably, Limits
from durably_sched.errors import InvalidArgumentError
from durably_sched.store import open_store
from durably_sched.web import create_app
from durably_sched.web._throttle import FREE_FAILURES, MAX_DELAY, LoginThrottle
from durably_sched.web.auth import SESSION_COOKIE
from tests.backends import Backend
from tests.web.test_api import COUNTED, TOKEN, client, config, error_of, started


@pytest.fixture
async def idle(backend: Backend) -> AsyncIterator[Durably]:
    durably = await started(backend, worker=False)
    yield durably
    await durably.close()


TRIGGER = "/api/jobs/counted/trigger"


def _nested(depth: int) -> str:
    return '{"input": {"deep": ' + "[" * depth + "]" * depth + "}}"


async def test_deep_json_and_invalid_text_are_400_naming_the_field(idle: Durably) -> None:
    async with client(idle) as http:
        headers = {"Content-Type": "application/json"}
        deep = await http.post(TRIGGER, content=_nested(1000), headers=headers)
        assert "nested deeper than 64 levels" in error_of(deep, 400)
        detail = error_of(await http.post(TRIGGER, content=_nested(70), headers=headers), 400)
        assert detail.startswith("input.deep") and "nested deeper" in detail
        assert (await http.post(TRIGGER, content=_nested(3), headers=headers)).status_code == 201
        for body, field in [
            ('{"input": {"gate": "a\\ud800"}}', "input.gate"),
            ('{"input": {"k\\udfff": 1}}', "input: a key"),
            ('{"labels": {"team": "\\ud800"}}', "labels.team"),
            ('{"labels": {"\\ud800": "x"}}', "labels: a key"),
            ('{"idempotency_key": "k-\\udbff"}', "idempotency_key"),
            ('{"concurrency_key": "nul\\u0000"}', "concurrency_key"),
        ]:
            detail = error_of(await http.post(TRIGGER, content=body, headers=headers), 400)
            assert detail.startswith(field) and ("Unicode" in detail or "NUL" in detail), (body, detail)
        # A valid surrogate pair is one character and passes.
        emoji = await http.post(TRIGGER, content='{"input": {"gate": "\\ud83d\\ude00"}}', headers=headers)
        assert emoji.status_code == 201, emoji.text
        assert "NUL" in error_of(await http.get("/api/runs", params={"schedule": "a\x00"}), 400)
        assert "NUL" in error_of(await http.get("/api/runs/a%00b"), 400)


@pytest.mark.parametrize("edge", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-12-31"])
async def test_times_at_the_calendars_ends_are_400(idle: Durably, edge: str) -> None:
    async with client(idle) as http:
        for name in ("created_after", "created_before"):
            assert name in error_of(await http.get("/api/runs", params={name: edge}), 400)
        assert "before" in error_of(
            await http.get("/api/schedules/hourly/history", params={"before": edge}), 400
        )
        assert "at:" in error_of(await http.post("/api/schedules/hourly/trigger", json={"at": edge}), 400)
        for name, body in [
            ("from", {"from": edge, "to": "2026-01-01T00:00:00Z"}),
            ("to", {"from": "2026-01-01T00:00:00Z", "to": edge}),
        ]:
            detail = error_of(await http.post("/api/schedules/hourly/backfill", json=body), 400)
            assert detail.startswith(f"{name}:") and "out of the supported range" in detail
        page = await http.get("/schedules/hourly", params={"before": edge})
        assert page.status_code == 400


async def test_cursors_limits_and_event_ids_must_be_ascii_int64(idle: Durably) -> None:
    async with client(idle) as http:
        for cursor in ["\u00b2", "\u0661\u0662", "9" * 20, str(2**63), "-1", "1e3"]:
            assert "cursor" in error_of(await http.get("/api/runs", params={"cursor": cursor}), 400), cursor
        assert (await http.get("/api/runs", params={"cursor": str(2**63 - 1)})).status_code == 200
        assert "limit" in error_of(await http.get("/api/runs", params={"limit": "\u0661\u0662"}), 400)
        assert "after" in error_of(await http.get("/api/runs/x/logs", params={"after": "\u00b2"}), 400)
        made = (await http.post(TRIGGER, json={})).json()["run"]["id"]
        for header in [b"1" * 23, "\u00b2".encode(), b"-5"]:
            answer = await http.get(f"/api/runs/{made}/events", headers={"Last-Event-ID": header})
            assert "Last-Event-ID" in error_of(answer, 400)


async def test_bodies_over_the_limit_get_413_before_they_are_read(idle: Durably) -> None:
    idle.limits = Limits(request_body=2048, login_body=256)
    async with client(idle, token=TOKEN) as http:
        admin = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        big = json.dumps({"input": {"gate": "x" * 4000}})
        answer = await http.post(TRIGGER, content=big, headers=admin)
        assert answer.status_code == 413 and answer.json()["error"] == "too_large", answer.text
        assert "2 KiB" in answer.json()["detail"] and "limits.request_body" in answer.json()["detail"]
        pulled = 0

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
            nonlocal pulled
            for _ in range(100):
                pulled += 1
                yield b" " * 512

        answer = await http.post(TRIGGER, content=chunks(), headers=admin)
        assert answer.status_code == 413 and answer.json()["error"] == "too_large", answer.text
        assert pulled < 100  # refused while streaming, not after reading it all
        small = await http.post(TRIGGER, content=json.dumps({"input": {"gate": "x" * 100}}), headers=admin)
        assert small.status_code == 201
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        login = await http.post("/login", content=f"token={TOKEN}&next=/" + "x" * 300, headers=form)
        assert login.status_code == 413 and "limits.login_body" in login.json()["detail"]
        assert (await http.post("/login", content=f"token={TOKEN}", headers=form)).status_code == 303


async def test_lists_and_streams_carry_large_values_as_markers(idle: Durably) -> None:
    async with client(idle) as http:
        gate = "g" * 10_000
        run_id = (await http.post(TRIGGER, json={"input": {"gate": gate}})).json()["run"]["id"]
        [row] = (await http.get("/api/runs")).json()["runs"]
        assert row["id"] == run_id and row["input"] == {
            "$truncated": len(json.dumps({"count": 2, "gate": gate}, separators=(",", ":")))
        }
        assert (await http.get(f"/api/runs/{run_id}")).json()["run"]["input"]["gate"] == gate  # detail: whole
        assert (await http.post(f"/api/runs/{run_id}/cancel")).status_code == 200  # its stream: a snapshot
        async with http.stream("GET", f"/api/runs/{run_id}/events") as response:
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("data: "):
                    snapshot = json.loads(line[6:])
                    break
        assert snapshot["run"]["input"] == row["input"]


async def test_the_host_check_covers_every_route_of_a_tokenless_server(idle: Durably) -> None:
    app = create_app(idle, schedules=config(), allowed_hosts=["127.0.0.1"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:9464"
    ) as http:
        for path in ["/healthz", "/readyz", "/metrics", "/api/runs", "/", "/login", "/static/app.js"]:
            rebound = await http.get(path, headers={"Host": "attacker.example:9464"})
            assert rebound.status_code == 403 and "not this server's" in rebound.text, path
            for host in ["localhost:9464", "127.0.0.1:9464", "[::1]:9464", "localhost"]:
                answer = await http.get(path, headers={"Host": host})
                assert answer.status_code in (200, 303), (path, host, answer.status_code)


async def test_api_answers_are_never_cached(idle: Durably) -> None:
    async with client(idle) as http:
        for answer in [
            await http.get("/api/runs"),
            await http.get("/api/runs/nope"),
            await http.post(TRIGGER, json={}),
        ]:
            assert answer.headers["cache-control"] == "no-store", answer.request.url


async def test_logout_ends_the_session_in_every_process(idle: Durably, backend: Backend) -> None:
    other = Durably(open_store(backend.url)).register([COUNTED])  # a second serve on the database
    await other.start(worker=False)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        async with client(idle, token=TOKEN) as first, client(other, token=TOKEN) as second:
            login = await first.post("/login", content=f"token={TOKEN}", headers=form)
            cookie = {"Cookie": f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}"}
            first.cookies.clear()
            second.cookies.clear()
            assert (await second.get("/api/runs", headers=cookie)).status_code == 200
            assert (await first.post("/logout", headers=cookie)).status_code == 303
            for http in (first, second):  # the old cookie, replayed, is dead everywhere
                assert (await http.get("/api/runs", headers=cookie)).status_code == 401
                assert (await http.get("/runs", headers=cookie)).status_code == 303
            forged = cookie["Cookie"].rsplit(".", 1)[0] + ".0"
            assert (await second.get("/api/runs", headers={"Cookie": forged})).status_code == 401
    finally:
        await other.close()


async def test_failed_logins_are_throttled_per_client_address(idle: Durably) -> None:
    now = [1000.0]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    app = create_app(idle, token=TOKEN, trust_proxy_headers=True)
    app.state.durably_web.throttle = LoginThrottle(lambda: now[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        here = {**form, "X-Forwarded-For": "203.0.113.7"}
        for _ in range(FREE_FAILURES):
            assert (await http.post("/login", content="token=wrong", headers=here)).status_code == 401
        assert (await http.post("/login", content="token=wrong", headers=here)).status_code == 401
        refused = await http.post("/login", content=f"token={TOKEN}", headers=here)  # even the right one
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        elsewhere = {**form, "X-Forwarded-For": "198.51.100.1"}
        assert (await http.post("/login", content=f"token={TOKEN}", headers=elsewhere)).status_code == 303
        wrong_bearer = {"Authorization": "Bearer wrong-token-123456", "X-Forwarded-For": "203.0.113.7"}
        assert error_of(await http.get("/api/runs", headers=wrong_bearer), 429)
        now[0] += 1.5
        assert (await http.post("/login", content=f"token={TOKEN}", headers=here)).status_code == 303
    untrusted = create_app(idle, token=TOKEN)  # X-Forwarded-For is the client's word: not used
    untrusted.state.durably_web.throttle = LoginThrottle(lambda: now[0])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=untrusted), base_url="http://localhost"
    ) as http:
        for i in range(FREE_FAILURES + 1):
            spoofed = {**form, "X-Forwarded-For": f"192.0.2.{i}"}
            assert (await http.post("/login", content="token=wrong", headers=spoofed)).status_code == 401
        assert (await http.post("/login", content=f"token={TOKEN}", headers=form)).status_code == 429


def test_the_throttles_delay_doubles_up_to_its_ceiling() -> None:
    now = [0.0]
    throttle = LoginThrottle(lambda: now[0])
    delays = []
    for _ in range(FREE_FAILURES + 10):
        assert throttle.wait("a") == 0.0 or delays
        throttle.failed("a")
        delays.append(throttle.wait("a"))
    assert delays[:FREE_FAILURES] == [0.0] * FREE_FAILURES
    assert delays[FREE_FAILURES : FREE_FAILURES + 4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == MAX_DELAY and throttle.wait("b") == 0.0


async def test_the_origin_check_compares_the_scheme(idle: Durably) -> None:
    headers = {"X-Durably-CSRF": "1"}
    async with client(idle) as http:
        https = await http.post(TRIGGER, json={}, headers={**headers, "Origin": "https://localhost"})
        assert "cross-site" in error_of(https, 403)
        assert (
            await http.post(TRIGGER, json={}, headers={**headers, "Origin": "http://localhost"})
        ).status_code == 201
    proxied = create_app(idle, schedules=config(), trust_proxy_headers=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=proxied), base_url="http://localhost"
    ) as http:
        behind_tls = {**headers, "Origin": "https://localhost", "X-Forwarded-Proto": "https"}
        assert (await http.post(TRIGGER, json={}, headers=behind_tls)).status_code == 201


@pytest.mark.parametrize(
    "error",
    [
        InvalidArgumentError("input: 300 KiB is over the limit of 256 KiB (limits.input)"),
        ValueError("labels: 65 labels, the limit is 64 (limits.labels)"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        OverflowError("date value out of range"),
    ],
)
async def test_a_library_refusal_is_a_400_naming_the_field(
    idle: Durably, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    async def refuse(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(idle, "trigger", refuse)
    async with client(idle) as http:
        answer = await http.post(TRIGGER, json={"input": {}})
        assert error_of(answer, 400) == str(error)
        assert answer.json()["error"] == "bad_request"
