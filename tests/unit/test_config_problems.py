"""Hostile and broken schedules files: refused at once with their line, every problem reported.

What users rely on: a schedules.yaml cannot make `serve` or `schedules validate` use unbounded memory
or time (an alias bomb, deep nesting, a recursive alias are refused while the file is composed,
before anything is expanded), and `schedules validate` lists every problem of a file, each with its
line, so one run shows everything to fix.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from durably_sched import create_durably
from durably_sched.errors import ConfigError
from durably_sched.schedule._yaml_guard import MAX_ALIAS_NODES, MAX_DEPTH
from durably_sched.schedule.config import load_schedules, parse_schedules
from durably_sched.store.config_errors import ConfigErrorRecord
from tests.unit.test_cli import Project


def alias_bomb(levels: int = 9) -> str:
    """The classic "billion laughs": each level is nine aliases of the level before (9^levels)."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{','.join([f'*l{level - 1}'] * 9)}]")
    return "schedules:\n  bomb:\n    cron: '* * * * *'\n    job: cleanup\n    input:\n" + "".join(
        f"      {line}\n" for line in lines
    )


def error_of(text: str, jobs: dict[str, type[BaseModel] | None] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_schedules(text, "schedules.yaml", jobs)
    return info.value


def test_an_alias_bomb_is_refused_before_it_is_expanded() -> None:
    text = alias_bomb()
    assert len(text.encode()) < 1000
    started = time.perf_counter()
    error = error_of(text)
    elapsed = time.perf_counter() - started
    print(f"alias bomb refused in {elapsed * 1000:.1f} ms")  # measured, reported, not asserted
    # 9 + 81 + 729 + 6561 nodes fit; the fifth level (9 * 7,381 more) is the one refused.
    assert error.line == 10
    assert str(error).startswith(f"schedules.yaml:10: aliases expand to more than {MAX_ALIAS_NODES:,} nodes")


def test_aliases_within_the_budget_still_work() -> None:
    config = parse_schedules(alias_bomb(levels=3))
    assert len(config.schedules["bomb"].input["l2"]) == 9
    assert config.schedules["bomb"].input["l2"][8][8] == ["lol"] * 9


def test_deep_nesting_is_refused_with_its_line() -> None:
    text = "schedules:\n  a:\n    cron: '* * * * *'\n    job: cleanup\n    input:\n      deep: " + (
        "[" * 5000 + "]" * 5000 + "\n"
    )
    error = error_of(text)
    assert str(error) == f"schedules.yaml:6: nested deeper than {MAX_DEPTH} levels"


def test_nesting_up_to_the_limit_is_accepted_and_one_more_is_not() -> None:
    # top mapping, schedules, the entry, input, the 'deep' value: 5 levels before the brackets;
    # the innermost scalar counts as a level too.
    def text(brackets: int) -> str:
        return "schedules:\n  a:\n    cron: '* * * * *'\n    job: cleanup\n    input:\n      deep: " + (
            "[" * brackets + "1" + "]" * brackets + "\n"
        )

    fits = MAX_DEPTH - 5
    config = parse_schedules(text(fits))
    assert config.schedules["a"].input["deep"] is not None
    assert "nested deeper" in str(error_of(text(fits + 1)))


def test_an_alias_that_expands_too_deep_is_refused() -> None:
    inner = "[" * 40 + "1" + "]" * 40
    text = f"x: &x {inner}\ny: &y [[[[[[[[[[[[[[[[[[[[[[[[[[*x]]]]]]]]]]]]]]]]]]]]]]]]]\nschedules: {{}}\n"
    error = error_of(text)
    assert error.line == 2
    assert f"nested deeper than {MAX_DEPTH} levels once *x is expanded" in str(error)


def test_a_recursive_alias_is_refused() -> None:
    error = error_of("x: &a [1, {b: *a}]\nschedules: {}\n")
    assert str(error) == "schedules.yaml:1: the alias *a is inside the node it names (recursive)"


def test_an_undefined_alias_keeps_the_yaml_error() -> None:
    assert "found undefined alias" in str(error_of("schedules:\n  a: *nowhere\n"))


BROKEN = """\
timezone: Mars/Olympus
defaults:
  overlap: sometimes
schedules:
  one:
    cron: "61 * * * *"
    job: cleanup
  two:
    cron: "0 * * * *"
    job: no-such-job
    colour: blue
  fine:
    cron: "0 1 * * *"
    job: cleanup
  three:
    job: cleanup
    catchup: sometimes
"""


def test_every_problem_is_reported_in_the_files_order() -> None:
    error = error_of(BROKEN, {"cleanup": None})
    shown = [(problem.line, problem.message) for problem in error.problems]
    assert [line for line, _ in shown] == [1, 3, 6, 10, 11, 15, 17]
    assert shown[0][1].startswith("timezone: unknown time zone 'Mars/Olympus'")
    assert shown[1][1].startswith("defaults.overlap: ")
    assert shown[2][1].startswith("schedule 'one': cron: ")
    assert shown[3][1].startswith("schedule 'two': job: unknown job 'no-such-job'")
    assert shown[4][1].startswith("schedule 'two': colour: unknown key")
    assert shown[5][1] == "schedule 'three': cron: is required"
    assert shown[6][1].startswith("schedule 'three': catchup: ")
    assert error.problems[0] is error  # str(error) stays the first problem, one line
    assert all(str(problem).startswith(f"schedules.yaml:{problem.line}: ") for problem in error.problems)


def test_a_misspelt_schedules_key_is_named_before_the_missing_one() -> None:
    error = error_of("timezone: UTC\nschedule: {}\n")
    assert [str(problem) for problem in error.problems] == [
        "schedules.yaml:2: schedule: unknown key (allowed: defaults, schedules, timezone)",
        "schedules.yaml:1: missing 'schedules' (a mapping of schedule names to entries; {} for none)",
    ]


def test_validate_prints_every_problem_and_exits_2(project: Project) -> None:
    bad = project.write(
        "bad.yaml",
        """\
        schedules:
          hourly:
            cron: "0 * * * *"
            job: nope
          images:
            cron: "*/5 * * * *"
            job: echo-image
            input: {filename: a.png}
            colour: blue
          broken:
            cron: "not cron"
            job: plain
        """,
    )
    result = project.run("schedules", "validate", str(bad))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith(f"error: {bad}:4: schedule 'hourly': job: unknown job 'nope'")
    assert lines[1].startswith(f"error: {bad}:9: schedule 'images': colour: unknown key")
    assert lines[2].startswith(f"error: {bad}:11: schedule 'broken': cron: ")


def test_validate_refuses_an_alias_bomb_with_one_line(project: Project) -> None:
    bomb = project.write("bomb.yaml", alias_bomb())
    started = time.perf_counter()
    result = project.run("schedules", "validate", str(bomb))
    print(f"validate on the alias bomb: {time.perf_counter() - started:.3f} s")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {bomb}:10: aliases expand to more than {MAX_ALIAS_NODES:,} nodes (at *l3); "
        "write the values out or share fewer of them"
    )


