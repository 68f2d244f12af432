"""`durably-sched schedules create|update|delete|versions|rollback|show` and the database filters of
`schedules list`, through CliRunner: what operators rely on is that a schedule made or changed
from the shell is checked like a YAML entry (one error line naming the field, exit 2, nothing
written), that each change is a version saying who, what and why, that a YAML schedule cannot be
redefined from here (the message names the file and line), and that lists page by cursor."""

from __future__ import annotations

import json

from tests.unit import test_cli
from tests.unit.test_cli import Project, error_line

project = test_cli.project
migrated = test_cli.migrated
_logging_restored = test_cli._logging_restored  # `serve --once` configures process-wide logging


def test_create_update_rollback_delete_with_versions(migrated: Project) -> None:
    made = migrated.ok(
        "schedules", "create", "acme-images", "--cron", "0 6 * * *", "--job", "echo-image",
        "--input", '{"filename": "acme.png"}', "--label", "customer=acme", "--timezone", "Europe/Berlin",
        "--timeout", "1h", "--retry", "max_attempts=5", "--note", "onboarding", "--by", "alice",
    )  # fmt: skip
    assert made.stdout.startswith("schedule 'acme-images' created (version 1)")
    changed = migrated.json("schedules", "update", "acme-images", "--cron", "0 7 * * *", "--json")
    assert (changed["version"], changed["cron"], changed["timeout"]) == (2, "0 7 * * *", "1h")
    assert changed["retry"]["max_attempts"] == 5 and changed["source"] == "api"
    migrated.ok("schedules", "rollback", "acme-images", "--to", "1", "--note", "7 was too late")
    versions = migrated.json("schedules", "versions", "acme-images", "--json")
    assert [(v["version"], v["op"], v["by"], v["note"]) for v in versions] == [
        (1, "create", "alice", "onboarding"),
        (2, "update", versions[1]["by"], None),
        (3, "rollback", versions[2]["by"], "7 was too late"),
    ]
    assert versions[1]["changed"] == ["cron"] and versions[2]["definition"]["cron"] == "0 6 * * *"
    table = migrated.ok("schedules", "versions", "acme-images").stdout
    assert "rollback" in table and "7 was too late" in table
    gone = migrated.ok("schedules", "delete", "acme-images", "--note", "customer left")
    assert "deleted (version 4)" in gone.stdout
    again = migrated.run("schedules", "delete", "acme-images")
    assert again.exit_code == 2 and error_line(again) == "error: unknown schedule 'acme-images'"


def test_show_tells_one_schedule_whole(migrated: Project) -> None:
    # Before any serve synced the file, the file's definition, saying so.
    early = migrated.json("schedules", "show", "hourly", "--json")
    assert (early["synced"], early["version"], early["source"]) == (False, None, "yaml")
    assert early["defined_at"].endswith("schedules.yaml:3") and early["last"] is None
    assert "not synced yet" in migrated.ok("schedules", "show", "hourly").stdout
    migrated.ok("serve", "--once", "--no-worker")  # a scheduler's load syncs the file
    migrated.ok("schedules", "pause", "hourly", "--reason", "maintenance")
    shown = migrated.json("schedules", "show", "hourly", "--json")
    assert (shown["synced"], shown["version"], shown["defined_at"]) == (True, 2, "schedules.yaml:3")
    assert shown["paused"] is True and shown["pause_reason"] == "maintenance"
    assert len(shown["next_fire_times"]) == 3 and all(
        t.endswith(":00.000Z") for t in shown["next_fire_times"]
    )
    text = migrated.ok("schedules", "show", "hourly").stdout
    assert "schedules.yaml:3, version 2" in text and ": maintenance" in text
    assert "recorded as paused while it is paused" in text
    # An API schedule: every field of its definition, as given.
    migrated.ok(
        "schedules", "create", "acme-images", "--cron", "0 6 * * *", "--job", "echo-image",
        "--input", '{"filename": "acme.png"}', "--label", "customer=acme", "--timeout", "1h",
        "--retry", "max_attempts=5", "--jitter", "30s",
    )  # fmt: skip
    api = migrated.json("schedules", "show", "acme-images", "--json")
    assert (api["source"], api["version"], api["defined_at"]) == ("api", 1, "the API")
    definition = api["definition"]
    assert (definition["timeout"], definition["jitter"], definition["retry"]["max_attempts"]) == (
        "1h",
        "30s",
        5,
    )
    assert definition["input"] == {"filename": "acme.png"} and definition["labels"] == {"customer": "acme"}
    lines = dict(
        line.split(None, 1)
        for line in migrated.ok("schedules", "show", "acme-images").stdout.splitlines()[2:]
    )
    assert lines["defined"].startswith("the API, version 1 (since ")
    assert (lines["labels"], lines["timeout"]) == ("customer=acme", "1h")
    assert "max_attempts=5" in lines["retry"] and lines["state"] == "active" and lines["last"] == "-"
    # A name nobody defined: one line, exit 2.
    missing = migrated.run("schedules", "show", "nope")
    assert missing.exit_code == 2 and error_line(missing).startswith("error: unknown schedule 'nope'")


