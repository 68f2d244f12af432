"""Where the example jobs read and write: ``$DURABLY_EXAMPLE_DATA`` (default ``./example-data``)."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir(*parts: str) -> Path:
    """A folder under the data directory, created on first use."""
    folder = Path(os.environ.get("DURABLY_EXAMPLE_DATA", "example-data")).joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` so that a crash leaves the old file or the new one, never half of it.

    A step may run again after a crash (it is checkpointed only once it returns), so its side
    effects are written to be repeatable: the same input gives the same file.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    os.replace(partial, path)