def test_load_schedules_reports_the_bomb_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(textwrap.dedent(alias_bomb()))
    with pytest.raises(ConfigError) as info:
        load_schedules(path)
    assert info.value.path == str(path) and info.value.line == 10


@settings(max_examples=60, deadline=None)
@given(levels=st.integers(1, 8), fanout=st.integers(1, 12), leaves=st.integers(1, 12))
def test_aliases_load_exactly_while_they_stand_for_at_most_the_budget(
    levels: int, fanout: int, leaves: int
) -> None:
    """Level 0 is a list of ``leaves`` scalars; each further level lists ``fanout`` aliases of the
    level before. The file loads, fully expanded, when all aliases together stand for at most
    MAX_ALIAS_NODES nodes, and is refused naming the first level past the budget otherwise."""
    lines = [f"l0: &l0 [{', '.join(['x'] * leaves)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * fanout)}]")
    text = "schedules:\n  a: {cron: '* * * * *', job: cleanup, input: {" + ", ".join(lines) + "}}\n"
    size, aliased, refused_at = leaves + 1, 0, None
    for level in range(1, levels):
        aliased += fanout * size
        if aliased > MAX_ALIAS_NODES and refused_at is None:
            refused_at = level - 1  # the alias of this level's list names the level before
        size = 1 + fanout * size
    if refused_at is None:
        top = parse_schedules(text).schedules["a"].input[f"l{levels - 1}"]
        for _ in range(levels - 1):
            assert len(top) == fanout
            top = top[-1]
        assert top == ["x"] * leaves
    else:
        assert f"nodes (at *l{refused_at})" in str(error_of(text))


def test_schedules_list_warns_about_every_live_serve_whose_reload_failed(migrated: Project) -> None:
    now = datetime.now(UTC)
    since = now.replace(microsecond=0) - timedelta(minutes=3)

    async def report() -> None:
        async with create_durably(f"sqlite:///{migrated.db}") as d:
            for reporter, checked, line in (("w-1", now, 7), ("w-gone", now - timedelta(hours=2), 9)):
                await d.store.report_config_error(
                    ConfigErrorRecord(
                        reporter, "box", 321, "/srv/schedules.yaml", line, "cron: bad", since, checked
                    )
                )

    asyncio.run(report())
    for args in (("schedules", "list"), ("schedules", "list", "--json")):
        result = migrated.ok(*args)
        assert result.stderr.splitlines() == [
            "warning: /srv/schedules.yaml:7: cron: bad (serve on box, pid 321, since "
            f"{since.astimezone().isoformat(sep=' ')}); the last good version is running"
        ]
    assert "hourly" in migrated.ok("schedules", "list", "--json").stdout
