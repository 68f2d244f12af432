"""The one encoding for stored values (step results, outputs, inputs without a model): JSON.

A value is encoded once; the caller gets back the *decoded* JSON value, on first execution and on
replay alike, so job code sees the same thing both times. pydantic's JSON mode does the encoding;
before it, :func:`_prepare` applies the rules for what JSON has no form for, so that no value is
changed silently:

* ``str``, ``int``, ``bool``, ``None``, finite ``float``: as they are.
* ``list``, ``tuple``, ``range``, generators and other iterators: lists. ``set``, ``frozenset``:
  lists, sorted when the items can be compared (so the stored form does not depend on hash order),
  else in iteration order.
* ``dict``: keys must be ``str``; ``int``, ``float`` and ``bool`` keys become their JSON text
  (``1`` -> ``"1"``, ``True`` -> ``"true"``). Other keys (``None``, tuples, objects) are refused:
  their text would be Python's, not a value anyone could read back.
* pydantic models, dataclasses: dicts, as ``model_dump(mode="json")`` gives them (their own config
  applies).
* ``datetime``, ``date``, ``time``: ISO 8601 text; ``timedelta``: ISO 8601 duration (``PT1H30M``);
  ``Decimal``, ``UUID``, ``Path``, IP addresses: their text; ``Enum`` members: their value.
* refused, naming the value's place: ``bytes``, ``bytearray`` and ``memoryview`` whatever their
  content (JSON has no bytes; return ``data.hex()`` or ``base64.b64encode(data).decode()`` and
  decode it yourself, or store the bytes in a file and return its path), also inside models and
  dataclasses unless the model sets ``ser_json_bytes``; ``NaN`` and infinities (JSON has no such
  numbers: ``null`` would be a silent change); complex numbers; anything else JSON has no form for
  (an arbitrary object: pydantic names its type).

The walk costs about a microsecond per container on top of pydantic's encoder; containers are copied
only where something changed (a set inside), and the place of a refused value is worked out only
when there is one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

import pydantic_core
from pydantic import BaseModel

from .errors import InvalidArgumentError, StepError

_ATOMS = frozenset({str, int, bool, type(None)})
_BYTES = (bytes, bytearray, memoryview)
_KEY_TYPES = (str, int, float, bool)
_MAX_DEPTH = 200


class _Refused(Exception):
    """A value the rules refuse; ``path`` grows (innermost first) as the walk unwinds."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.path: list[str] = []


def _no_constant(name: str) -> Any:
    raise InvalidArgumentError(
        f"{name} is not a JSON number (a float NaN or infinity somewhere in the value)"
    )


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def encode_json_value(value: Any) -> tuple[str, Any]:
    """(JSON text, decoded value). Raises StepError naming what cannot be stored and where."""
    try:
        prepared = _prepare(value, 0, False)
    except _Refused as refused:
        where = f"the value at {''.join(reversed(refused.path))} is" if refused.path else "it is"
        raise StepError(f"cannot be stored as JSON: {where} {refused.what}") from None
    try:
        text = pydantic_core.to_json(prepared, inf_nan_mode="constants").decode()
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise StepError(f"cannot be stored as JSON: {exc}") from None
    try:
        decoded = _DECODER.decode(text)
    except ValueError as exc:  # NaN or infinity written by a model's own serializer
        raise StepError(f"cannot be stored as JSON: {exc}") from None
    return text, decoded


def _prepare(value: Any, depth: int, bytes_ok: bool) -> Any:
    """``value`` with sets sorted into lists; raises _Refused for what the rules above refuse.

    Models and dataclasses are checked, not rebuilt: pydantic serializes them.
    """
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise _Refused(f"the float {value!r} (JSON has no NaN or infinity; store None or a string)")
        return value
    if depth > _MAX_DEPTH:
        raise _Refused(f"nested more than {_MAX_DEPTH} levels deep")
    if kind is dict or isinstance(value, Mapping):
        return _prepare_mapping(value, depth, bytes_ok)
    if kind is list or kind is tuple or isinstance(value, list | tuple):
        return _prepare_sequence(value, depth, bytes_ok)
    if kind is range:
        return list(value)
    if isinstance(value, _BYTES):
        if bytes_ok:
            return value
        raise _Refused(
            f"{kind.__name__} (JSON has no bytes: return data.hex() or base64.b64encode(data).decode() "
            "and decode it where it is used, or write the bytes to a file and return its path)"
        )
    if isinstance(value, float):  # numpy.float64 and other subclasses
        return _prepare(float(value), depth, bytes_ok)
    if kind is complex:
        raise _Refused(f"the complex number {value!r} (JSON has none; store [real, imag])")
    if isinstance(value, set | frozenset):
        items = list(_prepare_sequence(list(value), depth, bytes_ok))
        try:
            return sorted(items)
        except TypeError:  # items that cannot be compared (mixed types): iteration order
            return items
    if isinstance(value, BaseModel):
        own_bytes = bytes_ok or "ser_json_bytes" in type(value).model_config
        fields = [(name, getattr(value, name, None)) for name in type(value).model_fields]
        _check_fields([*fields, *(value.__pydantic_extra__ or {}).items()], depth, own_bytes)
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
        _check_fields(fields, depth, bytes_ok)
        return value
    return value  # datetimes, decimals, UUIDs, enums...: pydantic knows them, or refuses them


def _prepare_child(item: Any, depth: int, bytes_ok: bool, where: object) -> Any:
    """An item of a list (``where``: its index) or a mapping (its key's repr), one level down."""
    try:
        return _prepare(item, depth + 1, bytes_ok)
    except _Refused as refused:
        refused.path.append(f"[{where}]")
        raise


def _prepare_sequence(value: list[Any] | tuple[Any, ...], depth: int, bytes_ok: bool) -> Any:
    copy: list[Any] | None = None
    for i, item in enumerate(value):
        kind = type(item)
        atom = kind in _ATOMS or (kind is float and math.isfinite(item))
        prepared = item if atom else _prepare_child(item, depth, bytes_ok, i)
        if prepared is not item and copy is None:
            copy = list(value[:i])
        if copy is not None:
            copy.append(prepared)
    return value if copy is None else copy  # a tuple left as is: pydantic writes it as a list


def _prepare_mapping(value: Mapping[Any, Any], depth: int, bytes_ok: bool) -> Any:
    copy: dict[Any, Any] | None = None if type(value) is dict else {}
    for key, item in value.items():
        if type(key) is not str:
            _check_key(key)
        kind = type(item)
        atom = kind in _ATOMS or (kind is float and math.isfinite(item))
        prepared = item if atom else _prepare_child(item, depth, bytes_ok, repr(key))
        if prepared is not item and copy is None:
            copy = {}
            for done_key, done_item in value.items():
                if done_key is key:
                    break
                copy[done_key] = done_item
        if copy is not None:
            copy[key] = prepared
    return value if copy is None else copy


def _check_key(key: Any) -> None:
    if not isinstance(key, _KEY_TYPES):
        raise _Refused(
            f"a dict with the key {key!r} ({type(key).__name__}; JSON object keys are strings, "
            "and only int, float and bool keys become their text)"
        )
    if isinstance(key, float) and not math.isfinite(key):
        raise _Refused(f"a dict with the key {key!r} (JSON has no NaN or infinity)")


def _check_fields(fields: list[tuple[str, Any]], depth: int, bytes_ok: bool) -> None:
    for name, item in fields:
        try:
            _prepare(item, depth + 1, bytes_ok)
        except _Refused as refused:
            refused.path.append(f".{name}")
            raise
