"""Run the benchmark suite and write bench/results.json, bench/RESULTS.md and bench/results.png.

    python -m bench.run --quick      # about 3 minutes
    python -m bench.run              # the full suite, about 15 minutes

Every measurement runs in a fresh child process (see bench/_util.py:run_child); durably-sched and
DBOS alternate, repetition by repetition, so slow drift in machine load hits both sides alike.
Figures are medians over the repetitions. See bench/README.md for what each benchmark does.

Benchmarks (``--only``): ``core`` (1-4 and 1s on SQLite), ``sync`` (1 and 1s on SQLite alone),
``core-pg`` (1-4 on PostgreSQL, and the server's one-row-commit rate), ``punctuality``, ``claim``,
``idle``, ``postgres`` (8: several worker processes), ``failures`` (9: kill -9 to resumed step with
an immediate restart; steps/s and runs/s with retries configured or not), ``claim-backlog`` (11:
claim latency at 10^3..10^5 pending runs, both backends), ``scale`` (12: schedules x serves,
bench/scale.py; its matrix takes about 15 minutes in either mode).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import report, scale_suite
from ._pg import default_url
from ._util import machine_info, run_child

HERE = Path(__file__).resolve().parent

SIZES = {
    "quick": {
        "durably": ["--steps", "2000", "--parallel-steps", "100", "--runs", "1000", "--latency", "300"],
        "dbos": ["--steps", "500", "--parallel-steps", "10", "--runs", "300", "--latency", "100"],
        "reps_core": 3,
        "reps_other": 1,
        "punctuality": ["--period", "60", "--duration", "20"],
        "claim": ["--repeats", "100"],
        "claim_backlog": ["--repeats", "100"],
        "idle": ["--warmup", "5", "--window", "20"],
        "postgres": ["--runs", "2000", "--rounds", "1", "--latency", "50"],
        "sync_steps": {"durably": ["--steps", "2000"], "dbos": ["--steps", "500"]},
        "pg_durably": ["--steps", "1000", "--parallel-steps", "20", "--runs", "300", "--latency", "200"],
        "pg_dbos": ["--steps", "200", "--parallel-steps", "4", "--runs", "60", "--latency", "50"],
        "pg_commit": ["--commits", "2000", "--round-trips", "2000"],
        "reps_pg": 3,
        "web": ["--steps", "200", "--reps", "1", "--history", "200000", "--repeats", "100"],
        "failures": ["--rounds", "3", "--steps", "1000", "--runs", "200", "--reps", "3"],
    },
    "full": {
        "durably": ["--steps", "5000", "--parallel-steps", "200", "--runs", "3000", "--latency", "1000"],
        "dbos": ["--steps", "1000", "--parallel-steps", "20", "--runs", "500", "--latency", "300"],
        "reps_core": 5,
        "reps_other": 3,
        "punctuality": ["--period", "60", "--duration", "70"],
        "claim": ["--repeats", "300"],
        "claim_backlog": ["--repeats", "300"],
        "idle": ["--warmup", "10", "--window", "60"],
        "postgres": ["--runs", "5000", "--rounds", "3", "--latency", "200"],
        "sync_steps": {"durably": ["--steps", "5000"], "dbos": ["--steps", "1000"]},
        "pg_durably": ["--steps", "3000", "--parallel-steps", "100", "--runs", "1500", "--latency", "1000"],
        "pg_dbos": ["--steps", "500", "--parallel-steps", "10", "--runs", "300", "--latency", "300"],
        "pg_commit": ["--commits", "5000", "--round-trips", "5000"],
        "reps_pg": 5,
        "web": ["--steps", "300", "--reps", "3", "--history", "1000000", "--repeats", "200"],
        "failures": ["--rounds", "5", "--steps", "3000", "--runs", "500", "--reps", "5"],
    },
}
BENCHMARKS = (
    "core",
    "sync",
    "core-pg",
    "punctuality",
    "claim",
    "claim-backlog",
    "idle",
    "postgres",
    "web",
    "failures",
    "scale",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_core(cfg: dict[str, Any], profiles: list[str], sync_only: bool) -> dict[str, Any]:
    """Benchmarks 1-4 and 1s on SQLite for each durability profile; sides and profiles alternate
    within a repetition. With ``sync_only``, benchmarks 1 and 1s alone."""
    out: dict[str, Any] = {p: {"durably": [], "dbos": []} for p in profiles}
    what = "benchmarks 1 and 1s" if sync_only else "benchmarks 1-4 and 1s"
    for rep in range(cfg["reps_core"]):
        sides = ("durably", "dbos") if rep % 2 == 0 else ("dbos", "durably")
        for profile in profiles:
            for side in sides:
                log(f"{what}, repetition {rep + 1}/{cfg['reps_core']}: {side}, synchronous={profile}")
                module = "bench.durably_side" if side == "durably" else "bench.dbos_side"
                if sync_only:  # benchmark 1's size for both 1 and 1s
                    args = [*cfg["sync_steps"][side], "--benchmarks", "1,1s"]
                else:
                    args = [*cfg[side], "--benchmarks", "1,1s,2,3,4"]
                result = run_child(module, [*args, "--sync", profile], 600 if side == "durably" else 900)
                out[profile][side].append(result)
    return out


def run_core_pg(cfg: dict[str, Any], url: str) -> dict[str, Any]:
    """Benchmarks 1-4 on PostgreSQL, both libraries on the same server, each repetition and side in a
    fresh database; the server's one-row-commit rate is measured in the same rotation."""
    out: dict[str, Any] = {"durably": [], "dbos": [], "commit": []}
    first = run_child("bench.pg_commit", [*cfg["pg_commit"], "--postgres", url], 300)
    if "skipped" in first:
        log(f"PostgreSQL benchmarks skipped: {first['skipped']}")
        return {"skipped": first["skipped"]}
    rotations = (("durably", "dbos", "commit"), ("dbos", "commit", "durably"), ("commit", "durably", "dbos"))
    for rep in range(cfg["reps_pg"]):
        for side in rotations[rep % 3]:
            log(f"benchmarks 1-4 on PostgreSQL, repetition {rep + 1}/{cfg['reps_pg']}: {side}")
            if side == "commit":
                result = (
                    first
                    if rep == 0
                    else run_child("bench.pg_commit", [*cfg["pg_commit"], "--postgres", url], 300)
                )
            elif side == "durably":
                result = run_child("bench.durably_side", [*cfg["pg_durably"], "--postgres", url], 900)
            else:
                result = run_child("bench.dbos_side", [*cfg["pg_dbos"], "--postgres", url], 1200)
            out[side].append(result)
    return out


