"""bench/: the summary, the two-backend table and the chart, from child results of the shape the
benchmark programs emit. A full run takes twenty minutes; a crash in the report at its end, or a
row quietly missing, must be caught here instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.run import summarize


def rate(value: float, count: int = 1000) -> dict[str, float]:
    return {"count": count, "seconds": count / value, "rate": value, "cpu_seconds": count / value / 2}


def child(side: str, backend: str, scale: float, *, full: bool = True, sync: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend, "steps_one_run": rate(1000 * scale)}
    if sync:
        out["steps_one_run_sync"] = rate(900 * scale)
    if backend == "postgres":
        out["synchronous_commit"] = "on"
        out["server"] = {"fsync": "on", "wal_sync_method": "fdatasync", "synchronous_commit": "on"}
        if side == "dbos":
            out["connections"] = ["synchronous_commit=on"]
    else:
        out["journal_mode"], out["synchronous"] = "WAL", "NORMAL"
        if side == "dbos":
            out["connections"] = ["journal_mode=WAL synchronous=NORMAL"]
    if not full:
        return out
    out.update(
        {
            "steps_parallel": rate(5000 * scale),
            "runs_per_s": rate(800 * scale),
            "sequential_runs_per_s": rate(400 * scale),
            "latency_ms": {"p50": 2.0 / scale, "p99": 5.0 / scale},
        }
    )
    if side == "durably":
        out["runs_per_s_batch"] = rate(900 * scale)
    else:
        out["runs_per_s_direct"] = rate(700 * scale)
        out["latency_ms_direct"] = {"p50": 2.5 / scale, "p99": 6.0 / scale}
    return out


def commit_ref(rate_: float) -> dict[str, Any]:
    return {
        "commits": rate(rate_),
        "round_trips": {"us_each": 120.0, "rate": 8000.0},
        "server": {
            "server_version": "15",
            "synchronous_commit": "on",
            "fsync": "on",
            "wal_sync_method": "fdatasync",
        },
    }


def results_for(raw: dict[str, Any]) -> dict[str, Any]:
    results = {
        "generated_at": "2030-01-01T00:00:00Z",
        "mode": "quick",
        "command": "python -m bench.run --quick",
        "note": "",
        "duration_seconds": 1.0,
        "machine": {
            "cpu_model": "test",
            "cores": 2,
            "ram_gb": 1,
            "kernel": "x",
            "python": "3",
            "sqlite": "3",
            "load_average_at_start": [0.0, 0.0, 0.0],
            "load_average_at_end": [0.0, 0.0, 0.0],
            "packages": {"durably-sched": "0", "dbos": "3.4.0"},
        },
        "durability": report.durability(raw),
        "repetitions": {"benchmarks_1_4": 3, "benchmarks_1_4_postgres": 3, "benchmarks_5_7": 1},
        "summary": summarize(raw),
        "raw": raw,
    }
    results["metrics"] = report.metrics(results)
    return results


def by_id(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in results["metrics"]}


def test_both_backends_and_the_sync_variant_get_rows_with_their_targets() -> None:
    raw = {
        "core": {
            "normal": {
                "durably": [child("durably", "sqlite", s) for s in (20, 22, 21)],
                "dbos": [child("dbos", "sqlite", 1) for _ in range(3)],
            }
        },
        "core_pg": {
            "durably": [child("durably", "postgres", s, sync=False) for s in (3.0, 3.6, 3.3)],
            "dbos": [child("dbos", "postgres", 0.3, sync=False) for _ in range(3)],
            "commit": [commit_ref(r) for r in (4000, 5000, 6000)],
        },
    }
    results = results_for(raw)
    m = by_id(results)
    # medians of the repetitions, ratios against the same benchmark of the other library
    assert m["steps_one_run_normal"]["durably"] == 21_000 and m["steps_one_run_normal"]["ratio"] == 21
    assert m["steps_one_run_sync_normal"]["dbos"] == 900 and m["steps_one_run_sync_normal"]["pass"] is True
    # PostgreSQL: the same benchmarks, its own targets, and the server's commit rate as reference
    assert m["steps_one_run_postgres"]["durably"] == 3300
    assert m["steps_one_run_postgres"]["ratio"] == pytest.approx(11.0)
    assert m["steps_share_of_commits_postgres"]["durably"] == pytest.approx(66.0)
    assert m["steps_share_of_commits_postgres"]["pass"] is False  # 66 % < 70 %
    assert m["steps_one_run_postgres"]["pass"] is False  # needs both: 10 times DBOS and 70 %
    assert m["sequential_runs_postgres"]["durably"] == 1320 and m["sequential_runs_postgres"]["pass"] is True
    assert m["latency_p50_postgres"]["pass"] is True  # median 2 / 3.3 = 0.61 ms ≤ 1 ms
    assert m["pg_commits"]["durably"] == 5000
    assert "steps_one_run_sync_postgres" not in m  # the sync variant runs on SQLite only
    text = report.markdown(results)
    assert "| 1. Checkpointed no-op steps/s, one run [PostgreSQL] | 3,300 steps/s | 300 steps/s |" in text
    assert "| 1s. Sync no-op steps/s (plain def), one run [NORMAL] |" in text
    assert "- PostgreSQL: durably-sched synchronous_commit=on" in text
    assert "commits 5,000 one-row INSERTs/s" in text


def test_latency_target_is_one_millisecond_on_postgres_and_two_on_sqlite() -> None:
    d = summarize(
        {
            "core": {
                "normal": {"durably": [child("durably", "sqlite", 1.5)], "dbos": [child("dbos", "sqlite", 1)]}
            },
            "core_pg": {
                "durably": [child("durably", "postgres", 1.5, sync=False)],
                "dbos": [child("dbos", "postgres", 1, sync=False)],
                "commit": [commit_ref(5000)],
            },
        }
    )
    sqlite = {
        m["id"]: m
        for m in report.core_metrics("normal", d["core"]["normal"]["durably"], d["core"]["normal"]["dbos"])
    }
    pg = {
        m["id"]: m
        for m in report.core_metrics(
            "postgres", d["core"]["postgres"]["durably"], d["core"]["postgres"]["dbos"], 5000
        )
    }
    # 2 / 1.5 = 1.33 ms: within SQLite's 2 ms, not PostgreSQL's 1 ms
    assert sqlite["latency_p50_normal"]["pass"] is True
    assert pg["latency_p50_postgres"]["pass"] is False


def test_a_sync_only_run_and_a_skipped_postgres_still_make_a_table_and_a_chart(tmp_path: Path) -> None:
    raw = {
        "core": {
            "full": {
                "durably": [child("durably", "sqlite", 12, full=False)],
                "dbos": [child("dbos", "sqlite", 1, full=False)],
            }
        },
        "core_pg": {"skipped": "PostgreSQL at postgresql://x is not reachable: refused"},
    }
    results = results_for(raw)
    ids = [m["id"] for m in results["metrics"]]
    assert ids == ["steps_one_run_full", "steps_one_run_sync_full"]
    text = report.markdown(results)
    skipped = f"Benchmarks 1{report.DASH}4 on PostgreSQL: skipped {report.DASH} PostgreSQL at postgresql://x"
    assert skipped in text
    pytest.importorskip("matplotlib")
    report.chart(results, tmp_path / "chart.png")  # panels without figures say so instead of failing
    assert (tmp_path / "chart.png").stat().st_size > 10_000


def test_the_chart_draws_both_backends(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    raw = {
        "core": {
            "full": {"durably": [child("durably", "sqlite", 10)], "dbos": [child("dbos", "sqlite", 1)]},
            "normal": {"durably": [child("durably", "sqlite", 20)], "dbos": [child("dbos", "sqlite", 1)]},
        },
        "core_pg": {
            "durably": [child("durably", "postgres", 3, sync=False)],
            "dbos": [child("dbos", "postgres", 0.3, sync=False)],
            "commit": [commit_ref(5000)],
        },
    }
    path = tmp_path / "chart.png"
    report.chart(results_for(raw), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


def test_the_stream_benchmark_is_judged_on_the_dashboard_serve_and_shows_the_serve_beside_it() -> None:
    def figures(step_ms: float, drop: float) -> dict[str, Any]:
        return {"runs": 50, "step_ms": step_ms, "drop_percent": drop, "rounds": {"with": [], "without": []}}

    web = {
        "sse": {"step_ms_0": figures(0.0, 20.3), "step_ms_5": figures(5.0, 16.3)},
        "sse_dashboard": {"step_ms_0": figures(0.0, -1.3), "step_ms_5": figures(5.0, 12.0)},
        "lists": {
            "history": 1000,
            **{page: {"p99_ms": 2.0} for page in ("first_page", "job_and_status", "label", "next_page")},
        },
    }
    m = by_id(results_for({"web": [web]}))
    assert m["web_sse_drop_step_ms_0"]["durably"] == 20.3 and m["web_sse_drop_step_ms_0"]["pass"] is None
    assert m["web_sse_dashboard_drop_step_ms_0"]["pass"] is True
    assert m["web_sse_dashboard_drop_step_ms_5"]["pass"] is False  # 12 % > 10 %
    assert "from a dashboard serve" in m["web_sse_dashboard_drop_step_ms_0"]["name"]
    assert "rounds" not in summarize({"web": [web]})["web"]["sse_dashboard"]["step_ms_0"]
