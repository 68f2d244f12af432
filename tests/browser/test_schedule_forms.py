"""The schedule forms of the dashboard in a real headless Chromium against a real `serve --http`:
an operator creates a schedule from the job's input form (the fields of its schema), sees it fire
without a restart, edits its cron and input, reads the versions (what changed, who, why), rolls
back, deletes it with a note, and finds it with the Schedules page's search.

Needs Debian's chromium and the ``playwright`` package (see test_dashboard.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_dashboard import TOKEN, browser, served, shot

pytestmark = pytest.mark.system
__all__ = ["browser", "served"]  # the module's fixtures: one serve --http and one Chromium

NOTES = iter(["too often at first", "not needed any more"])


def answer(dialog: Any) -> None:
    dialog.accept(next(NOTES, "") if dialog.type == "prompt" else "")


def login(page: Any, base: str) -> None:
    page.goto(base + "/")
    if "/login" in page.url:
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")


def test_create_edit_versions_rollback_delete(served: tuple[str, Path], browser: Any) -> None:
    base, work = served
    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.on("dialog", answer)
    login(page, base)

    # Create: the job's input fields come from its schema (many-steps: count, step_seconds).
    page.click("text=New schedule")
    page.wait_for_url(base + "/new-schedule")
    form = page.locator("form[data-schedule-form]")
    form.locator('input[name="name"]').fill("browser-made")
    form.locator('select[name="job"]').select_option("many-steps")
    fieldset = form.locator('fieldset[data-job-input="many-steps"]')
    assert fieldset.is_visible()
    assert fieldset.locator('input[name="input.count"]').input_value() == "20"  # the schema's default
    fieldset.locator('input[name="input.count"]').fill("2")
    form.locator('input[name="cron"]').fill("* * * * * *")
    form.locator('input[name="note"]').fill("made in the browser")
    shot(page, work, "schedule-new")
    form.locator("button[type=submit]").click()
    page.wait_for_url(base + "/schedules/browser-made")
    assert "source api" in page.locator("[data-source]").inner_text()
    # It fires without a restart: its history gets fire times (the page refreshes itself).
    page.locator("table.history tbody tr").first.wait_for()

    # Edit: the form holds the current definition; change the cron and the input.
    page.click("text=Edit…")
    page.wait_for_url(base + "/schedules/browser-made/edit")
    form = page.locator("form[data-schedule-form]")
    assert form.locator('input[name="cron"]').input_value() == "* * * * * *"
    assert form.locator('input[name="input.count"]').input_value() == "2"
    form.locator('input[name="cron"]').fill("*/10 * * * * *")
    form.locator('input[name="input.count"]').fill("3")
    form.locator('input[name="note"]').fill("every 10 seconds is enough")
    shot(page, work, "schedule-edit")
    form.locator("button[type=submit]").click()
    page.wait_for_url(base + "/schedules/browser-made")

    # Versions: newest first, with what changed, who and why.
    rows = page.locator("table.versions tbody tr")
    assert rows.count() == 2
    newest = rows.nth(0)
    assert newest.get_attribute("data-version") == "2"
    changed = newest.locator('[data-field="changed"]').inner_text()
    assert "cron" in changed and "input" in changed and "*/10 * * * * *" in changed
    assert "every 10 seconds is enough" in newest.inner_text() and "http:127.0.0.1" in newest.inner_text()
    assert "new" in rows.nth(1).locator('[data-field="changed"]').inner_text()
    shot(page, work, "schedule-versions")

    # Roll back to version 1 (a prompt for the note): a third version with version 1's cron.
    rows.nth(1).locator('button[data-action="rollback-schedule"]').click()
    page.locator('table.versions tbody tr[data-version="3"]').wait_for()
    third = page.locator('table.versions tbody tr[data-version="3"]').inner_text()
    assert "rollback" in third and "too often at first" in third
    assert "* * * * * *" in page.locator("dl.facts").inner_text()

    # Search on the Schedules page finds it by part of its name; the file's schedules are not listed.
    page.goto(base + "/?q=browser-m")
    names = [r.get_attribute("data-schedule") for r in page.locator("table.schedules tbody tr").all()]
    assert names == ["browser-made"]
    assert page.locator('tr[data-schedule="browser-made"] [data-field="source"]').inner_text() == "api"

    # Delete with a note: back to the Schedules page, gone from it; its versions keep the delete.
    page.goto(base + "/schedules/browser-made")
    page.click('button[data-action="delete-schedule"]')
    page.wait_for_url(base + "/")
    assert page.locator('tr[data-schedule="browser-made"]').count() == 0
    page.goto(base + "/api/schedules/browser-made/versions")
    versions = json.loads(page.locator("pre").inner_text())["versions"]
    assert (versions[-1]["op"], versions[-1]["note"]) == ("delete", "not needed any more")
