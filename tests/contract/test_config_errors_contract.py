"""The store contract for failed schedules-file reloads, on every backend.

What the dashboard, the API and `schedules list` rely on, in any process: the failure a serve
reported is read back as written (file, line, message, since when); a serve reports again without
making a second row; a successful reload or a clean stop removes it; rows a dead process left
behind can be left out by how long ago they were last confirmed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from durably_sched.store.base import Store
from durably_sched.store.config_errors import ConfigErrorRecord

T = datetime(2030, 1, 1, 12, 30, tzinfo=UTC)


def failure(
    reporter: str, *, since: datetime = T, checked: datetime = T, line: int | None = 7
) -> ConfigErrorRecord:
    return ConfigErrorRecord(
        reporter=reporter,
        host="h1",
        pid=4242,
        path="/etc/durably/schedules.yaml",
        line=line,
        message="schedule 'nightly': cron: bad minute '61'",
        since=since,
        checked_at=checked,
    )


async def test_a_reported_failure_reads_back_and_is_replaced_not_doubled(store: Store) -> None:
    assert await store.list_config_errors() == []
    await store.report_config_error(failure("w-1"))
    assert await store.list_config_errors() == [failure("w-1")]
    later = failure("w-1", checked=T + timedelta(minutes=1), line=None)
    await store.report_config_error(later)
    [only] = await store.list_config_errors()
    assert only == later and only.since == T and only.line is None
    assert only.location == "/etc/durably/schedules.yaml"
    assert failure("w-1").location == "/etc/durably/schedules.yaml:7"


async def test_clearing_removes_one_reporter_only(store: Store) -> None:
    await store.report_config_error(failure("w-1"))
    await store.report_config_error(failure("w-2", since=T + timedelta(seconds=5)))
    await store.clear_config_error("w-1")
    await store.clear_config_error("never-reported")
    assert [r.reporter for r in await store.list_config_errors()] == ["w-2"]


async def test_old_rows_are_left_out_by_when_they_were_last_confirmed(store: Store) -> None:
    await store.report_config_error(
        failure("dead", since=T - timedelta(hours=1), checked=T - timedelta(hours=1))
    )
    await store.report_config_error(failure("live", since=T - timedelta(hours=2), checked=T))
    everything = await store.list_config_errors()
    assert [r.reporter for r in everything] == ["live", "dead"]  # oldest streak first
    fresh = await store.list_config_errors(checked_after=T - timedelta(minutes=5))
    assert [r.reporter for r in fresh] == ["live"]
    assert all(r.since.tzinfo is not None and r.since.utcoffset() == timedelta(0) for r in everything)
