"""A failed schedules reload and backfill bounds, over HTTP.

What operators rely on: GET /api/schedules carries `config_errors` next to the schedules (what
every live serve reports, from the database, so a dashboard in another process shows it too);
every dashboard page shows a banner with the file, line, message and since when; a backfill past
the hard bound, or with a time out of range, is a 422 naming the field, never a 500.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta

from durably_sched import Durably
from durably_sched.schedule import manual
from durably_sched.store.config_errors import ConfigErrorRecord
from tests.web.test_api import client, error_of, idle

__all__ = ["idle"]

SINCE = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def failure(
    reporter: str, checked: datetime, message: str = "schedule 'x': cron: bad <b>minute</b>"
) -> ConfigErrorRecord:
    return ConfigErrorRecord(reporter, "host-1", 4242, "/srv/schedules.yaml", 12, message, SINCE, checked)


async def test_api_and_pages_show_a_failed_reload_and_forget_it_when_cleared(idle: Durably) -> None:
    async with client(idle) as http:
        assert (await http.get("/api/schedules")).json()["config_errors"] == []
        assert "data-config-error" not in (await http.get("/")).text

        now = datetime.now(UTC)
        await idle.store.report_config_error(failure("w-live", now))
        await idle.store.report_config_error(failure("w-dead", now - timedelta(hours=1), "old news"))
        body = (await http.get("/api/schedules")).json()
        assert [s["name"] for s in body["schedules"]] == ["hourly", "skippy"]
        assert body["config_errors"] == [
            {
                "path": "/srv/schedules.yaml",
                "line": 12,
                "message": "schedule 'x': cron: bad <b>minute</b>",
                "since": SINCE.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "checked_at": body["config_errors"][0]["checked_at"],
                "reporter": "w-live",
                "host": "host-1",
                "pid": 4242,
            }
        ]  # a row not confirmed for minutes belongs to a process that is gone: left out
        for path in ("/", "/runs", "/jobs", "/workers", "/schedules/hourly"):
            page = (await http.get(path)).text
            assert page.count("data-config-error") == 1, path
            assert (
                "/srv/schedules.yaml:12</strong>: schedule &#39;x&#39;: cron: bad &lt;b&gt;minute&lt;/b&gt;"
                in page
            )
            assert "The last good version is running." in page and "old news" not in page
            assert html.escape(SINCE.isoformat(sep=" ")) in page

        await idle.store.clear_config_error("w-live")
        assert (await http.get("/api/schedules")).json()["config_errors"] == []
        assert "data-config-error" not in (await http.get("/runs")).text


async def test_backfill_bounds_and_ranges_are_4xx_naming_the_field(idle: Durably) -> None:
    async with client(idle) as http:
        # A time out of range is a malformed request (400), refused where the body is read.
        early = {"from": "0001-01-01T00:00:00+14:00", "to": "2026-01-01T00:00:00Z", "force": True}
        detail = error_of(await http.post("/api/schedules/hourly/backfill", json=early), 400)
        assert detail == (
            "from: '0001-01-01T00:00:00+14:00' is out of the supported range of times (years 2 to 9998, UTC)"
        )
        huge = {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "force": True, "dry_run": True}
        detail = error_of(await http.post("/api/schedules/skippy/backfill", json=huge), 422)
        assert detail.startswith(f"more than {manual.BACKFILL_MAX:,} fire times of schedule 'skippy'")
        assert 'even with "force": true; split the range' in detail
        assert await idle.get_runs() == []
