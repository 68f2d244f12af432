"""The package's shape: no import cycle, no module over 700 lines, no function over 80 lines.

Imports are read with :mod:`ast`, so every import counts: module level, inside functions and
under ``if TYPE_CHECKING:``. Importing ``a.b.c`` is counted as an edge to ``a.b.c`` only (the parent
packages' ``__init__`` modules run too, but they are not where a design's cycle lives).

The rules hold for every module of the package (issue 21 split the last ones over the limits).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "durably_sched"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    lines: int
    imports: set[str] = field(default_factory=set)


def load_modules() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.relative_to(ROOT).parts:
            continue
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        text = path.read_text(encoding="utf-8")
        name = ".".join(parts)
        modules[name] = Module(name, path, is_package, ast.parse(text, str(path)), len(text.splitlines()))
    for module in modules.values():
        module.imports = set(imported_modules(module, modules))
    return modules


def imported_modules(module: Module, modules: dict[str, Module]) -> Iterator[str]:
    """The package's modules that *module* imports, wherever the import statement is."""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _known(alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from pkg import sub` imports the submodule when there is one, else a name of pkg.
                sub = f"{base}.{alias.name}"
                yield from _known(sub if sub in modules else base, modules)


def _known(name: str, modules: dict[str, Module]) -> Iterator[str]:
    if name in modules:
        yield name


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of the import graph with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in sorted(modules[name].imports):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == name:
                    break
            if len(component) > 1 or name in modules[name].imports:
                cycles.append(sorted(component))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return cycles


def long_functions(module: Module) -> Iterator[str]:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                yield f"{module.path.relative_to(ROOT.parent)}:{node.lineno} {node.name} ({length} lines)"


MODULES = load_modules()


def _oversized() -> list[str]:
    return [
        f"{m.path.relative_to(ROOT.parent)} ({m.lines} lines)"
        for m in MODULES.values()
        if m.lines > MAX_MODULE_LINES
    ]


def test_the_import_graph_is_read() -> None:
    """The walk sees relative, function-level and type-checking imports (else the checks prove nothing)."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import errors\n"
        "from .store.base import RunRecord\n"
        "if TYPE_CHECKING:\n"
        "    from .durably import Durably\n"
        "def f() -> None:\n"
        "    from .schedule import scheduler\n"
        "    import durably_sched.web.app\n"
    )
    module = Module("durably_sched.example", ROOT / "example.py", False, ast.parse(source), 8)
    assert set(imported_modules(module, MODULES)) == {
        "durably_sched.errors",
        "durably_sched.store.base",
        "durably_sched.durably",
        "durably_sched.schedule.scheduler",
        "durably_sched.web.app",
    }
    assert "durably_sched.web.app" in MODULES["durably_sched.web"].imports


def test_the_cycle_finder_finds_a_cycle() -> None:
    tree = ast.parse("")
    fake = {
        "p.a": Module("p.a", Path("a.py"), False, tree, 1, {"p.b"}),
        "p.b": Module("p.b", Path("b.py"), False, tree, 1, {"p.c"}),
        "p.c": Module("p.c", Path("c.py"), False, tree, 1, {"p.a"}),
        "p.d": Module("p.d", Path("d.py"), False, tree, 1, {"p.a"}),
    }
    assert import_cycles(fake) == [["p.a", "p.b", "p.c"]]


def test_no_import_cycle() -> None:
    assert import_cycles(MODULES) == []


def test_no_module_over_700_lines() -> None:
    assert _oversized() == []


def test_no_function_over_80_lines() -> None:
    assert [f for m in MODULES.values() for f in long_functions(m)] == []


# Data flows one way: the scheduler, the web layer and the probes see the facade through the
# Protocols of durably_sched.ports, never its module or its store.
FACADE_USERS = (
    "durably_sched.schedule.",
    "durably_sched.web.",
    "durably_sched.ops.metrics",
    "durably_sched.ops.health",
)


def _facade_user(name: str) -> bool:
    return any(name.startswith(p) if p.endswith(".") else name == p for p in FACADE_USERS)


def _store_reads(module: Module) -> Iterator[str]:
    """``<...>.durably.store`` or ``durably.store`` anywhere in the module."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and node.attr == "store":
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "durably") or (
                isinstance(owner, ast.Attribute) and owner.attr == "durably"
            ):
                yield f"{module.path.relative_to(ROOT.parent)}:{node.lineno}"


def test_the_scheduler_and_the_web_layer_use_the_facade_through_its_protocols() -> None:
    users = [m for m in MODULES.values() if _facade_user(m.name)]
    assert {m.name for m in users} >= {"durably_sched.schedule.scheduler", "durably_sched.web.api"}
    facade = [
        i
        for m in users
        for i in m.imports
        if i == "durably_sched.durably" or i.startswith("durably_sched.durably.")
    ]
    assert facade == []
    assert [place for m in users for place in _store_reads(m)] == []


def test_the_store_read_finder_finds_one() -> None:
    source = "async def f(self, ctx, durably):\n    await self.durably.store.x()\n    durably.store.y()\n"
    module = Module("durably_sched.web.example", ROOT / "web" / "example.py", False, ast.parse(source), 3)
    where = "durably_sched/web/example.py"
    assert sorted(_store_reads(module)) == [f"{where}:2", f"{where}:3"]
