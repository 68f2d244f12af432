"""A YAML loader whose documents cannot explode: budgets checked while the node tree is composed.

Anchors and aliases stay allowed (``<<: *defaults`` is a documented way to share settings), but an
alias is a pointer that later readers expand: the position index walks the tree by path, pydantic
validates every copy, and nine levels of ten aliases each ("billion laughs", 574 bytes) expand to
10^9 nodes. So while PyYAML composes the document -- before anything is expanded or constructed --
:class:`GuardedLoader` keeps, for every anchored node, its *expanded* size (nodes, counting what its
own aliases stand for) and height, and refuses:

* aliases that together stand for more than :data:`MAX_ALIAS_NODES` nodes;
* nesting deeper than :data:`MAX_DEPTH` levels, aliases expanded in place (a 5,000-level flow
  sequence would otherwise end in a RecursionError in the composer);
* an alias inside the node it names (a recursive structure, which the index would walk forever).

Each refusal is a :class:`~._yaml_index.Problem`-compatible error with the line of the offending
node. The check costs one counter per node; composition itself is iterative in the parser and
recursive only as deep as the document nests, which the depth budget bounds.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_ALIAS_NODES", "MAX_DEPTH", "BudgetExceeded", "GuardedLoader"]

MAX_DEPTH = 64
"""Levels of nesting (mappings, sequences and the scalar at the bottom), aliases expanded."""
MAX_ALIAS_NODES = 10_000
"""Nodes that all aliases of a document may stand for together (a merged block of 10 keys: 21)."""


class BudgetExceeded(Exception):
    """The document is refused before it is expanded; ``line`` is 1-based."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class GuardedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts while it composes; see the module notes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open: list[int] = []  # per open node: the greatest height among its children so far
        self._total = 0  # nodes composed so far, aliases counted as what they expand to
        self._aliased = 0  # nodes that aliases stood for so far
        self._shapes: dict[str, tuple[int, int]] = {}  # anchor -> (expanded size, height)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.AliasEvent):
            self._count_alias(event.anchor or "", line)
            return super().compose_node(parent, index)
        if len(self._open) >= MAX_DEPTH:
            raise BudgetExceeded(f"nested deeper than {MAX_DEPTH} levels", line)
        before = self._total
        self._open.append(0)
        try:
            node = super().compose_node(parent, index)
        finally:
            height = self._open.pop() + 1
        self._total += 1
        self._child(height)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._shapes[anchor] = (self._total - before, height)
        return node

    def _child(self, height: int) -> None:
        if self._open:
            self._open[-1] = max(self._open[-1], height)

    def _count_alias(self, anchor: str, line: int) -> None:
        shape = self._shapes.get(anchor)
        if shape is None:
            if anchor in self.anchors:  # registered when its node opened, not closed yet
                raise BudgetExceeded(f"the alias *{anchor} is inside the node it names (recursive)", line)
            return  # an undefined alias: PyYAML's own error follows
        size, height = shape
        self._aliased += size
        if self._aliased > MAX_ALIAS_NODES:
            raise BudgetExceeded(
                f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes (at *{anchor}); "
                "write the values out or share fewer of them",
                line,
            )
        if len(self._open) + height > MAX_DEPTH:
            raise BudgetExceeded(f"nested deeper than {MAX_DEPTH} levels once *{anchor} is expanded", line)
        self._total += size
        self._child(height)
