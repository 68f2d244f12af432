"""``durably-sched events send``: wake the runs waiting for an event (``step.wait_for_event``)."""

from __future__ import annotations

import json
from typing import Any

import click

from ._base import CliError, CliGroup, open_durably, settings
from ._output import echo_json


@click.group("events", cls=CliGroup)
def events() -> None:
    """Send events to runs waiting for them (``step.wait_for_event``).

    \b
    Examples:
      durably-sched events send approve:2026-12-06
      durably-sched events send approve:2026-12-06 --data '{"by": "ann"}'
    """


@events.command(
    "send",
    epilog="""\b
Examples:
  durably-sched events send approve:2026-12-06
  durably-sched events send approve:2026-12-06 --data '{"by": "ann"}' --json

\b
The event is stored and every run waiting for KEY is woken in one transaction;
each run receives an event once. An event nobody waits for yet is kept: a run
created before it was sent receives it when it reaches its wait for KEY.
Prints how many runs it woke (0: none waited).""",
)
@click.argument("key")
@click.option("--data", "data_text", metavar="JSON", help="The event's data, as JSON (default: null).")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON object.")
async def send(key: str, data_text: str | None, json_mode: bool) -> None:
    """Send the event KEY (with --data) to the runs waiting for it."""
    data = _data(data_text)
    async with open_durably(settings().database) as durably:
        woken = await durably.send_event(key, data)
    if json_mode:
        echo_json({"key": key, "woken": woken})
        return
    click.echo(f"event {key}: woke {woken} run{'' if woken == 1 else 's'}")


def _data(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--data: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
