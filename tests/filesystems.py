"""Real filesystem conditions for store-error tests: a small disk that fills up, a read-only tree.

Both need root (``mount -t tmpfs``, ``chattr +i``); where that is not possible the tests that use
them are skipped with the reason (the SQLite size limit, ``PRAGMA max_page_count``, still tests
"disk full" everywhere).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(where: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the block (skips when mounting is not allowed)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, name: str = "filler.bin") -> Path:
    """Write a file until the disk has no space left; returns it (delete it to free the space)."""
    path = disk / name
    chunk = os.urandom(64 * 1024)
    # Unbuffered: a write the disk refuses leaves nothing behind for close() to flush (a buffered
    # file would raise ENOSPC again from close, depending on how the free space falls).
    with open(path, "ab", buffering=0) as fh:
        while True:
            try:
                fh.write(chunk)
            except OSError:
                break
    with contextlib.suppress(OSError):
        # Whatever a page still fits: the last bytes too.
        with open(path, "ab", buffering=0) as fh:
            for _ in range(64):
                fh.write(b"\0" * 1024)
    return path


@contextlib.contextmanager
def read_only_tree(path: Path) -> Iterator[None]:
    """The directory and its files cannot be written, even by root (``chattr +i``), in the block.

    Only for files no process has open: SQLite maps the -shm file, and an immutable mapped file
    cannot be written through its mapping.
    """
    targets = [str(p) for p in (path, *path.iterdir())]
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", *targets], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not supported here (root writes anywhere otherwise)")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", *targets], check=True)
    else:
        for target in targets:
            os.chmod(target, 0o555 if target == str(path) else 0o444)
        try:
            yield
        finally:
            for target in targets:
                os.chmod(target, 0o755 if target == str(path) else 0o644)
