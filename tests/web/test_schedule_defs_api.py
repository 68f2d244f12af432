"""Schedules as data over HTTP, on both backends: what a client relies on is that POST creates a
schedule checked like a YAML entry (400 naming the field, never a 500), PATCH changes only what it
names, DELETE takes a note, versions say who (``http:<address>``), what and why, rollback restores
a version; a YAML schedule's definition is 409 naming the file; only the full token changes
schedules while the read-only token sees them and their versions; the list filters and pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from durably_sched import Durably
from durably_sched.schedule.scheduler import Scheduler
from durably_sched.web import create_app
from tests.backends import Backend
from tests.web.test_api import READ, TOKEN, client, config, error_of, started


@pytest.fixture
async def idle(backend: Backend) -> AsyncIterator[Durably]:
    durably = await started(backend, worker=False)
    yield durably
    await durably.close()


def full() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


async def test_create_patch_rollback_delete_and_versions(idle: Durably) -> None:
    async with client(idle, token=TOKEN, read_token=READ) as http:
        made = await http.post(
            "/api/schedules",
            json={"name": "acme", "cron": "0 6 * * *", "job": "counted", "input": {"count": 3},
                  "timezone": "Europe/Berlin", "catchup_window": "6h", "timeout": 90, "labels": {"c": "acme"},
                  "note": "onboarding"},
            headers=full(),
        )  # fmt: skip
        assert made.status_code == 201, made.text
        item = made.json()["schedule"]
        assert (item["name"], item["source"], item["version"], item["cron"]) == (
            "acme",
            "api",
            1,
            "0 6 * * *",
        )
        assert item["input"] == {"count": 3} and item["catchup_window"] == 6 * 3600
        patched = await http.patch(
            "/api/schedules/acme", json={"cron": "0 7 * * *", "note": "later"}, headers=full()
        )
        assert patched.status_code == 200 and patched.json()["schedule"]["version"] == 2
        assert patched.json()["schedule"]["input"] == {"count": 3}  # untouched fields stay
        rolled = await http.post("/api/schedules/acme/rollback", json={"to": 1}, headers=full())
        assert rolled.json()["schedule"]["cron"] == "0 6 * * *"
        read = {"Authorization": f"Bearer {READ}"}
        versions = (await http.get("/api/schedules/acme/versions", headers=read)).json()["versions"]
        assert [(v["version"], v["op"], v["changed"], v["note"]) for v in versions] == [
            (1, "create", versions[0]["changed"], "onboarding"),
            (2, "update", ["cron"], "later"),
            (3, "rollback", ["cron"], "rollback to version 1"),
        ]
        assert versions[0]["by"].startswith("http:") and versions[0]["what_changed"] == "new"
        shown = (await http.get("/api/schedules/acme", headers=read)).json()["schedule"]
        assert shown["source"] == "api" and shown["version"] == 3
        # The read-only token changes nothing.
        refused = await http.delete("/api/schedules/acme", headers=read)
        assert refused.status_code == 403
        gone = await http.request("DELETE", "/api/schedules/acme", json={"note": "left"}, headers=full())
        assert gone.status_code == 200 and gone.json()["version"]["note"] == "left"
        assert (await http.get("/api/schedules/acme", headers=read)).status_code == 404


async def test_bad_definitions_are_4xx_naming_the_field(idle: Durably) -> None:
    async with client(idle) as http:
        cases = {
            "cron: invalid cron": {"name": "x", "cron": "0 99 * * *", "job": "counted"},
            "job: unknown job": {"name": "x", "cron": "0 * * * *", "job": "nope"},
            "input.count": {"name": "x", "cron": "0 * * * *", "job": "counted", "input": {"count": 1000}},
            "jitter": {"name": "x", "cron": "0 * * * *", "job": "counted", "jitter": "later"},
            "name: ": {"name": "a b", "cron": "0 * * * *", "job": "counted"},
            "cron: required": {"name": "x", "job": "counted"},
            "unknown field": {"name": "x", "cron": "0 * * * *", "job": "counted", "colour": "red"},
            "catchup": {"name": "x", "cron": "0 * * * *", "job": "counted", "catchup": "sometimes"},
        }
        for expected, body in cases.items():
            response = await http.post("/api/schedules", json=body)
            assert response.status_code == 400, (body, response.text)
            assert expected in error_of(response, 400), body
        assert (await http.patch("/api/schedules/ghost", json={"cron": "* * * * *"})).status_code == 404
        assert (await http.post("/api/schedules/ghost/rollback", json={"to": "one"})).status_code == 400
        await http.post("/api/schedules", json={"name": "once", "cron": "0 * * * *", "job": "counted"})
        again = await http.post(
            "/api/schedules", json={"name": "once", "cron": "0 * * * *", "job": "counted"}
        )
        assert "already exists" in error_of(again, 409)


async def test_a_yaml_schedule_is_409_naming_the_file(idle: Durably) -> None:
    scheduler = Scheduler(idle, config())
    await scheduler.load()  # syncs the file, as a serve does
    async with client(idle) as http:
        refused = await http.patch("/api/schedules/hourly", json={"cron": "5 * * * *"})
        assert "change it there" in error_of(refused, 409)
        listed = (await http.get("/api/schedules")).json()
        assert [(s["name"], s["source"]) for s in listed["schedules"]] == [
            ("hourly", "yaml"),
            ("skippy", "yaml"),
        ]
        paused = await http.post("/api/schedules/hourly/pause", json={"reason": "maintenance"})
        assert paused.status_code == 200
        versions = (await http.get("/api/schedules/hourly/versions")).json()["versions"]
        assert [(v["op"], v["note"]) for v in versions] == [("sync", None), ("pause", "maintenance")]


async def test_a_process_without_the_file_shows_the_schedules_another_serve_synced(idle: Durably) -> None:
    # A dashboard serve (serve --no-scheduler --no-worker --http) has no schedules file of its own:
    # its list and its Schedules page show the database's schedules, the synced YAML ones included.
    await Scheduler(idle, config()).load()  # another serve synced its file
    app = create_app(idle)  # no schedules= : this process has no file
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers={"X-Durably-CSRF": "1"}
    ) as http:
        made = {"name": "acme", "cron": "0 6 * * *", "job": "counted"}
        assert (await http.post("/api/schedules", json=made)).status_code == 201
        listed = (await http.get("/api/schedules")).json()["schedules"]
        assert sorted((s["name"], s["source"]) for s in listed) == [
            ("acme", "api"),
            ("hourly", "yaml"),
            ("skippy", "yaml"),
        ]
        page = (await http.get("/")).text
        assert set(re.findall(r'<tr data-schedule="([^"]+)"', page)) == {"acme", "hourly", "skippy"}


async def test_the_list_filters_searches_and_pages(idle: Durably) -> None:
    async with client(idle) as http:
        for i in range(7):
            body = {"name": f"cust-{i}", "cron": "0 1 * * *", "job": "counted",
                    "labels": {"tier": "gold" if i % 2 else "free"}}  # fmt: skip
            assert (await http.post("/api/schedules", json=body)).status_code == 201
        names: list[str] = []
        cursor = None
        while True:
            params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/api/schedules", params=params)).json()
            names += [s["name"] for s in page["schedules"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert names == [f"cust-{i}" for i in range(7)]
        gold = (await http.get("/api/schedules", params={"label": "tier:gold"})).json()["schedules"]
        assert [s["name"] for s in gold] == ["cust-1", "cust-3", "cust-5"]
        found = (await http.get("/api/schedules", params={"q": "ST-6", "source": "api"})).json()["schedules"]
        assert [s["name"] for s in found] == ["cust-6"]
        for bad in (
            {"limit": "0"},
            {"cursor": "!!"},
            {"label": "nocolon"},
            {"paused": "maybe"},
            {"source": "x"},
        ):
            response = await http.get("/api/schedules", params=bad)
            assert response.status_code == 400, (bad, response.text)


async def test_a_nul_character_is_400_on_every_backend(idle: Durably) -> None:
    async with client(idle) as http:
        body = {"name": "nul", "cron": "0 * * * *", "job": "counted", "labels": {"k": "a\u0000b"}}
        assert "NUL" in error_of(await http.post("/api/schedules", json=body), 400)
