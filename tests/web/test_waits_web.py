"""Durable waits over HTTP and in the metrics (issue 24), on both backends: ``POST /api/events``
wakes the waiting runs (full token only, same-site, 4xx JSON for bad bodies), a run's JSON says
what it waits for and links parent and children, and the metrics count waiting runs by kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from durably_sched import Durably, Step, define_job
from durably_sched.ops.metrics import Metrics
from durably_sched.store import open_store
from durably_sched.web import create_app
from tests.backends import Backend
from tests.helpers import until
from tests.web.test_api import _form, _meta

TOKEN = "admin-token-0123456789"
READ = "read-only-token-0123456789"


async def approval(step: Step, _: Any) -> dict[str, Any]:
    decision = await step.wait_for_event("approval", "approve:2026-12-06", timeout="1d")
    return {"decision": decision}


async def parent(step: Step, _: Any) -> dict[str, Any]:
    return {"child": await step.run_job("kid", "approval")}


@pytest.fixture
async def durably(backend: Backend) -> AsyncIterator[Durably]:
    jobs = [define_job(name="approval", run=approval), define_job(name="parent", run=parent)]
    made = Durably(open_store(backend.url), polling_interval=0.05).register(jobs)
    await made.migrate()
    await made.start()
    yield made
    await made.close()


def client(durably: Durably) -> httpx.AsyncClient:
    app = create_app(durably, token=TOKEN, read_token=READ)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


async def _status(durably: Durably, run_id: str) -> str:
    return (await durably.get_run(run_id)).status


async def test_an_event_posted_over_http_wakes_the_child_and_its_parent(durably: Durably) -> None:
    admin = {"Authorization": f"Bearer {TOKEN}"}
    run = await durably.trigger("parent")
    await until(lambda: _children_waiting(durably, run.id), timeout=10, what="child waiting")
    await until(lambda: _is(durably, run.id, "waiting"), timeout=10, what="parent waiting")
    async with client(durably) as http:
        shown = (await http.get(f"/api/runs/{run.id}", headers=admin)).json()["run"]
        assert shown["status"] == "waiting" and shown["waiting_for"]["kind"] == "children"
        assert shown["waiting_for_text"] == "waiting for 1 child run (step 'kid')"
        [kid] = shown["children"]
        child = (await http.get(f"/api/runs/{kid['id']}", headers=admin)).json()["run"]
        assert child["parent_run_id"] == run.id and child["waiting_for"]["key"] == "approve:2026-12-06"
        assert child["waiting_for"]["until"].endswith("Z")
        listed = (await http.get("/api/runs?status=waiting", headers=admin)).json()["runs"]
        assert sorted(r["id"] for r in listed) == sorted([run.id, kid["id"]])
        page = await http.get(f"/runs/{run.id}", headers=admin)
        assert "waiting for 1 child run" in page.text and f"/runs/{kid['id']}" in page.text
        sent = await http.post(
            "/api/events", json={"key": "approve:2026-12-06", "data": "yes"}, headers=admin
        )
        assert sent.status_code == 200 and sent.json() == {"key": "approve:2026-12-06", "woken": 1}
    await until(lambda: _is(durably, run.id, "completed"), timeout=10, what="parent completed")
    assert (await durably.get_run(run.id)).output == {"child": {"decision": "yes"}}


async def _is(durably: Durably, run_id: str, status: str) -> bool:
    return await _status(durably, run_id) == status


async def _children_waiting(durably: Durably, run_id: str) -> bool:
    kids = await durably.list_children(run_id)
    return bool(kids) and all(k.status == "waiting" for k in kids)


async def test_sending_an_event_needs_the_full_token_and_a_good_body(durably: Durably) -> None:
    admin = {"Authorization": f"Bearer {TOKEN}"}
    async with client(durably) as http:
        assert (await http.post("/api/events", json={"key": "k"})).status_code == 401
        read = await http.post("/api/events", json={"key": "k"}, headers={"Authorization": f"Bearer {READ}"})
        assert read.status_code == 403 and "read-only" in read.json()["detail"]
        for body, what in (
            (b"{nope", "not valid JSON"),
            (b"[1]", "JSON object"),
            (b'{"key": 5}', "key must be a string"),
            (b'{"data": 1}', "key is required"),
            (b'{"key": "k", "extra": 1}', "unknown field"),
            (b'{"key": "a\\nb"}', "event key"),
        ):
            response = await http.post("/api/events", content=body, headers=admin)
            assert response.status_code == 400, (body, response.text)
            assert what in response.json()["detail"], (body, response.json())
        # A logged-in browser: a cross-site POST is refused even with the page's CSRF value.
        await http.post("/login", content=f"token={TOKEN}", headers=_form())
        csrf = _meta((await http.get("/")).text, "durably-csrf")
        for headers in ({"X-Durably-CSRF": csrf, "Origin": "https://evil.example"}, {}):
            assert (await http.post("/api/events", json={"key": "k"}, headers=headers)).status_code == 403
        same_site = await http.post("/api/events", json={"key": "k"}, headers={"X-Durably-CSRF": csrf})
        assert same_site.status_code == 200 and same_site.json()["woken"] == 0


async def test_metrics_count_waiting_runs_by_kind(durably: Durably) -> None:
    run = await durably.trigger("approval")
    await until(lambda: _is(durably, run.id, "waiting"), timeout=10, what="run waiting")
    metrics = Metrics(durably, None)
    await metrics.refresh()
    found = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert found[("durably_waiting_runs", frozenset({"job": "approval", "kind": "event"}.items()))] == 1
    assert found[("durably_waiting_runs", frozenset({"job": "approval", "kind": "sleep"}.items()))] == 0
    assert found[("durably_runs", frozenset({"job": "approval", "status": "waiting"}.items()))] == 1