def test_bad_input_is_one_line_naming_the_field(migrated: Project) -> None:
    cases = {
        ("--cron", "0 25 * * *", "--job", "plain"): "cron: invalid cron expression",
        ("--cron", "0 * * * *", "--job", "nope"): "job: unknown job 'nope'",
        (
            "--cron",
            "0 * * * *",
            "--job",
            "echo-image",
            "--input",
            '{"size": 2}',
        ): "input.filename: is required",
        ("--cron", "0 * * * *", "--job", "plain", "--input", "[1"): "input: not valid JSON",
        ("--cron", "0 * * * *", "--job", "plain", "--jitter", "soon"): "jitter: ",
        ("--cron", "0 * * * *", "--job", "plain", "--label", "nokey"): "label: expected KEY=VALUE",
        ("--cron", "0 * * * *", "--job", "plain", "--timezone", "Mars/Base"): "timezone: unknown time zone",
    }
    for options, expected in cases.items():
        result = migrated.run("schedules", "create", "x", *options)
        assert result.exit_code == 2, (options, result.stdout)
        assert expected in error_line(result), (options, result.stderr)
    assert migrated.run("schedules", "versions", "x").exit_code == 2  # nothing was written


def test_a_yaml_schedule_cannot_be_redefined_but_can_be_operated(migrated: Project) -> None:
    migrated.ok("serve", "--once", "--no-worker")  # a scheduler's load syncs the file
    synced = migrated.json("schedules", "versions", "hourly", "--json")
    assert [(v["version"], v["op"], v["source"]) for v in synced] == [(1, "sync", "yaml")]
    refused = migrated.run("schedules", "update", "hourly", "--cron", "5 * * * *")
    assert refused.exit_code == 2
    assert "is defined in schedules.yaml:3: change it there" in error_line(refused)
    taken = migrated.run("schedules", "create", "hourly", "--cron", "5 * * * *", "--job", "plain")
    assert taken.exit_code == 2 and "already exists (a yaml schedule" in error_line(taken)
    migrated.ok("schedules", "pause", "hourly", "--reason", "maintenance")  # operating it is allowed
    ops = [(v["op"], v["note"]) for v in migrated.json("schedules", "versions", "hourly", "--json")]
    assert ops == [("sync", None), ("pause", "maintenance")]


def test_list_filters_and_pages_the_database(migrated: Project) -> None:
    for i in range(5):
        migrated.ok("schedules", "create", f"c-{i}", "--cron", "0 1 * * *", "--job", "plain",
                    "--label", f"tier={'gold' if i % 2 else 'free'}")  # fmt: skip
    first = migrated.run("schedules", "list", "--source", "api", "--limit", "2", "--json")
    assert [item["name"] for item in json.loads(first.stdout)] == ["c-0", "c-1"]
    cursor = first.stderr.split("next cursor: ")[1].split()[0]
    second = migrated.json(
        "schedules", "list", "--source", "api", "--limit", "2", "--cursor", cursor, "--json"
    )
    assert [item["name"] for item in second] == ["c-2", "c-3"]
    gold = migrated.json("schedules", "list", "--label", "tier=gold", "--json")
    assert [(item["name"], item["source"]) for item in gold] == [("c-1", "api"), ("c-3", "api")]
    assert [
        item["name"] for item in migrated.json("schedules", "list", "--job", "echo-image", "--json")
    ] == []
    # Without filters: the file's schedules, then the API schedules.
    everything = [item["name"] for item in migrated.json("schedules", "list", "--json")]
    assert everything == ["hourly", "images", "c-0", "c-1", "c-2", "c-3", "c-4"]


def test_an_api_schedule_is_operated_like_a_file_s(migrated: Project) -> None:
    migrated.ok("schedules", "create", "api-one", "--cron", "0 1 * * *", "--job", "plain")
    paused = migrated.ok("schedules", "pause", "api-one", "--reason", "quiet week")
    assert paused.stdout.startswith("schedule 'api-one' paused ")
    migrated.ok("schedules", "resume", "api-one")
    fired = migrated.ok("trigger", "--schedule", "api-one", "--at", "2026-01-05T01:00:00Z")
    assert "schedule:api-one:2026-01-05T01:00:00Z" in fired.stdout
    history = migrated.json("schedules", "history", "api-one", "--json")
    assert [(r["fire_time"], r["outcome"]) for r in history] == [("2026-01-05T01:00:00.000Z", "triggered")]
    upcoming = migrated.json("schedules", "next", "api-one", "--count", "2", "--json")
    assert [item["fire_time"][11:] for item in upcoming] == ["01:00:00.000Z", "01:00:00.000Z"]
    ops = [v["op"] for v in migrated.json("schedules", "versions", "api-one", "--json")]
    assert ops == ["create", "pause", "resume"]
    # A manual trigger and a backfill record the schedule's version, as the scheduler's fires do.
    migrated.ok(
        "schedules", "backfill", "api-one", "--from", "2026-01-06T00:00:00Z", "--to", "2026-01-07T00:00:00Z"
    )
    runs = migrated.json("runs", "list", "--schedule", "api-one", "--json")
    assert len(runs) == 2
    for run in runs:
        assert migrated.json("runs", "show", run["id"], "--json")["schedule_version"] == 3


def test_a_file_entry_with_an_api_schedule_s_name_is_an_error_of_the_file(migrated: Project) -> None:
    migrated.ok("schedules", "create", "taken", "--cron", "0 1 * * *", "--job", "plain")
    migrated.write("schedules.yaml", 'schedules:\n  hourly:\n    cron: "0 * * * *"\n    job: plain\n'
                   '  taken:\n    cron: "5 * * * *"\n    job: plain\n')  # fmt: skip
    refused = migrated.run("serve", "--once", "--no-worker")
    assert refused.exit_code == 2
    line = refused.stderr.strip().splitlines()[-1]  # after serve's start lines
    assert "schedules.yaml:5: schedule 'taken': " in line and "API schedule" in line, line
    kept = migrated.json("schedules", "versions", "taken", "--json")
    assert [(v["op"], v["definition"]["cron"]) for v in kept] == [("create", "0 1 * * *")]
    assert migrated.run("schedules", "versions", "hourly").exit_code == 2  # nothing of the file synced
