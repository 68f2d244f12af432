"""The HTTP API through httpx against the ASGI app, on SQLite and PostgreSQL: every endpoint, filter,
paging edge, error status and the access rules.

What users rely on: the API does what the CLI does (same facade, same fire-time keys), bad input is
a 4xx with a JSON error naming what is wrong (never a 500), and without the token nothing is seen,
with the read-only token nothing is changed, and no page on another site can act.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, Field

from durably_sched import Durably, Retry, Step, define_job
from durably_sched.schedule.config import SchedulesConfig, parse_schedules
from durably_sched.schedule.ownership import BUCKETS
from durably_sched.store import open_store
from durably_sched.store.base import SchedulerInfo
from durably_sched.web import create_app
from durably_sched.web.auth import SESSION_COOKIE
from durably_sched.web.server import start_server
from tests.backends import Backend
from tests.helpers import FakeClock, until

TOKEN = "admin-token-0123456789"
READ = "read-only-token-0123456789"
GATE: dict[str, asyncio.Event] = {}


class CountIn(BaseModel):
    count: int = Field(default=2, ge=0, le=100)
    gate: str = ""


async def counted(step: Step, payload: CountIn) -> dict[str, Any]:
    for i in range(payload.count):
        await step.run(f"item-{i}", lambda i=i: i)
        step.log.info("item done", i=i)
        await step.progress(i + 1, payload.count)
        if payload.gate and i == 0:
            await GATE[payload.gate].wait()
    return {"count": payload.count}


async def broken(step: Step, payload: dict[str, Any]) -> None:
    await step.run("explode", _explode)


def _explode() -> None:
    raise RuntimeError("boom")


COUNTED = define_job(name="counted", input=CountIn, run=counted, description="count steps")
BROKEN = define_job(name="broken", run=broken)
SCHEDULES = """
schedules:
  hourly:
    cron: "0 * * * *"
    job: counted
    input: {count: 1}
  skippy:
    cron: "*/5 * * * *"
    job: counted
    overlap: skip
    timezone: Europe/Berlin
    pause_after_failures: 3
