"""A built wheel carries what the package needs at run time besides its Python code: the schema
migrations, the dashboard's templates and its static JavaScript and CSS (no build step, no CDN)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .serve_procs import ROOT

pytestmark = pytest.mark.system


def test_the_wheel_contains_templates_static_files_and_migrations(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("durably_sched-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    source = ROOT / "durably_sched"
    expected = {
        str(path.relative_to(ROOT))
        for pattern in ("web/templates/*.html", "web/static/*", "store/migrations/*/*.sql")
        for path in source.glob(pattern)
    }
    assert {"durably_sched/web/static/app.js", "durably_sched/web/templates/base.html"} <= expected
    assert expected <= names, sorted(expected - names)
    page = zipfile.ZipFile(wheel).read("durably_sched/web/static/app.js").decode()
    assert (
        "EventSource" in page and "http://" not in page and "https://" not in page
    )  # nothing fetched from elsewhere
