"""Schedules as data in the store, on both backends: every change is a numbered version with who,
when, why, the whole definition and the changed fields; names are unique across the sources (a
YAML schedule's definition cannot be changed through the API, a YAML entry cannot take an API
schedule's name); a sync writes a version only for what changed; a delete keeps the history and a
re-created name goes on numbering; the seq says what changed since a scheduler last looked; lists
filter and page by cursor."""

from __future__ import annotations

import pytest

from durably_sched.errors import ScheduleNotFoundError
from durably_sched.store.base import Store
from durably_sched.store.schedule_defs import (
    DefChange,
    ScheduleConflictError,
    ScheduleDefQuery,
    SyncEntry,
    decode_cursor,
)


def definition(cron: str = "0 2 * * *", job: str = "report", **more: object) -> dict[str, object]:
    return {"cron": cron, "job": job, **more}


async def create(store: Store, name: str, **more: object) -> None:
    await store.save_schedule(DefChange(name, "create", "api", definition(**more), by="alice", note="new"))


async def test_create_update_delete_record_versions_with_what_changed(store: Store) -> None:
    await create(store, "nightly")
    second = await store.save_schedule(
        DefChange("nightly", "update", "api", definition("0 3 * * *"), by="bob", note="later")
    )
    assert second is not None and second.version == 2 and second.changed == ("cron",)
    # The same definition again is no change: no version.
    assert await store.save_schedule(DefChange("nightly", "update", "api", definition("0 3 * * *"))) is None
    gone = await store.save_schedule(DefChange("nightly", "delete", "api", by="carol", note="obsolete"))
    assert gone is not None and gone.version == 3
    row = await store.get_schedule_def("nightly")
    assert row is not None and row.deleted
    versions = await store.schedule_versions("nightly")
    assert [(v.version, v.op, v.by, v.note) for v in versions] == [
        (1, "create", "alice", "new"),
        (2, "update", "bob", "later"),
        (3, "delete", "carol", "obsolete"),
    ]
    assert versions[0].definition == definition() and versions[0].changed == ("cron", "job")
    assert versions[0].at <= versions[1].at <= versions[2].at
    # Re-creating the name goes on numbering; the deleted schedule is gone from lists meanwhile.
    await create(store, "nightly")
    assert [v.version for v in await store.schedule_versions("nightly")] == [1, 2, 3, 4]
    with pytest.raises(ScheduleConflictError, match="already exists"):
        await create(store, "nightly")


async def test_unknown_or_deleted_schedules_cannot_be_changed(store: Store) -> None:
    with pytest.raises(ScheduleNotFoundError):
        await store.save_schedule(DefChange("ghost", "update", "api", definition()))
    await create(store, "a")
    await store.save_schedule(DefChange("a", "delete", "api"))
    with pytest.raises(ScheduleNotFoundError):
        await store.save_schedule(DefChange("a", "delete", "api"))


async def test_yaml_and_api_names_are_unique_across_sources(store: Store) -> None:
    result = await store.sync_schedules(
        [SyncEntry("from-file", definition(), "schedules.yaml", 4)], by="serve-1"
    )
    assert [(v.name, v.version, v.op, v.source, v.by) for v in result.versions] == [
        ("from-file", 1, "sync", "yaml", "serve-1")
    ]
    with pytest.raises(ScheduleConflictError, match=r"schedules.yaml:4"):
        await store.save_schedule(DefChange("from-file", "update", "api", definition("5 * * * *")))
    with pytest.raises(ScheduleConflictError, match="already exists"):
        await create(store, "from-file")
    # Pausing a YAML schedule is a version of it, from anywhere.
    paused = await store.save_schedule(DefChange("from-file", "pause", "api", by="ops", note="maintenance"))
    assert paused is not None and paused.changed == ("paused",) and paused.definition == definition()
    # A YAML entry that takes an API schedule's name is refused; the API schedule is left alone.
    await create(store, "mine", cron="*/5 * * * *")
    refused = await store.sync_schedules(
        [
            SyncEntry("from-file", definition(), "schedules.yaml", 4),
            SyncEntry("mine", definition(), "s.yaml", 9),
        ],
        by="serve-1",
    )
    assert refused.versions == [] and "API schedule" in refused.refused["mine"]
    mine = await store.get_schedule_def("mine")
    assert mine is not None and mine.source == "api" and mine.definition["cron"] == "*/5 * * * *"