"""


def config() -> SchedulesConfig:
    return parse_schedules(SCHEDULES, job_inputs={"counted": CountIn, "broken": None})


async def started(backend: Backend, *, worker: bool) -> Durably:
    durably = Durably(open_store(backend.url), polling_interval=0.05).register([COUNTED, BROKEN])
    await durably.migrate()
    await durably.start(worker=worker)
    return durably


@pytest.fixture
async def idle(backend: Backend) -> AsyncIterator[Durably]:
    durably = await started(backend, worker=False)
    yield durably
    await durably.close()


@pytest.fixture
async def working(backend: Backend) -> AsyncIterator[Durably]:
    durably = await started(backend, worker=True)
    yield durably
    await durably.close()


def client(durably: Durably, **options: Any) -> httpx.AsyncClient:
    app = create_app(durably, schedules=config(), **options)
    headers = {} if options.get("token") else {"X-Durably-CSRF": "1"}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=headers
    )


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    return str(body["detail"])


# -- jobs and triggers ---------------------------------------------------------------------------------
async def test_jobs_list_their_input_schema(idle: Durably) -> None:
    async with client(idle) as http:
        jobs = {j["name"]: j for j in (await http.get("/api/jobs")).json()["jobs"]}
    assert jobs["counted"]["description"] == "count steps"
    assert jobs["counted"]["input_schema"]["properties"]["count"] == {
        "default": 2, "maximum": 100, "minimum": 0, "title": "Count", "type": "integer",
    }  # fmt: skip
    assert jobs["broken"]["input_schema"] == {"type": "object"}


async def test_trigger_and_its_errors(idle: Durably) -> None:
    async with client(idle) as http:
        made = await http.post(
            "/api/jobs/counted/trigger", json={"input": {"count": 3}, "labels": {"team": "ops"}}
        )
        assert made.status_code == 201 and made.json()["disposition"] == "created"
        run = made.json()["run"]
        assert (
            run["status"] == "pending"
            and run["input"] == {"count": 3, "gate": ""}
            and run["labels"] == {"team": "ops"}
        )
        keyed = {"input": {}, "idempotency_key": "k-1"}
        first = await http.post("/api/jobs/counted/trigger", json=keyed)
        again = await http.post("/api/jobs/counted/trigger", json=keyed)
        assert (first.status_code, again.status_code) == (201, 200)
        assert (
            again.json()["disposition"] == "idempotent"
            and again.json()["run"]["id"] == first.json()["run"]["id"]
        )

        assert "count" in error_of(
            await http.post("/api/jobs/counted/trigger", json={"input": {"count": "x"}}), 422
        )
        assert "less than or equal to 100" in error_of(
            await http.post("/api/jobs/counted/trigger", json={"input": {"count": 101}}), 422
        )
        assert "unknown job 'nope'" in error_of(await http.post("/api/jobs/nope/trigger", json={}), 404)
        assert "not valid JSON" in error_of(
            await http.post("/api/jobs/counted/trigger", content=b"{oops"), 400
        )
        assert "JSON object" in error_of(await http.post("/api/jobs/counted/trigger", json=[1]), 400)
        assert "unknown field(s) inptu" in error_of(
            await http.post("/api/jobs/counted/trigger", json={"inptu": {}}), 400
        )
        assert "labels" in error_of(
            await http.post("/api/jobs/counted/trigger", json={"labels": {"a": 1}}), 400
        )
        assert "idempotency_key" in error_of(
            await http.post("/api/jobs/counted/trigger", json={"idempotency_key": 5}), 400
        )
        assert "Method" in error_of(await http.get("/api/jobs/counted/trigger"), 405)
        assert error_of(await http.get("/api/nothing/here"), 404)


# -- listing runs ------------------------------------------------------------------------------------------
async def test_run_list_filters_paging_and_total(idle: Durably) -> None:
    a = [await idle.trigger("counted", {}, labels={"team": "ops"}) for _ in range(5)]
    b = [await idle.trigger("broken", {}, labels={"team": "data"}) for _ in range(3)]
    await idle.cancel(a[0].id)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.01)
    c = [await idle.trigger("counted", {"count": 1}) for _ in range(2)]
    newest = [r.id for r in reversed(a + b + c)]
    async with client(idle) as http:

        async def ids(query: str) -> list[str]:
            out: list[str] = []
            cursor = None
            while True:
                url = f"/api/runs?{query}" + (f"&cursor={cursor}" if cursor else "")
                body = (await http.get(url)).json()
                out += [r["id"] for r in body["runs"]]
                cursor = body["next"]
                if cursor is None:
                    return out

        body = (await http.get("/api/runs?limit=4")).json()
        assert (
            [r["id"] for r in body["runs"]] == newest[:4]
            and body["total"] == 10
            and body["total_capped"] is False
        )
        assert await ids("limit=3") == newest
        assert await ids("job=counted&job=broken&limit=2") == newest
        assert await ids("job=broken") == [r.id for r in reversed(b)]
        assert await ids("status=cancelled&status=failed") == [a[0].id]
        assert await ids("label.team=ops&status=pending&limit=1") == [r.id for r in reversed(a[1:])]
        assert await ids("label.team=ops&label.team=data") == []
        assert await ids("labels=team%3Ddata") == [r.id for r in reversed(b)]
        after = middle.isoformat().replace("+00:00", "Z")
        assert await ids(f"created_after={after}") == [r.id for r in reversed(c)]
        assert await ids(f"created_before={after}&job=counted") == [r.id for r in reversed(a)]
        total = (await http.get("/api/runs?label.team=ops")).json()
        assert (total["total"], total["next"]) == (5, None)
        for bad, words in [
            ("status=bogus", "status 'bogus'"),
            ("limit=0", "limit must be between 1 and 500"),
            ("limit=abc", "limit must be an integer"),
            ("cursor=xyz", "invalid cursor"),
            ("created_after=yesterday", "not an ISO 8601 time"),
            ("jobs=counted", "unknown query parameter(s) jobs"),
            ("label.=x", "label.KEY=VALUE"),
        ]:
            assert words in error_of(await http.get(f"/api/runs?{bad}"), 400), bad


# -- one run: details and actions -------------------------------------------------------------------------
async def test_a_retried_run_shows_every_attempt_and_a_running_retry_is_labelled(backend: Backend) -> None:
    """Issue 25: the run detail (API) lists each attempt with its error; the run page counts a
    failure against the policy ("failed try 1 of 3") and, while the retry runs, says that the
    error box is the previous attempt's."""
    gate = asyncio.Event()
    tries: list[int] = []

    async def flaky(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        tries.append(step.attempt)
        if step.failed_attempts == 0:
            await step.run("fetch", _explode)
        await gate.wait()  # the retry runs until the test has looked at it
        return {"tries": len(tries)}

    job = define_job(name="flaky", run=flaky, retry=Retry(max_attempts=3, backoff=0.05, jitter=0))
    durably = Durably(open_store(backend.url), polling_interval=0.05).register([job])
    await durably.migrate()
    await durably.start()
    try:
        async with client(durably) as http:
            run_id = (await http.post("/api/jobs/flaky/trigger", json={})).json()["run"]["id"]

            async def retry_running() -> bool:
                record = await durably.get_run(run_id)
                return record.status == "running" and record.attempt == 2

            await until(retry_running, 20, "the retry never started")
            detail = (await http.get(f"/api/runs/{run_id}")).json()["run"]
            assert (detail["attempt"], detail["failed_attempts"], detail["max_attempts"]) == (2, 1, 3)
            [first] = detail["attempts"]
            assert (first["attempt"], first["outcome"], first["failed_try"]) == (
                1,
                "failed",
                "failed try 1 of 3",
            )
            assert first["error"] == "RuntimeError: boom" and first["failed_step_name"] == "fetch"
            assert "Traceback" in first["traceback"] and first["worker_id"] and first["duration"] is not None
            page = (await http.get(f"/runs/{run_id}")).text
            box = page.split("data-failure>", 1)[1].split("</section>", 1)[0]
            assert "Attempt 1 failed" in box and "failed try 1 of 3" in box
            assert "retrying: attempt 2 is running" in box  # not the run's own error
            attempts = page.split('<table class="attempts">', 1)[1].split("</table>", 1)[0]
            assert attempts.count("<tr data-attempt=") == 2 and "under way" in attempts
            gate.set()
            await durably.wait_for_run(run_id, timeout=20)
            done = (await http.get(f"/api/runs/{run_id}")).json()["run"]
            assert [(a["attempt"], a["outcome"]) for a in done["attempts"]] == [
                (1, "failed"),
                (2, "completed"),
            ]
            assert done["error"] is None and done["attempts"][0]["error"] == "RuntimeError: boom"
            page = (await http.get(f"/runs/{run_id}")).text
            assert "data-failure>" not in page and "failed try 1 of 3" in page  # kept in the attempts table
    finally:
        gate.set()
        await durably.close()


async def test_run_details_and_actions(working: Durably) -> None:
    async with client(working) as http:
        done = await working.jobs.counted.trigger_and_wait({"count": 2}, timeout=20)
        run = (await http.get(f"/api/runs/{done.id}")).json()["run"]
        assert run["status"] == "completed" and run["output"] == {"count": 2} and run["duration"] is not None
        steps = (await http.get(f"/api/runs/{done.id}/steps")).json()["steps"]
        assert [(s["name"], s["output"]) for s in steps] == [("item-0", 0), ("item-1", 1)]
        logs = (await http.get(f"/api/runs/{done.id}/logs")).json()
        assert [e["data"] for e in logs["logs"]] == [{"i": 0}, {"i": 1}] and logs["next"] is None
        page = (await http.get(f"/api/runs/{done.id}/logs?limit=1")).json()
        assert len(page["logs"]) == 1 and page["next"] == page["logs"][0]["id"]
        rest = (await http.get(f"/api/runs/{done.id}/logs?after={page['next']}")).json()["logs"]
        assert [e["data"] for e in rest] == [{"i": 1}]

        failed = await http.post("/api/jobs/broken/trigger", json={})
        failed_id = failed.json()["run"]["id"]
        await working.wait_for_run(failed_id, timeout=20)
        record = (await http.get(f"/api/runs/{failed_id}")).json()["run"]
        assert record["status"] == "failed" and record["error"] == "RuntimeError: boom"
        assert record["failed_step_name"] == "explode"
        assert "only failed or cancelled" in error_of(await http.post(f"/api/runs/{done.id}/retry"), 409)
        retried = await http.post(f"/api/runs/{failed_id}/retry")
        assert retried.status_code == 200 and retried.json()["run"]["status"] == "pending"
        again = await http.post(f"/api/runs/{done.id}/retrigger")
        assert again.status_code == 201 and again.json()["run"]["id"] != done.id
        assert again.json()["run"]["input"] == {"count": 2, "gate": ""}

        GATE["api"] = asyncio.Event()
        held = (
            await http.post("/api/jobs/counted/trigger", json={"input": {"count": 3, "gate": "api"}})
        ).json()["run"]
        await until(lambda: held["id"] in working.worker.active, timeout=10, what="claimed")
        assert "cancel it before deleting" in error_of(await http.delete(f"/api/runs/{held['id']}"), 409)
        cancelled = await http.post(f"/api/runs/{held['id']}/cancel")
        assert cancelled.json()["run"]["status"] == "cancelled"
        GATE["api"].set()
        again_cancelled = await http.post(f"/api/runs/{held['id']}/cancel")  # idempotent
        assert again_cancelled.status_code == 200 and again_cancelled.json()["run"]["status"] == "cancelled"
        await until(lambda: held["id"] not in working.worker.active, timeout=10, what="stopped")
        deleted = await http.delete(f"/api/runs/{held['id']}")
        assert deleted.json() == {"deleted": held["id"]}
        for method, path in [
            ("GET", "/api/runs/nope"),
            ("GET", "/api/runs/nope/steps"),
            ("GET", "/api/runs/nope/logs"),
            ("POST", "/api/runs/nope/retry"),
            ("POST", "/api/runs/nope/retrigger"),
            ("POST", "/api/runs/nope/cancel"),
            ("DELETE", "/api/runs/nope"),
        ]:
            assert "nope" in error_of(await http.request(method, path), 404), path


# -- schedules -----------------------------------------------------------------------------------------------
async def test_schedules_slots_and_backfill(idle: Durably) -> None:
    async with client(idle) as http:
        items = {s["name"]: s for s in (await http.get("/api/schedules")).json()["schedules"]}
        hourly = items["hourly"]
        assert hourly["cron"] == "0 * * * *" and hourly["timezone"] == "UTC" and hourly["paused"] is False
        assert hourly["description"] == "Every hour"
        times = [datetime.fromisoformat(t["utc"].replace("Z", "+00:00")) for t in hourly["next_fire_times"]]
        assert len(times) == 3 and all(t.minute == 0 and t > datetime.now(UTC) for t in times)
        assert times[1] - times[0] == timedelta(hours=1) and hourly["last"] is None
        assert items["skippy"]["next_fire_times"][0]["local"].endswith(("+01:00", "+02:00"))

        first = await http.post("/api/schedules/hourly/trigger", json={})
        assert first.status_code == 201 and first.json()["outcome"] == "triggered"
        slot = first.json()
        assert slot["idempotency_key"] == f"schedule:hourly:{slot['fire_time'][:19]}Z"
        second = await http.post("/api/schedules/hourly/trigger", json={"at": slot["fire_time"]})
        assert second.status_code == 200 and second.json()["outcome"] == "deduplicated"
        assert second.json()["run"]["id"] == slot["run"]["id"]
        assert "is not a fire time of schedule 'hourly'" in error_of(
            await http.post("/api/schedules/hourly/trigger", json={"at": "2026-01-01T10:30:00Z"}), 422
        )
        assert "not an ISO 8601" in error_of(
            await http.post("/api/schedules/hourly/trigger", json={"at": "x"}), 400
        )
        assert "unknown schedule 'nope'" in error_of(
            await http.post("/api/schedules/nope/trigger", json={}), 404
        )
        latest = (await http.get("/api/schedules/hourly")).json()["schedule"]["last"]
        assert latest["outcome"] == "triggered" and latest["run_id"] == slot["run"]["id"]

        window = {"from": "2026-01-05T10:00", "to": "2026-01-05T12:00"}
        plan = (await http.post("/api/schedules/hourly/backfill", json={**window, "dry_run": True})).json()
        assert [t["idempotency_key"] for t in plan["fire_times"]] == [
            "schedule:hourly:2026-01-05T10:00:00Z", "schedule:hourly:2026-01-05T11:00:00Z",
            "schedule:hourly:2026-01-05T12:00:00Z",
        ]  # fmt: skip
        assert await idle.get_runs(schedule="hourly") and len(await idle.get_runs(schedule="hourly")) == 1
        done = (await http.post("/api/schedules/hourly/backfill", json=window)).json()
        assert done["counts"] == {"triggered": 3}
        again = (await http.post("/api/schedules/hourly/backfill", json=window)).json()
        assert again["counts"] == {"deduplicated": 3}
        assert len(await idle.get_runs(schedule="hourly")) == 4
        assert "is before from" in error_of(
            await http.post(
                "/api/schedules/hourly/backfill", json={"from": "2026-01-05T12:00", "to": "2026-01-05T10:00"}
            ),
            422,
        )
        future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
        assert "in the future" in error_of(
            await http.post(
                "/api/schedules/hourly/backfill", json={"from": "2026-01-05T10:00", "to": future}
            ),
            422,
        )
        assert "from and to are required" in error_of(
            await http.post("/api/schedules/hourly/backfill", json={}), 400
        )
        assert "force must be true or false" in error_of(
            await http.post("/api/schedules/hourly/backfill", json={**window, "force": "yes"}), 400
        )

        history = (await http.get("/api/schedules/hourly/history?limit=2")).json()
        assert [r["fire_time"][:16] for r in history["records"]][1:] == ["2026-01-05T12:00"]
        assert history["next"] is not None and history["records"][0]["run_status"] == "pending"
        older = (await http.get(f"/api/schedules/hourly/history?limit=2&before={history['next']}")).json()
        assert [r["fire_time"][:16] for r in older["records"]] == ["2026-01-05T11:00", "2026-01-05T10:00"]
        assert "unknown schedule" in error_of(await http.get("/api/schedules/nope/history"), 404)
        assert "limit" in error_of(await http.get("/api/schedules/hourly/history?limit=-1"), 400)


async def test_a_skipped_tick_is_in_the_history(idle: Durably) -> None:
    async with client(idle) as http:
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        slot = now - timedelta(minutes=now.minute % 5 + 5)
        earlier = slot - timedelta(minutes=5)
        first = await http.post("/api/schedules/skippy/trigger", json={"at": earlier.isoformat()})
        assert first.json()["outcome"] == "triggered"  # its run stays pending: no worker
        second = await http.post("/api/schedules/skippy/trigger", json={"at": slot.isoformat()})
        assert second.json()["outcome"] == "skipped" and second.json()["run"] is None
        records = (await http.get("/api/schedules/skippy/history")).json()["records"]
        assert [r["outcome"] for r in records] == ["skipped", "triggered"]


# -- pausing schedules ---------------------------------------------------------------------------------------
async def test_pause_and_resume_over_http(idle: Durably) -> None:
    reads: list[str] = []
    states, state = idle.store.get_schedule_states, idle.store.get_schedule_state

    async def counted_states() -> Any:
        reads.append("all")
        return await states()

    async def counted_state(name: str) -> Any:
        reads.append(name)
        return await state(name)

    idle.store.get_schedule_states = counted_states  # type: ignore[method-assign]
    idle.store.get_schedule_state = counted_state  # type: ignore[method-assign]
    paused_events: list[Any] = []
    idle.events.on("schedule:pause", paused_events.append)
    async with client(idle) as http:
        fresh = (await http.get("/api/schedules/hourly")).json()["schedule"]
        assert fresh["paused"] is False and fresh["paused_at"] is None and fresh["consecutive_failures"] == 0

        made = await http.post("/api/schedules/hourly/pause", json={"reason": "warehouse\nmigration  OPS-1"})
        assert made.status_code == 200, made.text
        body = made.json()
        assert body["changed"] is True
        shown = body["schedule"]
        assert shown["name"] == "hourly" and shown["paused"] is True and shown["auto_paused"] is False
        assert shown["pause_reason"] == "warehouse migration OPS-1"  # one line, as the CLI stores it
        assert shown["paused_by"] == "http:127.0.0.1" and shown["paused_at"].endswith("Z")
        stored = await state("hourly")
        assert stored is not None and stored.paused and stored.paused_by == "http:127.0.0.1"
        assert [e.schedule for e in paused_events] == ["hourly"]
        metrics = (await http.get("/metrics")).text
        assert 'durably_schedule_pauses_total{kind="manual",schedule="hourly"} 1.0' in metrics

        # Pausing again: a no-op, 200, the pause in force unchanged (as the CLI's exit 0).
        again = await http.post("/api/schedules/hourly/pause", json={"reason": "another"})
        assert again.status_code == 200 and again.json()["changed"] is False
        assert again.json()["schedule"]["pause_reason"] == "warehouse migration OPS-1"
        assert len(paused_events) == 1

        # The list reads every state in one call, not one query per schedule.
        reads.clear()
        listed = {s["name"]: s for s in (await http.get("/api/schedules")).json()["schedules"]}
        assert reads == ["all"]
        assert listed["hourly"]["paused"] is True and listed["hourly"]["paused_by"] == "http:127.0.0.1"
        assert listed["skippy"]["paused"] is False
        page = await http.get("/")
        assert 'data-action="resume" data-schedule="hourly"' in page.text
        assert 'data-action="pause" data-schedule="skippy"' in page.text
        assert "warehouse migration OPS-1" in page.text and "http:127.0.0.1" in page.text
        assert "warehouse migration OPS-1" in (await http.get("/schedules/hourly")).text

        # Bad requests: 4xx JSON, nothing written.
        assert "unknown schedule 'nope'" in error_of(
            await http.post("/api/schedules/nope/pause", json={}), 404
        )
        assert "unknown schedule 'nope'" in error_of(
            await http.post("/api/schedules/nope/resume", json={}), 404
        )
        assert "must be text" in error_of(
            await http.post("/api/schedules/skippy/pause", json={"reason": 5}), 400
        )
        assert "at most 500" in error_of(
            await http.post("/api/schedules/skippy/pause", json={"reason": "x" * 501}), 400
        )
        assert "control characters" in error_of(
            await http.post("/api/schedules/skippy/pause", json={"reason": "a\x07b"}), 400
        )
        assert "unknown field(s) by" in error_of(  # who paused is the server's to say
            await http.post("/api/schedules/skippy/pause", json={"by": "someone-else"}), 400
        )
        assert "not valid JSON" in error_of(
            await http.post(
                "/api/schedules/skippy/pause", content=b"{nope", headers={"Content-Type": "application/json"}
            ),
            400,
        )
        assert "JSON object" in error_of(await http.post("/api/schedules/skippy/pause", json=["x"]), 400)
        assert "catchup must be true or false" in error_of(
            await http.post("/api/schedules/hourly/resume", json={"catchup": "yes"}), 400
        )
        assert (await http.get("/api/schedules/skippy/pause")).status_code == 405  # no change by GET
        assert (await state("skippy")) is None and (await state("hourly")).paused  # type: ignore[union-attr]

        # Resume: fires again from its next fire time; a second resume is a 409.
        resumed = await http.post("/api/schedules/hourly/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["changed"] is True and resumed.json()["caught_up"] == []
        after = resumed.json()["schedule"]
        assert after["paused"] is False and after["resumed_by"] == "http:127.0.0.1"
        assert after["pause_reason"] == "warehouse migration OPS-1"  # the last pause, as the CLI shows
        assert "is not paused" in error_of(await http.post("/api/schedules/hourly/resume", json={}), 409)
        assert "is not paused" in error_of(await http.post("/api/schedules/skippy/resume", json={}), 409)
        assert (await http.get("/api/schedules/hourly")).json()["schedule"]["paused"] is False
        assert not await idle.get_runs(schedule="hourly")  # nothing of the pause ran

        # An automatic pause (as a scheduler makes it) says so, with the rule and the reason.
        reason = "3 consecutive failed runs; the last, run r-1, failed: RuntimeError: boom"
        await idle.store.pause_schedule("skippy", reason=reason, by="pause_after_failures", auto=True)
        auto = (await http.get("/api/schedules/skippy")).json()["schedule"]
        assert auto["paused"] is True and auto["auto_paused"] is True and auto["pause_after_failures"] == 3
        assert auto["paused_by"] == "pause_after_failures" and auto["pause_reason"] == reason
        home = (await http.get("/")).text
        assert "auto-paused" in home and "paused automatically after 3 failed runs in a row" in home
        assert reason in home


async def test_resume_with_catchup_over_http(idle: Durably) -> None:
    resumed_at = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(minutes=30)
    clock = FakeClock(resumed_at - timedelta(hours=3))
    idle.schedule_clock = clock
    async with client(idle) as http:
        assert (await http.post("/api/schedules/hourly/pause", json={})).json()["changed"] is True
        clock.t = resumed_at
        done = await http.post("/api/schedules/hourly/resume", json={"catchup": True})
        assert done.status_code == 200, done.text
        caught = done.json()["caught_up"]
        expected = [resumed_at - timedelta(minutes=30 + 60 * k) for k in (2, 1, 0)]
        assert [c["fire_time"] for c in caught] == [t.strftime("%Y-%m-%dT%H:%M:%S.000Z") for t in expected]
        assert {c["outcome"] for c in caught} == {"triggered"}
        assert len(await idle.get_runs(schedule="hourly")) == 3
        # Asking again (no longer paused): the last pause's fire times already ran, nothing to do: 409.
        assert "is not paused" in error_of(
            await http.post("/api/schedules/hourly/resume", json={"catchup": True}), 409
        )
        assert len(await idle.get_runs(schedule="hourly")) == 3


async def test_pausing_needs_the_full_token_and_a_same_site_request(idle: Durably) -> None:
    admin = {"Authorization": f"Bearer {TOKEN}"}
    read = {"Authorization": f"Bearer {READ}"}
    async with client(idle, token=TOKEN, read_token=READ) as http:
        assert "token" in error_of(await http.post("/api/schedules/hourly/pause", json={}), 401)
        assert "token" in error_of(await http.get("/api/workers"), 401)
        assert "read-only" in error_of(
            await http.post("/api/schedules/hourly/pause", json={}, headers=read), 403
        )
        assert (await http.get("/api/schedules/hourly", headers=read)).json()["schedule"]["paused"] is False
        assert (await http.get("/api/workers", headers=read)).status_code == 200
        # A logged-in browser: a cross-site POST is refused even with the page's CSRF value.
        await http.post("/login", content=f"token={TOKEN}", headers=_form())
        csrf = _meta((await http.get("/")).text, "durably-csrf")
        for headers in (
            {"X-Durably-CSRF": csrf, "Origin": "https://evil.example"},
            {"X-Durably-CSRF": csrf, "Sec-Fetch-Site": "cross-site"},
            {},  # a plain form post: no CSRF header
        ):
            assert error_of(await http.post("/api/schedules/hourly/pause", json={}, headers=headers), 403)
        assert (await idle.get_schedule_state("hourly")) is None
        ok = await http.post("/api/schedules/hourly/pause", json={}, headers={"X-Durably-CSRF": csrf})
        assert ok.status_code == 200 and ok.json()["schedule"]["paused"] is True
        http.cookies.clear()
        assert "read-only" in error_of(
            await http.post("/api/schedules/hourly/resume", json={}, headers=read), 403
        )
        assert (await idle.get_schedule_state("hourly")).paused  # type: ignore[union-attr]
        assert (await http.post("/api/schedules/hourly/resume", json={}, headers=admin)).status_code == 200
        # A read-only session sees the pause state but no pause buttons.
        await http.post("/login", content=f"token={READ}", headers=_form())
        page = await http.get("/")
        assert 'data-schedule="hourly"' in page.text and 'data-action="pause"' not in page.text


# -- workers -----------------------------------------------------------------------------------------------
async def test_workers_and_jobs_without_a_live_worker(idle: Durably, backend: Backend) -> None:
    async with client(idle) as http:
        empty = (await http.get("/api/workers")).json()
        assert empty == {"workers": [], "schedulers": [], "jobs_without_worker": []}
        assert "<h2>Schedulers</h2>" not in (await http.get("/workers")).text
        run = (await http.post("/api/jobs/counted/trigger", json={})).json()["run"]
        orphaned = (await http.get("/api/workers")).json()["jobs_without_worker"]
        assert orphaned == [{"job": "counted", "pending_runs": 1}]
        page = await http.get("/workers")
        assert 'data-orphaned-job="counted"' in page.text and "no live worker has this job" in page.text

        # A worker that has only another job: listed live, and the warning stays.
        other = Durably(open_store(backend.url), polling_interval=0.05).register([BROKEN])
        await other.start(worker=True)
        try:
            await until(lambda: _workers(http), what="the worker registered")
            body = (await http.get("/api/workers")).json()
            (worker,) = body["workers"]
            assert worker["state"] == "live" and worker["jobs"] == ["broken"] and worker["runs_held"] == 0
            assert worker["pid"] > 0 and worker["host"] and worker["heartbeat_at"].endswith("Z")
            assert worker["started_at"].endswith("Z") and 0 <= worker["heartbeat_age"] < 30
            assert body["jobs_without_worker"] == [{"job": "counted", "pending_runs": 1}]
            page = await http.get("/workers")
            assert f'data-worker="{worker["id"]}"' in page.text and 'data-orphaned-job="counted"' in page.text
        finally:
            await other.close()
        # A worker with the job runs it: no warning any more.
        await idle.start(worker=True)
        await until(lambda: _status(idle, run["id"], "completed"), what="the run completed")
        body = (await http.get("/api/workers")).json()
        assert body["jobs_without_worker"] == [] and "counted" in body["workers"][0]["jobs"]
        assert "no live worker" not in (await http.get("/workers")).text


async def test_schedulers_show_their_buckets_and_a_host_clock_that_is_off(idle: Durably) -> None:
    """What `workers list` shows of the schedulers, the API and the Workers page show too: who owns
    how many schedule buckets, and a host whose clock is off by more than a second, flagged."""
    fast = SchedulerInfo(id="sched-fast", host="h1", pid=11, schedules=4, clock_offset=20.34)
    fine = SchedulerInfo(id="sched-fine", host="h2", pid=22, schedules=4, clock_offset=-0.2)
    await idle.balance_buckets(fast, 30.0, BUCKETS)
    await idle.balance_buckets(fine, 30.0, BUCKETS)
    await idle.balance_buckets(fast, 30.0, BUCKETS)  # gives up what the newcomer is due
    await idle.balance_buckets(fine, 30.0, BUCKETS)  # which takes it
    async with client(idle) as http:
        body = (await http.get("/api/workers")).json()
        found = {s["id"]: s for s in body["schedulers"]}
        assert set(found) == {"sched-fast", "sched-fine"}
        assert sum(s["buckets"] for s in found.values()) == BUCKETS
        assert all(s["buckets"] > 0 and s["buckets_total"] == BUCKETS for s in found.values())
        assert found["sched-fast"]["clock_offset_seconds"] == pytest.approx(20.34)
        assert found["sched-fast"]["clock_warning"] is True and found["sched-fine"]["clock_warning"] is False
        assert found["sched-fast"]["state"] == "live" and found["sched-fast"]["host"] == "h1"
        assert found["sched-fast"]["heartbeat_at"].endswith("Z") and found["sched-fast"]["heartbeat_age"] >= 0
        page = (await http.get("/workers")).text
        rows = {m[1]: m[2] for m in re.finditer(r'<tr data-scheduler="([^"]+)">(.*?)</tr>', page, re.S)}
        assert set(rows) == {"sched-fast", "sched-fine"}
        assert f"{found['sched-fast']['buckets']} / {BUCKETS}" in rows["sched-fast"]
        assert "20.3 s ahead" in rows["sched-fast"] and "data-clock-warning" in rows["sched-fast"]
        assert "0.2 s behind" in rows["sched-fine"] and "data-clock-warning" not in rows["sched-fine"]


async def _workers(http: httpx.AsyncClient) -> bool:
    return bool((await http.get("/api/workers")).json()["workers"])


async def _status(durably: Durably, run_id: str, status: str) -> bool:
    return (await durably.get_run(run_id)).status == status


# -- access rules --------------------------------------------------------------------------------------------
async def test_tokens_roles_sessions_and_cross_site_requests(idle: Durably) -> None:
    async with client(idle, token=TOKEN, read_token=READ) as http:
        assert (await http.get("/healthz")).status_code == 200  # probes stay open
        assert (await http.get("/readyz")).status_code == 200
        assert "token" in error_of(await http.get("/api/runs"), 401)
        assert error_of(
            await http.get("/api/runs", headers={"Authorization": "Bearer wrong-token-123456"}), 401
        )
        assert error_of(await http.get("/api/runs", params={"token": TOKEN}), 401)  # never in a URL
        assert (await http.get("/metrics")).status_code == 401  # behind the token when one is set
        admin = {"Authorization": f"Bearer {TOKEN}"}
        read = {"Authorization": f"Bearer {READ}"}
        assert (await http.get("/metrics", headers=read)).status_code == 200
        assert (await http.get("/api/runs", headers=read)).status_code == 200
        assert "read-only" in error_of(
            await http.post("/api/jobs/counted/trigger", json={}, headers=read), 403
        )
        made = await http.post("/api/jobs/counted/trigger", json={}, headers=admin)
        assert made.status_code == 201
        # The dashboard: not logged in -> the login page; a wrong token -> 401; the right one -> a cookie.
        page = await http.get("/runs")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/runs"
        bad = await http.post("/login", content="token=nope&next=/runs", headers=_form())
        assert bad.status_code == 401 and SESSION_COOKIE not in bad.cookies
        good = await http.post("/login", content=f"token={TOKEN}&next=/runs", headers=_form())
        assert good.status_code == 303 and good.headers["location"] == "/runs"
        cookie = good.headers["set-cookie"]
        assert (
            "HttpOnly" in cookie
            and "SameSite=strict" in cookie.replace("Strict", "strict")
            and "Path=/" in cookie
        )
        assert TOKEN not in cookie
        page = await http.get("/runs")
        assert page.status_code == 200
        csrf = _meta(page.text, "durably-csrf")
        run_id = made.json()["run"]["id"]
        # With the session: reading works, acting needs the page's CSRF token, from this site.
        assert (await http.get(f"/api/runs/{run_id}")).status_code == 200
        assert "X-Durably-CSRF" in error_of(await http.post(f"/api/runs/{run_id}/cancel"), 403)
        assert "does not match" in error_of(
            await http.post(f"/api/runs/{run_id}/cancel", headers={"X-Durably-CSRF": "1"}), 403
        )
        evil = {"X-Durably-CSRF": csrf, "Origin": "https://evil.example"}
        assert "cross-site" in error_of(await http.post(f"/api/runs/{run_id}/cancel", headers=evil), 403)
        sneaky = {"X-Durably-CSRF": csrf, "Sec-Fetch-Site": "cross-site"}
        assert "cross-site" in error_of(await http.post(f"/api/runs/{run_id}/cancel", headers=sneaky), 403)
        ok = await http.post(
            f"/api/runs/{run_id}/cancel", headers={"X-Durably-CSRF": csrf, "Origin": "http://localhost"}
        )
        assert ok.status_code == 200 and ok.json()["run"]["status"] == "cancelled"
        # A login form posted from another site is refused too; logging out drops the session.
        assert (
            await http.post(
                "/login", content=f"token={TOKEN}", headers={**_form(), "Origin": "https://evil.example"}
            )
        ).status_code == 403
        assert (await http.post("/logout")).status_code == 303
        http.cookies.clear()
        assert (await http.get("/runs")).status_code == 303
        # A read-only session sees pages without action buttons and cannot act.
        await http.post("/login", content=f"token={READ}", headers=_form())
        page = await http.get(f"/runs/{run_id}")
        assert page.status_code == 200 and "read-only" in page.text and 'data-action="retry"' not in page.text
        csrf = _meta(page.text, "durably-csrf")
        assert "read-only" in error_of(
            await http.post(f"/api/runs/{run_id}/retry", headers={"X-Durably-CSRF": csrf}), 403
        )


async def test_open_mode_needs_the_csrf_header_and_a_loopback_host(idle: Durably) -> None:
    app = create_app(idle, allowed_hosts=["127.0.0.1"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:9464"
    ) as http:
        assert (await http.get("/api/runs")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        assert "X-Durably-CSRF" in error_of(await http.post("/api/jobs/counted/trigger", json={}), 403)
        form = await http.post("/api/jobs/counted/trigger", content="input=x", headers=_form())
        assert form.status_code == 403  # what a cross-site HTML form can send
        made = await http.post("/api/jobs/counted/trigger", json={}, headers={"X-Durably-CSRF": "any"})
        assert made.status_code == 201
        rebound = await http.get("/api/runs", headers={"Host": "attacker.example:9464"})
        assert "not this server's" in error_of(rebound, 403)
        assert (await http.get("/", headers={"Host": "attacker.example"})).status_code == 403
        assert (await http.get("/", headers={"Host": "localhost:9464"})).status_code == 200
    public = create_app(idle, token=TOKEN, metrics_public=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=public), base_url="http://localhost"
    ) as http:
        assert (await http.get("/metrics")).status_code == 200 and (
            await http.get("/api/runs")
        ).status_code == 401


def _form() -> dict[str, str]:
    return {"Content-Type": "application/x-www-form-urlencoded"}


def _meta(html: str, name: str) -> str:
    marker = f'<meta name="{name}" content="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


# -- live streams over a real server -------------------------------------------------------------------------
async def test_streams_of_a_run_and_of_the_run_list(working: Durably) -> None:
    app = create_app(working, schedules=config(), stream_seconds=30)
    server = await start_server(app, "127.0.0.1", 0)
    headers = {"X-Durably-CSRF": "1"}
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", headers=headers, timeout=30
        ) as http:
            listing: list[tuple[str, dict[str, Any]]] = []

            async def watch_list() -> None:
                async with http.stream("GET", "/api/runs/events") as response:
                    assert response.headers["content-type"].startswith("text/event-stream")
                    async for kind, data in _events(response):
                        listing.append((kind, data))
                    listing.append(("ended", {}))

            lister = asyncio.create_task(watch_list())
            await until(lambda: working.feed.subscribers >= 1, timeout=10, what="list stream subscribed")
            await asyncio.sleep(0.3)  # the list stream's baseline poll
            GATE["sse"] = asyncio.Event()
            made = (
                await http.post("/api/jobs/counted/trigger", json={"input": {"count": 4, "gate": "sse"}})
            ).json()
            run_id = made["run"]["id"]
            seen: list[tuple[str, dict[str, Any]]] = []
            async with http.stream("GET", f"/api/runs/{run_id}/events") as response:
                stream = _events(response)
                kind, snapshot = await anext(stream)
                assert kind == "run:snapshot" and snapshot["run"]["id"] == run_id
                GATE["sse"].set()
                async for kind, data in stream:
                    seen.append((kind, data))
            kinds = [k for k, _ in seen]
            assert kinds[-1] == "run:complete" and seen[-1][1]["output"] == {"count": 4}
            progress = [d["progress"]["current"] for k, d in seen if k == "run:progress"]
            assert progress and progress[-1] == 4 and progress == sorted(progress)
            steps = [d["step_name"] for k, d in seen if k == "step:complete"]
            assert steps == [f"item-{i}" for i in range(len(snapshot["steps"]), 4)]
            await until(
                lambda: any(k == "run:complete" and d["run"]["id"] == run_id for k, d in listing),
                timeout=10,
                what="list end",
            )
            # A finished run's stream is its snapshot only; an unknown run is a 404.
            async with http.stream("GET", f"/api/runs/{run_id}/events") as response:
                frames = [item async for item in _events(response)]
            assert [k for k, _ in frames] == ["run:snapshot"] and frames[0][1]["run"]["status"] == "completed"
            assert (await http.get("/api/runs/nope/events")).status_code == 404
            # Stopping the server ends open streams instead of waiting for them.
            await server.close()
            await asyncio.wait_for(lister, 10)
            assert listing[-1][0] == "ended"  # a clean end of the stream, not a dropped connection
    finally:
        await server.close()


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    kind, data = "", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and kind:
            yield kind, json.loads(data)
            kind, data = "", ""


def test_an_event_survives_any_text_in_it() -> None:
    """A log line or output may hold U+2028, NEL or other characters Python counts as line breaks:
    SSE splits lines only at CR and LF, so the event must parse back exactly as a browser reads it."""
    from durably_sched.web.api import sse

    text = "a\u2028b\u2029c\x85d\x1ce\nf\r\ng"
    frame = sse("log:write", {"message": text, "when": datetime(2026, 1, 1, tzinfo=UTC)}, 42)
    fields: dict[str, list[str]] = {}
    for line in re.split(r"\r\n|\r|\n", frame.removesuffix("\n\n")):  # the SSE spec's line breaks
        name, _, value = line.partition(": ")
        fields.setdefault(name, []).append(value)
    assert fields["event"] == ["log:write"] and fields["id"] == ["42"]
    data = json.loads("\n".join(fields["data"]))
    assert data == {"message": text, "when": "2026-01-01 00:00:00+00:00"}


async def test_pages_answer_bad_input_with_a_page_not_a_500(idle: Durably) -> None:
    async with client(idle) as http:
        for path, status in [
            ("/", 200),
            ("/runs", 200),
            ("/jobs", 200),
            ("/schedules/hourly", 200),
            ("/workers", 200),
            ("/runs?status=bogus", 400),
            ("/runs?limit=0", 400),
            ("/runs?cursor=x", 400),
            ("/runs/nope", 404),
            ("/schedules/nope", 404),
            ("/schedules/hourly?before=yesterday", 400),
            ("/nothing", 404),
        ]:
            page = await http.get(path)
            assert page.status_code == status, (path, page.text[:300])
        page = await http.get("/runs")
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self' covers it
        assert page.headers["x-frame-options"] == "DENY"
        assert '<script src="/static/app.js"' in page.text and "<script>" not in page.text
        assert (await http.get("/static/app.js")).status_code == 200
