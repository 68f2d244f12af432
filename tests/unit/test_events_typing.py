"""``on(event_type, listener)`` is typed per event type: each overload pairs an event type with the
event class the emitter hands its listeners, for every type events.py defines (mypy then refuses a
listener of another class). Checked against the event classes themselves."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from durably_sched import InvalidArgumentError, events
from durably_sched.events import EVENT_TYPES, Event, EventEmitter, Listens


def _overloads() -> dict[str, type[Event]]:
    pairs: dict[str, type[Event]] = {}
    for item in typing.get_overloads(Listens.on):
        hints = typing.get_type_hints(item, vars(events))
        (event_type,) = typing.get_args(hints["event_type"])
        (event_class,), _ = typing.get_args(hints["listener"])
        pairs[event_type] = event_class
    return pairs


def test_every_event_type_has_an_overload_with_its_own_class() -> None:
    pairs = _overloads()
    assert set(pairs) == {*EVENT_TYPES, "*"}
    assert pairs["*"] is Event
    for event_type in EVENT_TYPES:
        defaults = {f.name: f.default for f in dataclasses.fields(pairs[event_type])}
        assert defaults["type"] == event_type, event_type


def test_a_listener_gets_the_class_its_overload_names() -> None:
    emitter = EventEmitter()
    got: list[Event] = []
    off = emitter.on("schedule:pause", got.append)
    event_class = _overloads()["schedule:pause"]
    emitter.emit(event_class(schedule="nightly"))
    off()
    emitter.emit(event_class(schedule="nightly"))
    assert [type(e) for e in got] == [event_class]


def test_an_unknown_event_type_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown event type 'run:nope'"):
        EventEmitter().on("run:nope", print)