def run_repeated(name: str, module: str, args: list[str], reps: int, timeout: float) -> list[dict[str, Any]]:
    out = []
    for rep in range(reps):
        log(f"{name}, repetition {rep + 1}/{reps}")
        out.append(run_child(module, args, timeout))
    return out


def summarize_core(core: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for side in ("durably", "dbos"):
        reps = core[side]
        one = {"steps_one_run", "steps_one_run_sync"} & set(reps[0])
        s[side] = {key: med([r[key]["rate"] for r in reps]) for key in one}
        if "steps_one_run" in one:
            s[side]["cpu_us_per_step"] = med(
                [1e6 * r["steps_one_run"]["cpu_seconds"] / r["steps_one_run"]["count"] for r in reps]
            )
        if "steps_one_run_sync" in one:
            s[side]["cpu_us_per_sync_step"] = med(
                [
                    1e6 * r["steps_one_run_sync"]["cpu_seconds"] / r["steps_one_run_sync"]["count"]
                    for r in reps
                ]
            )
        for key in ("journal_mode", "synchronous", "synchronous_commit", "backend"):
            if key in reps[0]:
                s[side][key] = reps[0][key]
        s[side]["connections"] = sorted({c for r in reps for c in r.get("connections", [])})
        if "runs_per_s" not in reps[0]:
            continue
        s[side].update(
            {
                "steps_parallel": med([r["steps_parallel"]["rate"] for r in reps]),
                "runs_per_s": med([r["runs_per_s"]["rate"] for r in reps]),
                "sequential_runs_per_s": med([r["sequential_runs_per_s"]["rate"] for r in reps]),
                "latency_p50_ms": med([r["latency_ms"]["p50"] for r in reps]),
                "latency_p99_ms": med([r["latency_ms"]["p99"] for r in reps]),
            }
        )
    if "runs_per_s" in s["durably"]:
        s["durably"]["runs_per_s_batch"] = med([r["runs_per_s_batch"]["rate"] for r in core["durably"]])
    if "runs_per_s" in s["dbos"]:
        s["dbos"]["runs_per_s_direct"] = med([r["runs_per_s_direct"]["rate"] for r in core["dbos"]])
        s["dbos"]["latency_direct_p50_ms"] = med([r["latency_ms_direct"]["p50"] for r in core["dbos"]])
        s["dbos"]["latency_direct_p99_ms"] = med([r["latency_ms_direct"]["p99"] for r in core["dbos"]])
    return s


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Medians of the repetitions, per metric, in the shape report.py and results.json use."""
    s: dict[str, Any] = {}
    if raw.get("core"):
        s["core"] = {profile: summarize_core(sides) for profile, sides in raw["core"].items()}
    pg = raw.get("core_pg")
    if pg and "skipped" in pg:
        s["core_pg"] = {"skipped": pg["skipped"]}
    elif pg:
        s.setdefault("core", {})["postgres"] = summarize_core(pg)
        s["pg_commit"] = {
            "commits_per_s": med([r["commits"]["rate"] for r in pg["commit"]]),
            "round_trip_us": med([r["round_trips"]["us_each"] for r in pg["commit"]]),
            "server": pg["commit"][0]["server"],
        }
    if raw.get("punctuality"):
        reps = raw["punctuality"]
        s["punctuality"] = {
            "p50_ms": med([r["start_ms"]["p50"] for r in reps]),
            "p99_ms": med([r["start_ms"]["p99"] for r in reps]),
            "max_ms": med([r["start_ms"]["max"] for r in reps]),
            "fire_recorded_p50_ms": med([r["fire_recorded_ms"]["p50"] for r in reps]),
            "fire_recorded_p99_ms": med([r["fire_recorded_ms"]["p99"] for r in reps]),
            "started_runs": sum(r["started_runs"] for r in reps),
            "expected_runs": sum(r["expected_runs"] for r in reps),
            "fires_per_second": reps[0]["fires_per_second"],
        }
    if raw.get("punctuality_stress"):
        reps = raw["punctuality_stress"]
        s["punctuality_stress"] = {
            "p50_ms": med([r["start_ms"]["p50"] for r in reps]),
            "p99_ms": med([r["start_ms"]["p99"] for r in reps]),
            "fire_recorded_p50_ms": med([r["fire_recorded_ms"]["p50"] for r in reps]),
            "fires_per_second": reps[0]["fires_per_second"],
        }
    if raw.get("claim"):
        reps = raw["claim"]
        sizes = [row["history"] for row in reps[0]["sizes"]]
        s["claim"] = {
            "sizes": sizes,
            "claim_ms": [med([r["sizes"][i]["claim_ms_median"] for r in reps]) for i in range(len(sizes))],
            "query_us": [
                med([r["sizes"][i]["candidate_query_us_median"] for r in reps]) for i in range(len(sizes))
            ],
            "plan": reps[0]["sizes"][-1]["candidate_query_plan"],
        }
    if raw.get("claim_backlog"):
        reps = raw["claim_backlog"]
        s["claim_backlog"] = {}
        for backend in ("sqlite", "postgres"):
            if backend not in reps[0]:
                continue
            rows = [r[backend]["sizes"] for r in reps]
            s["claim_backlog"][backend] = [
                {
                    "pending": rows[0][i]["pending"],
                    "claim_1_ms": med([r[i]["claim_1"]["p50_ms"] for r in rows]),
                    "claim_10_ms": med([r[i]["claim_10"]["p50_ms"] for r in rows]),
                }
                for i in range(len(rows[0]))
            ]
    if raw.get("idle"):
        reps = raw["idle"]
        s["idle"] = {
            "rss_mb": med([r["rss_mb_max"] for r in reps]),
            "cpu_percent": med([r["cpu_percent"] for r in reps]),
            "measured": reps[0]["measured"],
        }
    if raw.get("postgres"):
        reps = raw["postgres"]
        if "skipped" in reps[0]:
            s["postgres"] = {"skipped": reps[0]["skipped"]}
        else:
            s["postgres"] = {
                "runs_per_s": med([x for r in reps for x in r["runs_per_s_rounds"]]),
                "p50_ms": med([r["trigger_to_start_ms"]["p50"] for r in reps]),
                "p99_ms": med([r["trigger_to_start_ms"]["p99"] for r in reps]),
                "workers": reps[0]["workers"],
                "server": reps[0]["server"],
            }
    if raw.get("web"):
        web = raw["web"][0]
        s["web"] = {
            where: {
                kind: {k: v for k, v in figures.items() if k != "rounds"}
                for kind, figures in web[where].items()
            }
            for where in ("sse", "sse_dashboard")
            if where in web
        }
        s["web"]["lists"] = web["lists"]
    if raw.get("failures"):
        s["failures"] = summarize_failures(raw["failures"][0])
    if raw.get("scale"):
        s["scale"] = raw["scale"]  # one measurement per size (a minute each): no median
    return s


def summarize_failures(result: dict[str, Any]) -> dict[str, Any]:
    """Benchmark 9 does its own repetitions; keep its medians per backend."""
    out: dict[str, Any] = {}
    for backend, t in (result.get("takeover") or {}).items():
        out.setdefault(backend, {})["takeover_s"] = t["median_s"]
        out[backend]["takeover_max_s"] = t["max_s"]
    for backend, r in (result.get("retries") or {}).items():
        out.setdefault(backend, {}).update(
            {
                "steps_plain": r["plain"]["steps_per_s"],
                "steps_retried": r["retried"]["steps_per_s"],
                "runs_plain": r["plain"]["runs_per_s"],
                "runs_retried": r["retried"]["runs_per_s"],
                "steps_ratio": r["steps_ratio"],
                "runs_ratio": r["runs_ratio"],
            }
        )
    if "postgres_skipped" in result:
        out["postgres_skipped"] = result["postgres_skipped"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument(
        "--sync",
        default="full,normal",
        help="SQLite synchronous levels to compare at, comma-separated, the same on both sides, always with "
        "WAL (default: full,normal; FULL is DBOS's own level, NORMAL durably-sched's default)",
    )
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=default_url(),
        help="a database on the PostgreSQL server for core-pg and postgres (default: $BENCH_POSTGRES_URL "
        "or postgresql://postgres@127.0.0.1:5432/test); core-pg creates a fresh database per measurement",
    )
    parser.add_argument(
        "--note", default="", help="a remark stored with the results (e.g. 'measured under load')"
    )
    parser.add_argument(
        "--out", default=str(HERE), help="directory for results.json, RESULTS.md, results.png"
    )
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    cfg = SIZES[mode]
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    profiles = [p.strip().lower() for p in args.sync.split(",") if p.strip()]
    if not profiles or set(profiles) - {"off", "normal", "full", "extra"}:
        parser.error("--sync: use off, normal, full or extra, comma-separated")
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    started = time.monotonic()
    machine = machine_info()
    load = machine["load_average_at_start"]
    log(f"{mode} run on {machine['cpu_model']}, {machine['cores']} cores, load average {load}")
    raw: dict[str, Any] = {}
    if "core" in only or "sync" in only:
        raw["core"] = run_core(cfg, profiles, sync_only="core" not in only)
    if "core-pg" in only:
        raw["core_pg"] = run_core_pg(cfg, args.postgres)
    if "punctuality" in only:
        raw["punctuality"] = run_repeated(
            "benchmark 5 (punctuality)",
            "bench.punctuality",
            cfg["punctuality"],
            cfg["reps_other"],
            600,
        )
        if mode == "full":
            raw["punctuality_stress"] = run_repeated(
                "benchmark 5 stress (100 fire times/s)",
                "bench.punctuality",
                ["--period", "10", "--duration", "30"],
                1,
                600,
            )
    if "claim" in only:
        raw["claim"] = run_repeated(
            "benchmark 6 (claim vs history)",
            "bench.claim_history",
            cfg["claim"],
            cfg["reps_other"],
            1800,
        )
    if "claim-backlog" in only:
        raw["claim_backlog"] = run_repeated(
            "benchmark 11 (claim vs pending backlog)",
            "bench.claim_backlog",
            [*cfg["claim_backlog"], "--postgres", args.postgres],
            cfg["reps_other"],
            1800,
        )
    if "idle" in only:
        raw["idle"] = run_repeated(
            "benchmark 7 (idle serve)", "bench.idle", cfg["idle"], cfg["reps_other"], 600
        )
    if "postgres" in only:
        raw["postgres"] = run_repeated(
            "benchmark 8 (PostgreSQL)",
            "bench.postgres",
            [*cfg["postgres"], "--database", args.postgres],
            1,
            900,
        )
    if "web" in only:
        raw["web"] = run_repeated(
            "benchmark 9 (web: live streams, run lists)", "bench.web", cfg["web"], 1, 3600
        )
    if "failures" in only:
        raw["failures"] = run_repeated(
            "benchmark 10 (failures: takeover after kill -9, retries configured)",
            "bench.failures",
            [*cfg["failures"], "--postgres", args.postgres],
            1,
            1800,
        )
    if "scale" in only:
        log("benchmark 12 (schedules x serves): its matrix, each size in a child process")
        raw["scale"] = scale_suite.run_matrix(args.postgres)
    machine["load_average_at_end"] = [round(x, 2) for x in __import__("os").getloadavg()]

    results = {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": mode,
        "command": "python -m bench.run"
        + (" --quick" if args.quick else "")
        + (f" --sync {args.sync}" if args.sync != "full,normal" else ""),
        "note": args.note,
        "duration_seconds": round(time.monotonic() - started, 1),
        "machine": machine,
        "durability": report.durability(raw),
        "repetitions": {
            "benchmarks_1_4": cfg["reps_core"],
            "benchmarks_1_4_postgres": cfg["reps_pg"],
            "benchmarks_5_7": cfg["reps_other"],
        },
        "summary": summarize(raw),
        "raw": raw,
    }
    results["metrics"] = report.metrics(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "RESULTS.md").write_text(report.markdown(results))
    report.chart(results, out / "results.png")
    if results["summary"].get("scale"):
        scale_suite.chart(results["summary"]["scale"], out / "scale.png")
    log(
        f"wrote {out / 'results.json'}, {out / 'RESULTS.md'}, {out / 'results.png'} "
        f"in {results['duration_seconds']:.0f}s"
    )
    for m in results["metrics"]:
        verdict = {True: "pass", False: "FAIL", None: "-"}[m["pass"]]
        print(
            f"{m['name']:<64} {report.fmt(m['durably'], m['unit']):>10} {m['unit']:<7} "
            f"{report.fmt(m['dbos'], m['unit']):>8}  {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
