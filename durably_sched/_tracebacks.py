"""Errors as an operator reads them: one line for lists, the traceback for the person fixing it.

``error_line`` is what a run's ``error`` holds (``ValueError: not a binary PPM image``);
``format_traceback`` is the full chained traceback, stored (bounded) next to it; and
``user_frame`` finds, in a stored traceback, the innermost frame of the user's own code
(``jobs/images.py:42 in load``) for ``trigger --wait`` and ``runs show``. It works on the text, so it
reads tracebacks written on any host: frames in durably-sched itself, the standard library and
installed packages are skipped; when nothing else is left, the innermost frame outside durably-sched
and the standard library is taken.
"""

from __future__ import annotations

import os
import re
import traceback

from ._bounds import clean_text

__all__ = ["ERROR_LIMIT", "error_line", "format_traceback", "user_frame"]

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
_STDLIB = re.compile(r"[/\\]lib[/\\](?:python|pypy)\d+(?:\.\d+)?[/\\](?!site-packages|dist-packages)")
_PACKAGES = re.compile(r"[/\\](?:site|dist)-packages[/\\]")
_OURS = re.compile(r"[/\\]durably_sched[/\\]")


ERROR_LIMIT = 4 * 1024
"""Characters of a one-line error kept on a run and on each of its attempts (the traceback, cut
to its own limit, has the rest)."""


def error_line(exc: BaseException) -> str:
    """``Type: message`` on one line (a message's line breaks become spaces), at most
    :data:`ERROR_LIMIT` characters, lone surrogates replaced (U+FFFD) so that it can be stored."""
    try:
        text = " ".join(str(exc).split())
    except Exception:  # a broken __str__: still say what it was
        text = "(its message could not be formatted)"
    name = type(exc).__name__
    line = clean_text(f"{name}: {text}" if text else name)
    if len(line) <= ERROR_LIMIT:
        return line
    note = f" [... {len(line) - ERROR_LIMIT} characters cut]"
    return line[: ERROR_LIMIT - len(note)] + note


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def format_traceback(exc: BaseException) -> str:
    """The exception's formatted traceback, with its causes and contexts, as Python prints it --
    without the frames of durably-sched itself (the worker, ``step.run``, the step threads), which
    say nothing about the failure; a line counts them. The innermost frame is always kept (where it
    was raised), and a traceback of durably-sched's own frames only (an error of the library
    itself) is kept whole."""
    try:
        shown = traceback.TracebackException.from_exception(exc)
        _hide_own_frames(shown, set())
        return clean_text("".join(shown.format()))
    except Exception:  # a broken __str__ or a cycle: still say what it was
        return f"{type(exc).__name__} (its traceback could not be formatted)\n"


def _hide_own_frames(shown: traceback.TracebackException, seen: set[int]) -> None:
    if id(shown) in seen:
        return
    seen.add(id(shown))
    frames = list(shown.stack)
    # The innermost frame stays whoever's it is: where the exception was raised (a bug of ours).
    kept = [frame for frame in frames[:-1] if not frame.filename.startswith(_PACKAGE_DIR)] + frames[-1:]
    if len(kept) < len(frames) and any(not f.filename.startswith(_PACKAGE_DIR) for f in kept):
        hidden = len(frames) - len(kept)
        shown.stack = traceback.StackSummary.from_list(kept)
        note = f"({hidden} frame{'s' if hidden != 1 else ''} of durably-sched not shown)"
        shown.__notes__ = [*(shown.__notes__ or []), note]
    for linked in (shown.__cause__, shown.__context__, *(shown.exceptions or [])):
        if linked is not None:
            _hide_own_frames(linked, seen)


def _frames(text: str) -> list[tuple[str, int, str]]:
    # The last "Traceback" block is the exception that was raised last (the one in `error`).
    start = text.rfind("Traceback (most recent call last):")
    frames = []
    for line in text[max(start, 0) :].splitlines():
        match = _FRAME.match(line)
        if match:
            frames.append((match["file"], int(match["line"]), match["func"].strip()))
    return frames


def user_frame(text: str | None) -> str | None:
    """``path/to/file.py:42 in func``: the innermost frame of the user's code in a traceback."""
    if not text:
        return None
    frames = _frames(text)
    for strict in (True, False):
        for file, line, func in reversed(frames):
            if file.startswith("<") or _OURS.search(file) or _STDLIB.search(file):
                continue
            if strict and _PACKAGES.search(file):
                continue
            return f"{file}:{line} in {func}"
    return None
