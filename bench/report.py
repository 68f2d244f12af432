"""Turn the measurements into metrics with targets, bench/RESULTS.md and bench/results.png."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

TIMES = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"


def _ok(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def fmt(value: float | None, unit: str) -> str:
    if not _ok(value):
        return DASH
    assert value is not None
    if unit in ("steps/s", "runs/s"):
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if unit == "MB":
        return f"{value:.1f}"
    if unit == "%":
        return f"{value:.2f}"
    if unit == TIMES:
        return f"{value:.1f}{TIMES}"
    return f"{value:g}"


def durability(raw: dict[str, Any]) -> dict[str, Any]:
    """What each side ran with, per profile, as read back from the databases."""
    out: dict[str, Any] = {}
    for profile, sides in (raw.get("core") or {}).items():
        d = sides["durably"][0]
        conns = sorted({c for r in sides["dbos"] for c in r.get("connections", [])})
        out[profile] = {
            "durably": f"journal_mode={str(d.get('journal_mode')).upper()}, "
            f"synchronous={d.get('synchronous')} "
            f"(URL option ?synchronous={profile})",
            "dbos": "; ".join(conns)
            + " on every system-database connection (file created in WAL mode before "
            "DBOS opened it"
            + (
                ")"
                if profile == "full"
                else f"; synchronous={profile.upper()} set by a SQLAlchemy connect listener)"
            ),
        }
    return out


def _metric(
    mid: str,
    name: str,
    unit: str,
    durably: float | None,
    dbos: float | None = None,
    *,
    ratio: float | None = None,
    target: str = "",
    passed: bool | None = None,
) -> dict[str, Any]:
    return {
        "id": mid,
        "name": name,
        "unit": unit,
        "durably": durably,
        "dbos": dbos,
        "ratio": ratio,
        "target": target,
        "pass": passed,
    }


def core_metrics(profile: str, d: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    tag = f" [{profile.upper()}]"
    r1 = d["steps_one_run"] / b["steps_one_run"]
    r2 = d["steps_parallel"] / b["steps_parallel"]
    r3 = d["runs_per_s"] / b["runs_per_s"]
    return [
        _metric(
            f"steps_one_run_{profile}",
            "1. Checkpointed no-op steps/s, one run" + tag,
            "steps/s",
            d["steps_one_run"],
            b["steps_one_run"],
            ratio=r1,
            target=f"≥ 13{TIMES} DBOS",
            passed=r1 >= 13,
        ),
        _metric(
            f"steps_parallel_{profile}",
            "2. Steps/s, 50 runs at once (aggregate)" + tag,
            "steps/s",
            d["steps_parallel"],
            b["steps_parallel"],
            ratio=r2,
            target="≥ 10,000 steps/s",
            passed=d["steps_parallel"] >= 10_000,
        ),
        _metric(
            f"runs_per_s_{profile}",
            "3. One-step runs/s, trigger → completed" + tag,
            "runs/s",
            d["runs_per_s"],
            b["runs_per_s"],
            ratio=r3,
            target=f"≥ 1,000/s and ≥ 9{TIMES} DBOS",
            passed=d["runs_per_s"] >= 1000 and r3 >= 9,
        ),
        _metric(
            f"runs_per_s_alt_{profile}",
            "3b. durably batch_trigger / DBOS direct workflow call" + tag,
            "runs/s",
            d["runs_per_s_batch"],
            b["runs_per_s_direct"],
            ratio=d["runs_per_s_batch"] / b["runs_per_s_direct"],
        ),
        _metric(
            f"latency_p50_{profile}",
            "4. trigger_and_wait latency p50" + tag,
            "ms",
            d["latency_p50_ms"],
            b["latency_p50_ms"],
            ratio=b["latency_p50_ms"] / d["latency_p50_ms"],
            target="≤ 2 ms",
            passed=d["latency_p50_ms"] <= 2.0,
        ),
        _metric(
            f"latency_p99_{profile}",
            "4b. trigger_and_wait latency p99" + tag,
            "ms",
            d["latency_p99_ms"],
            b["latency_p99_ms"],
            ratio=b["latency_p99_ms"] / d["latency_p99_ms"],
        ),
    ]


def metrics(results: dict[str, Any]) -> list[dict[str, Any]]:
    s = results["summary"]
    out: list[dict[str, Any]] = []
    for profile, sides in (s.get("core") or {}).items():
        out += core_metrics(profile, sides["durably"], sides["dbos"])
    p = s.get("punctuality")
    if p:
        out.append(
            _metric(
                "punctuality_p99",
                "5. Scheduler punctuality p99, 1,000 schedules",
                "ms",
                p["p99_ms"],
                target="≤ 50 ms",
                passed=p["p99_ms"] <= 50,
            )
        )
        out.append(_metric("punctuality_p50", "5b. Scheduler punctuality p50", "ms", p["p50_ms"]))
    ps = s.get("punctuality_stress")
    if ps:
        out.append(
            _metric(
                "punctuality_stress_p99",
                f"5c. Punctuality p99, {ps['fires_per_second']:.0f} fire times per second",
                "ms",
                ps["p99_ms"],
            )
        )
    c = s.get("claim")
    if c:
        first, last = c["claim_ms"][0], c["claim_ms"][-1]
        growth = last / first
        out.append(_metric("claim_small", f"6. Claim latency, {c['sizes'][0]:,} finished runs", "ms", first))
        out.append(
            _metric(
                "claim_large",
                f"6. Claim latency, {c['sizes'][-1]:,} finished runs",
                "ms",
                last,
                target=f"≤ 2{TIMES} the {c['sizes'][0]:,} figure (is {growth:,.1f}{TIMES})",
                passed=growth <= 2 and c["sizes"][-1] >= 10**6,
            )
        )
    i = s.get("idle")
    if i:
        out.append(
            _metric(
                "idle_rss",
                "7. Idle serve, 1,000 schedules: RSS",
                "MB",
                i["rss_mb"],
                target="≤ 80 MB",
                passed=i["rss_mb"] <= 80,
            )
        )
        out.append(
            _metric(
                "idle_cpu",
                "7. Idle serve, 1,000 schedules: CPU",
                "%",
                i["cpu_percent"],
                target="≤ 1 %",
                passed=i["cpu_percent"] <= 1,
            )
        )
    pg = s.get("postgres")
    if pg and "skipped" not in pg:
        out.append(
            _metric(
                "pg_runs",
                f"8. PostgreSQL one-step runs/s, {pg['workers']} worker processes",
                "runs/s",
                pg["runs_per_s"],
            )
        )
        out.append(
            _metric(
                "pg_latency_p50", "8. PostgreSQL trigger → start in another process, p50", "ms", pg["p50_ms"]
            )
        )
        out.append(
            _metric(
                "pg_latency_p99", "8b. PostgreSQL trigger → start in another process, p99", "ms", pg["p99_ms"]
            )
        )
    web = s.get("web")
    if web:
        for kind, sse in web["sse"].items():
            label = "no-op steps" if not sse["step_ms"] else f"{sse['step_ms']:g} ms steps"
            out.append(
                _metric(
                    f"web_sse_drop_{kind}",
                    f"9a. Worker steps/s drop with 100 live streams ({sse['runs']} runs, {label})",
                    "%",
                    sse["drop_percent"],
                    target="≤ 10 %",
                    passed=sse["drop_percent"] <= 10,
                )
            )
        lists = web["lists"]
        for page in ("first_page", "job_and_status", "label", "next_page"):
            out.append(
                _metric(
                    f"web_list_{page}",
                    f"9b. GET /api/runs {page.replace('_', ' ')}, {lists['history']:,} runs, p99",
                    "ms",
                    lists[page]["p99_ms"],
                    target="≤ 50 ms",
                    passed=lists[page]["p99_ms"] <= 50,
                )
            )
    return out


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    s = results["summary"]
    pk = m["packages"]
    lines = [
        "# durably-sched benchmark results",
        "",
        f"`{results['command']}` — {results['mode']} run, {results['generated_at']}, "
        f"{results['duration_seconds']:.0f} s.",
    ]
    if results.get("note"):
        lines += ["", f"**Note:** {results['note']}"]
    lines += [
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gb']} GB RAM, Linux {m['kernel']}; "
        f"load average {m['load_average_at_start'][0]} at start, "
        f"{m.get('load_average_at_end', ['?'])[0]} at end.  ",
        f"Python {m['python']}, SQLite {m['sqlite']}, durably-sched {pk.get('durably-sched')}, "
        f"DBOS {pk.get('dbos')} (SQLAlchemy {pk.get('sqlalchemy')}), aiosqlite {pk.get('aiosqlite')}, "
        f"asyncpg {pk.get('asyncpg')}.",
        "",
        "Durability is the same on both sides in each comparison: SQLite in WAL mode, and the `synchronous` "
        "level "
        "named in brackets (FULL is DBOS's own level, NORMAL durably-sched's default). Read back from the "
        "connections:",
        "",
    ]
    for profile, sides in results["durability"].items():
        lines += [f"- {profile.upper()}: durably-sched {sides['durably']}; DBOS {sides['dbos']}."]
    lines += [
        "",
        f"Medians of {results['repetitions']['benchmarks_1_4']} repetitions for benchmarks 1{DASH}4 "
        f"(each side in its own process, alternating) and {results['repetitions']['benchmarks_5_7']} "
        f"for 5{DASH}7. "
        f"Benchmarks 5{DASH}7 use the "
        "store's defaults (WAL, synchronous=NORMAL). Ratio: how many times better durably-sched is "
        "(throughput divided, latency inverted).",
        "",
        "| Metric | durably-sched | DBOS | ratio | target | result |",
        "|---|---:|---:|---:|---|---|",
    ]
    for x in results["metrics"]:
        unit = x["unit"]
        verdict = {True: "pass", False: "**FAIL**", None: ""}[x["pass"]]
        lines.append(
            f"| {x['name']} | {fmt(x['durably'], unit)} {unit} | "
            f"{fmt(x['dbos'], unit) + ' ' + unit if _ok(x['dbos']) else DASH} | "
            f"{fmt(x['ratio'], TIMES) if _ok(x['ratio']) else ''} | {x['target']} | {verdict} |"
        )
    pg = s.get("postgres")
    if pg and "skipped" in pg:
        lines += ["", f"8. PostgreSQL: skipped — {pg['skipped']}"]
    c = s.get("claim")
    if c:
        lines += [
            "",
            "Claim latency by history size (`store.claim` end to end, and its candidate SELECT alone):",
            "",
            "| finished runs | claim (ms) | candidate query (µs) |",
            "|---:|---:|---:|",
        ]
        for size, ms, us in zip(c["sizes"], c["claim_ms"], c["query_us"], strict=True):
            lines.append(f"| {size:,} | {ms:.3f} | {us:,.0f} |")
        lines += ["", f"Plan of the candidate query: `{'; '.join(c['plan'])}`."]
    p = s.get("punctuality")
    if p:
        lines += [
            "",
            f"Punctuality: {p['started_runs']} of {p['expected_runs']} expected runs started "
            f"({p['fires_per_second']:.0f} fire times per second); fire time → fire recorded: p50 "
            f"{p['fire_recorded_p50_ms']:.1f} ms, p99 {p['fire_recorded_p99_ms']:.1f} ms.",
        ]
    ps = s.get("punctuality_stress")
    if ps:
        lines += [
            f"Stress variant, {ps['fires_per_second']:.0f} fire times per second (every 10 s): p50 "
            f"{ps['p50_ms']:.1f} ms, p99 {ps['p99_ms']:.1f} ms; fire recorded p50 "
            f"{ps['fire_recorded_p50_ms']:.1f} ms."
        ]
    i = s.get("idle")
    if i:
        lines += ["", f"Idle: measured {i['measured']}."]
    if pg and "skipped" not in pg:
        srv = pg["server"]
        lines += [
            "",
            f"PostgreSQL {srv['server_version']}: synchronous_commit={srv['synchronous_commit']}, "
            f"fsync={srv['fsync']}, wal_sync_method={srv['wal_sync_method']}; {pg['workers']} worker "
            "processes polling every 1 s and woken by LISTEN/NOTIFY.",
        ]
    for profile, sides in (s.get("core") or {}).items():
        d, b = sides["durably"], sides["dbos"]
        lines += [
            "",
            f"[{profile.upper()}] CPU per checkpointed step (benchmark 1, all threads): durably-sched "
            f"{d['cpu_us_per_step']:.0f} µs, DBOS {b['cpu_us_per_step']:.0f} µs. DBOS latency when the "
            f"workflow function is awaited directly: p50 {b['latency_direct_p50_ms']:.2f} ms, "
            f"p99 {b['latency_direct_p99_ms']:.2f} ms.",
        ]
    lines += [
        "",
        "![benchmark chart](results.png)",
        "",
        "Raw per-repetition figures are in results.json; what each benchmark does is in README.md.",
        "",
    ]
    return "\n".join(lines)


BLUE, LIGHT_BLUE, ORANGE, LIGHT_ORANGE, RED = "#1d4ed8", "#93c5fd", "#ea580c", "#fdba74", "#dc2626"


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]
    core = s.get("core") or {}
    fig, grid = plt.subplots(2, 2, figsize=(15, 11), gridspec_kw={"width_ratios": [1.35, 1]})
    m = results["machine"]
    title = (
        f"durably-sched {m['packages'].get('durably-sched')} vs DBOS {m['packages'].get('dbos')}, "
        "SQLite WAL — "
        f"{results['mode']} run {results['generated_at'][:10]}, {m['cpu_model']}, {m['cores']} cores"
    )
    if results.get("note"):
        title += f"\n{results['note']}"
    fig.suptitle(title, fontsize=12.5)

    def label(ax: Any, rect: Any, unit: str, size: float = 8.5) -> None:
        h = rect.get_height()
        if h > 0:
            ax.annotate(
                fmt(h, unit),
                (rect.get_x() + rect.get_width() / 2, h),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=size,
                zorder=6,
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            )

    def target(ax: Any, x: float, width: float, y: float) -> None:
        ax.hlines(y, x - width / 2 - 0.03, x + width / 2 + 0.03, colors=RED, linewidth=2.5, zorder=5)

    series = []
    for profile in core:
        light = profile != "full"
        series += [
            (profile, "durably", LIGHT_BLUE if light else BLUE),
            (profile, "dbos", LIGHT_ORANGE if light else ORANGE),
        ]
    width = 0.8 / max(len(series), 1)

    def xs(x: int) -> list[float]:
        return [x - 0.4 + width * (k + 0.5) for k in range(len(series))]

    def core_panel(ax: Any, keys: list[tuple[str, str]], unit: str, goals: Any, ncol: int) -> None:
        values = []
        for k, (profile, side, colour) in enumerate(series):
            who = "durably-sched" if side == "durably" else "DBOS"
            vals = [core[profile][side][key] for key, _ in keys]
            values += vals
            for rect in ax.bar(
                [xs(x)[k] for x in range(len(keys))],
                vals,
                width,
                color=colour,
                label=f"{who}, synchronous={profile.upper()}",
            ):
                label(ax, rect, unit, 8)
            if side == "durably":
                for x, goal in enumerate(goals(core[profile]["dbos"])):
                    if goal is not None:
                        target(ax, xs(x)[k], width, goal)
                        values.append(goal)
        ax.plot([], [], color=RED, linewidth=2.5, label="target, on the durably-sched bar")
        ax.set_xticks(range(len(keys)), [name for _, name in keys], fontsize=10)
        ax.set_yscale("log")
        ax.set_ylim(min(values) / 2.5, max(values) * (25 if ncol == 2 else 60))
        ax.legend(loc="upper left", fontsize=8.5, ncol=ncol)
        ax.grid(axis="y", alpha=0.3)

    ax = grid[0][0]
    if core:
        core_panel(
            ax,
            [
                ("steps_one_run", "checkpointed steps/s\none run"),
                ("steps_parallel", "checkpointed steps/s\n50 runs at once"),
                ("runs_per_s", "one-step runs/s\ntrigger → completed"),
            ],
            "steps/s",
            lambda b: [13 * b["steps_one_run"], 10_000, max(1000, 9 * b["runs_per_s"])],
            2,
        )
    ax.set_title("Throughput in one process (log scale, higher is better)", fontsize=11)

    ax = grid[0][1]
    if core:
        core_panel(ax, [("latency_p50_ms", "p50"), ("latency_p99_ms", "p99")], "ms", lambda b: [2.0, None], 1)
    ax.set_ylabel("milliseconds")
    ax.set_title("trigger_and_wait latency, one-step run (log scale, lower is better)", fontsize=11)

    ax = grid[1][0]
    groups: list[tuple[str, float, float | None]] = []
    p5 = s.get("punctuality")
    if p5:
        groups += [
            ("schedule fire time →\nrun start, p50", p5["p50_ms"], None),
            ("schedule fire time →\nrun start, p99", p5["p99_ms"], 50.0),
        ]
    ps = s.get("punctuality_stress")
    if ps:
        groups += [(f"same at {ps['fires_per_second']:.0f} fire\ntimes/s, p99", ps["p99_ms"], None)]
    pg = s.get("postgres")
    if pg and "skipped" not in pg:
        groups += [
            ("PostgreSQL: trigger →\nstart in a worker\nprocess, p50", pg["p50_ms"], None),
            ("PostgreSQL: trigger →\nstart in a worker\nprocess, p99", pg["p99_ms"], None),
        ]
    if groups:
        for x, (_name, value, goal) in enumerate(groups):
            label(ax, ax.bar([x], [value], 0.5, color=BLUE)[0], "ms", 9)
            if goal is not None:
                target(ax, x, 0.5, goal)
        ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=9.5)
        values = [g[1] for g in groups] + [50.0]
        ax.set_yscale("log")
        ax.set_ylim(min(values) / 2.5, max(values) * 6)
        ax.plot([], [], color=RED, linewidth=2.5, label="target")
        ax.legend(loc="upper left", fontsize=8.5)
    subtitle = "Scheduler punctuality, 1,000 schedules (log scale, lower is better)"
    if pg and "skipped" not in pg:
        subtitle += (
            f"\nand PostgreSQL wake-up across processes ({pg['workers']} workers; "
            f"{fmt(pg['runs_per_s'], 'runs/s')} runs/s)"
        )
    ax.set_title(subtitle, fontsize=11)
    ax.set_ylabel("milliseconds")
    ax.grid(axis="y", alpha=0.3)

    ax = grid[1][1]
    c = s.get("claim")
    if c:
        ax.plot(c["sizes"], c["claim_ms"], marker="o", color=BLUE, label="store.claim, end to end")
        for x, y in zip(c["sizes"], c["claim_ms"], strict=True):
            ax.annotate(
                fmt(y, "ms"), (x, y), xytext=(0, 8), textcoords="offset points", ha="center", fontsize=9
            )
        ax.axhline(
            2 * c["claim_ms"][0],
            color=RED,
            linewidth=1.8,
            label=f"target: 2{TIMES} the {c['sizes'][0]:,} figure",
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(min(c["claim_ms"]) / 3, max([*c["claim_ms"], 2 * c["claim_ms"][0]]) * 8)
        ax.legend(loc="upper left", fontsize=8.5)
    ax.set_xlabel("finished runs in the table")
    ax.set_ylabel("milliseconds")
    ax.set_title("SQLite claim latency as history grows", fontsize=11)
    ax.grid(alpha=0.3)
    i = s.get("idle")
    if i:
        ax.text(
            0.97,
            0.04,
            f"idle serve, 1,000 schedules:\nRSS {i['rss_mb']:.0f} MB (target ≤ 80)\n"
            f"CPU {i['cpu_percent']:.2f} % (target ≤ 1)",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=9.5,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#999"},
        )

    fig.tight_layout(rect=(0, 0, 1, 0.95 if results.get("note") else 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
