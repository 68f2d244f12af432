"""Where every key and value of a YAML document is: the position index behind schedules.yaml errors.

PyYAML composes a node tree that carries each node's position; this module walks it once, before
the document is constructed, and records the line of every key and value under its path of keys
from the root (``("schedules", "nightly", "cron")``). It also rejects duplicate keys at every level
(PyYAML keeps the last of two equal keys without a word). Errors are :class:`Problem` with a line;
the loader turns them into ConfigError with the file's path.

The index follows aliases (a key under ``<<: *defaults`` has a path of its own), so what it walks
is the expanded tree: the document is composed by :class:`~._yaml_guard.GuardedLoader`, which
refuses alias bombs, deep nesting and recursive aliases before this walk or the constructor starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ._yaml_guard import MAX_DEPTH, BudgetExceeded, GuardedLoader

__all__ = ["Document", "Path_", "Place", "Problem", "message", "read_document"]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"

Path_ = tuple[Any, ...]


@dataclass(frozen=True)
class Place:
    key_text: str  # the key as written (``on``, where the document holds True)
    key_line: int
    value_line: int
    nested: bool  # the value is a mapping or a sequence


class Problem(Exception):
    """Raised while reading the document; turned into a ConfigError with the file's path."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def message(path: Path_, what: str, places: Mapping[Path_, Place]) -> str:
    """``schedule '<name>': <field>: <what>`` for a path of keys from the document root."""
    parts: list[str] = []
    for depth in range(1, len(path) + 1):
        place = places.get(path[:depth])
        part = path[depth - 1]
        if place is not None:
            parts.append(place.key_text)
        elif isinstance(part, int) and not isinstance(part, bool):
            parts.append(f"[{part}]")
        else:
            parts.append(str(part))
    prefix = ""
    if len(parts) >= 2 and path[0] == "schedules":
        prefix = f"schedule '{parts[1]}': "
        parts = parts[2:]
    field = ""
    for part in parts:
        field += part if not field or part.startswith("[") else f".{part}"
    return f"{prefix}{field}: {what}" if field else f"{prefix}{what}"


def _key_of(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """A mapping key as the constructed document will hold it (its text when it cannot be a key)."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR_TAG:
            return node.value  # what the constructor makes of a str scalar, without its call
        try:
            key = loader.construct_object(node)
            hash(key)
        except (yaml.YAMLError, TypeError):
            return node.value
        return key
    return ("<complex key>", node.start_mark.line)


def _index_nodes(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, places: dict[Path_, Place]) -> None:
    """Record where every key and value is, and reject duplicate keys (at every level)."""
    if isinstance(node, yaml.MappingNode):
        first_lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # '<<: *anchor'; explicit keys may override merged ones
                continue
            key = _key_of(loader, key_node)
            line = key_node.start_mark.line + 1
            if key in first_lines:
                first = first_lines[key]
                if path == ("schedules",):
                    what = f"duplicate schedule name (first defined on line {first})"
                else:
                    what = f"duplicate key (first on line {first})"
                raise Problem(message((*path, key), what, places), line)
            first_lines[key] = line
            places[(*path, key)] = Place(
                key_text=key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key),
                key_line=line,
                value_line=value_node.start_mark.line + 1,
                nested=isinstance(value_node, yaml.MappingNode | yaml.SequenceNode),
            )
            _index_nodes(loader, value_node, (*path, key), places)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            line = item.start_mark.line + 1
            places[(*path, position)] = Place(
                key_text=f"[{position}]",
                key_line=line,
                value_line=line,
                nested=isinstance(item, yaml.MappingNode | yaml.SequenceNode),
            )
            _index_nodes(loader, item, (*path, position), places)


class Document:
    """The constructed YAML data plus the position of every key and value in it."""

    def __init__(self, data: Any, places: dict[Path_, Place], root_line: int) -> None:
        self.data = data
        self.places = places
        self.root_line = root_line

    def line(self, path: Path_, *, key: bool = False) -> int:
        """The line of the value at ``path`` (of its key if asked, or if the value is nested).

        A path that is not in the file (a missing field, a key merged in with '<<') falls back to the
        nearest parent's key.
        """
        while path:
            place = self.places.get(path)
            if place is not None:
                return place.key_line if key or place.nested else place.value_line
            path = path[:-1]
            key = True
        return self.root_line

    def text(self, path: Path_) -> str:
        """The last key of ``path`` as written in the file."""
        place = self.places.get(path)
        return place.key_text if place is not None else str(path[-1])

    def problem(self, path: Path_, what: str, *, key: bool = False) -> Problem:
        return Problem(message(path, what, self.places), self.line(path, key=key))


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "cannot be parsed"
        if exc.problem and exc.context:
            what = f"{exc.problem} ({exc.context})"
        return Problem(f"invalid YAML: {what}", None if mark is None else mark.line + 1)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        return Problem(f"invalid YAML: {exc.reason} (character {exc.character!r})", line)
    return Problem(f"invalid YAML: {exc}", None)  # pragma: no cover - PyYAML raises the two above


_OPENS = (
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.FlowSequenceStartToken,
)
_CLOSES = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _nothing_to_guard(text: str) -> bool:
    """Whether libyaml may compose the document: it has no anchor or alias and nests well under
    MAX_DEPTH, so the guard has nothing to refuse (one scan in C; a file of 10,000 schedules is
    composed about five times faster). Anything else, and any error, takes the guarded loader,
    which says what is wrong the way it always has."""
    if not yaml.__with_libyaml__:
        return False
    depth = 0
    try:
        for token in yaml.scan(text, Loader=yaml.CSafeLoader):
            if isinstance(token, _OPENS):
                depth += 1
                if depth + 1 >= MAX_DEPTH:
                    return False
            elif isinstance(token, _CLOSES):
                depth -= 1
            elif isinstance(token, yaml.AnchorToken | yaml.AliasToken):
                return False
    except yaml.YAMLError:
        return False
    return True


def read_document(text: str) -> Document:
    try:
        loader: yaml.SafeLoader = yaml.CSafeLoader(text) if _nothing_to_guard(text) else GuardedLoader(text)  # type: ignore[assignment]
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, text) from None
    try:
        root = loader.get_single_node()
        if root is None:
            raise Problem("the file is empty; it needs a 'schedules' mapping", None)
        places: dict[Path_, Place] = {}
        # Index before constructing: construction applies '<<' merges to the node tree itself.
        _index_nodes(loader, root, (), places)
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, text) from None
    except BudgetExceeded as exc:
        raise Problem(exc.message, exc.line) from None
    finally:
        loader.dispose()
    return Document(data, places, root.start_mark.line + 1)
