"""``nightly-report``: count the lines and bytes of the files in the data directory, write a report.

Scheduled runs carry the label ``scheduled_for`` (the fire time in UTC); the report is named after
it, so a re-run of the same fire time rewrites the same file instead of adding one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from durably_sched import Step, define_job

from ._data import data_dir, write_atomically

SCANNED = ("inbox", "public")


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not a silent default

    folders: list[str] = Field(default_factory=lambda: list(SCANNED))


class ReportOut(BaseModel):
    report: str
    files: int
    lines: int
    bytes: int


def scan(folders: list[str]) -> list[str]:
    found: list[str] = []
    for folder in folders:
        found.extend(str(p) for p in sorted(data_dir(folder).iterdir()) if p.is_file())
    return found


def count(paths: list[str]) -> list[dict[str, object]]:
    counted = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:  # removed since the scan
            continue
        counted.append({"path": path, "bytes": len(data), "lines": data.count(b"\n")})
    return counted


def write_report(name: str, counted: list[dict[str, object]]) -> str:
    target = data_dir("reports") / f"report-{name}.json"
    body = {
        "generated_for": name,
        "files": counted,
        "total_bytes": sum(int(str(c["bytes"])) for c in counted),
        "total_lines": sum(int(str(c["lines"])) for c in counted),
    }
    write_atomically(target, (json.dumps(body, indent=2) + "\n").encode())
    return str(target)


async def nightly_report(step: Step, payload: ReportIn) -> ReportOut:
    name = step.labels.get("scheduled_for") or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    name = name.replace(":", "")
    paths = await step.run("scan", lambda: scan(payload.folders))
    await step.progress(1, 3, f"{len(paths)} files")
    counted = await step.run("count", lambda: count(paths))
    await step.progress(2, 3, "counted")
    report = await step.run("write", lambda: write_report(name, counted))
    await step.progress(3, 3, "written")
    total_bytes = sum(c["bytes"] for c in counted)
    total_lines = sum(c["lines"] for c in counted)
    step.log.info("report written", report=report, files=len(counted), bytes=total_bytes)
    return ReportOut(report=report, files=len(counted), lines=total_lines, bytes=total_bytes)


nightly_report_job = define_job(
    name="nightly-report",
    input=ReportIn,
    output=ReportOut,
    run=nightly_report,
    description="Count lines and bytes of the example data and write a JSON report.",
)
