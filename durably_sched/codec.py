"""The one encoding for stored values (step results, outputs): pydantic's JSON mode.

A value is encoded once; the caller gets back the *decoded* JSON value, on first execution and on
replay alike, so job code sees the same thing both times (models become dicts, datetimes ISO
strings, Decimals strings, UUIDs strings, tuples lists).
"""

from __future__ import annotations

import json
from typing import Any

import pydantic_core

from .errors import StepError


def encode_json_value(value: Any) -> tuple[str, Any]:
    """(JSON text, decoded value). Raises StepError naming the type that cannot be encoded."""
    try:
        text = pydantic_core.to_json(value, inf_nan_mode="null").decode()
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise StepError(f"cannot be stored as JSON: {exc}") from None
    return text, json.loads(text)
