"""Callbacks a store keeps for wake-ups from other processes (a schedule changed, a run's
transition written): kept in the store object's ``__dict__`` under a name of their own, so a store
class needs no ``__init__`` for them."""

from __future__ import annotations

from collections.abc import Callable


def keep_callback(owner: object, slot: str, callback: Callable[[], None], add: bool) -> None:
    """Add ``callback`` to ``owner``'s list ``slot`` (or remove it, when ``add`` is false)."""
    callbacks: list[Callable[[], None]] = owner.__dict__.setdefault(slot, [])
    if add:
        callbacks.append(callback)
    elif callback in callbacks:
        callbacks.remove(callback)


def call_callbacks(owner: object, slot: str) -> None:
    """Run each callback of ``owner``'s list ``slot`` (on a copy: a callback may remove itself)."""
    for callback in list(owner.__dict__.get(slot, [])):
        callback()