async def test_a_sync_versions_only_what_changed_and_deletes_what_left_the_file(store: Store) -> None:
    first = await store.sync_schedules(
        [SyncEntry("a", definition(), "s.yaml", 2), SyncEntry("b", definition(), "s.yaml", 6)], by="s1"
    )
    assert len(first.versions) == 2
    seq = await store.schedule_seq()
    # Same file, a line moved: no version, the line is updated; seq does not move.
    moved = await store.sync_schedules(
        [SyncEntry("a", definition(), "s.yaml", 3), SyncEntry("b", definition(), "s.yaml", 7)], by="s2"
    )
    assert moved.versions == [] and await store.schedule_seq() == seq
    row = await store.get_schedule_def("a")
    assert row is not None and row.line == 3
    # b changes, a leaves the file.
    changed = await store.sync_schedules([SyncEntry("b", definition("1 2 * * *"), "s.yaml", 2)], by="s2")
    assert sorted((v.name, v.op, v.version) for v in changed.versions) == [
        ("a", "delete", 2),
        ("b", "sync", 2),
    ]
    since = await store.schedule_defs_since(seq)
    assert {(d.name, d.deleted) for d in since} == {("a", True), ("b", False)}
    assert await store.schedule_seq() > seq
    assert await store.schedule_defs_since(await store.schedule_seq()) == []


async def test_a_sync_of_the_entries_synced_last_is_answered_by_its_mark_only_while_nothing_changed(
    store: Store,
) -> None:
    # Serves started together each sync the same file: the second and later syncs write nothing,
    # and are told so without comparing every definition again (migration 14's mark).
    file_a = [SyncEntry("a", definition(), "s.yaml", 2), SyncEntry("b", definition(), "s.yaml", 6)]
    file_b = [SyncEntry("a", definition("5 2 * * *"), "s.yaml", 2), SyncEntry("b", definition(), "s.yaml", 6)]
    assert len((await store.sync_schedules(file_a, by="s1")).versions) == 2
    assert (await store.sync_schedules(file_a, by="s2")).versions == []
    # Another file in between (a rolling deploy): the first file's sync changes a back.
    assert [v.name for v in (await store.sync_schedules(file_b, by="s3")).versions] == ["a"]
    back = await store.sync_schedules(file_a, by="s1")
    assert [(v.name, v.definition) for v in back.versions] == [("a", definition())]
    # A change made after the sync (here a yaml schedule deleted other than by a sync) is a new
    # seq: the same entries are compared again and b comes back.
    await store.save_schedule(DefChange("b", "delete", "yaml", by="someone"))
    again = await store.sync_schedules(file_a, by="s2")
    assert [(v.name, v.op) for v in again.versions] == [("b", "sync")]
    # Only the lines moved: no version, but the places are written (the mark holds the lines too).
    moved = [SyncEntry("a", definition(), "s.yaml", 3), SyncEntry("b", definition(), "s.yaml", 7)]
    assert (await store.sync_schedules(moved, by="s2")).versions == []
    row = await store.get_schedule_def("b")
    assert row is not None and (row.path, row.line, row.deleted) == ("s.yaml", 7, False)
    # A refused sync leaves no mark: the same entries are refused again, not waved through.
    await create(store, "c")
    clash = [*moved, SyncEntry("c", definition(), "s.yaml", 9)]
    assert set((await store.sync_schedules(clash, by="s2")).refused) == {"c"}
    assert set((await store.sync_schedules(clash, by="s2")).refused) == {"c"}


async def test_lists_filter_search_and_page_by_cursor(store: Store) -> None:
    for i in range(7):
        await create(
            store, f"cust-{i}", job="report" if i % 2 else "sync", labels={"team": "a" if i < 3 else "b"}
        )
    await store.sync_schedules([SyncEntry("yaml-one", definition(job="other"), "s.yaml", 1)], by="s")
    await store.pause_schedule("cust-1", reason=None, by="ops")
    names = []
    cursor = None
    while True:
        page = await store.list_schedule_defs(ScheduleDefQuery(limit=3, after=cursor))
        names += [d.name for d in page.items]
        if page.next_cursor is None:
            break
        cursor = decode_cursor(page.next_cursor)
    assert names == sorted(names) and len(names) == 8

    async def listed(**query: object) -> list[str]:
        page = await store.list_schedule_defs(ScheduleDefQuery(limit=100, **query))  # type: ignore[arg-type]
        return [d.name for d in page.items]

    assert await listed(job="report") == ["cust-1", "cust-3", "cust-5"]
    assert await listed(labels={"team": "a"}) == ["cust-0", "cust-1", "cust-2"]
    assert await listed(labels={"team": "b"}, job="sync") == ["cust-4", "cust-6"]
    assert await listed(source="yaml") == ["yaml-one"]
    assert await listed(q="ST-6") == ["cust-6"]
    assert await listed(paused=True) == ["cust-1"]
    assert "cust-1" not in await listed(paused=False)
    # The states of a page's schedules, read for that page only.
    states = await store.get_schedule_states_of(["cust-1", "cust-2", "ghost"])
    assert list(states) == ["cust-1"] and states["cust-1"].paused
    assert await store.get_schedule_states_of([]) == {}


def test_a_cursor_not_made_by_a_list_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        decode_cursor("%%%")
