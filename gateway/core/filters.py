"""Search filters: a small typed grammar rendered into a Milvus boolean expression.

User input never reaches the expression as text: field names come from a fixed set (or a
metadata key restricted to [A-Za-z0-9_]), operators from a fixed table, and values are typed
literals (strings escaped per Milvus's grammar, numbers checked finite). Conditions are ANDed.

    [{"field": "metadata.color", "op": "eq", "value": "red"},
     {"field": "created_at", "op": "gte", "value": 1700000000}]
"""

from __future__ import annotations

import json
import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import ErrorKind, ServiceError

Scalar = bool | int | float | str
OPERATORS = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": "in"}
PLAIN_FIELDS = {"id": str, "source": str, "created_at": int, "phash": str}
METADATA_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
MAX_CONDITIONS, MAX_IN_VALUES, MAX_STRING = 16, 100, 1024


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"field": "metadata.color", "op": "eq", "value": "red"}, {"field": "created_at", "op": "gte", "value": 1700000000}]})

    field: str = Field(description='"id", "source", "created_at", "phash" or "metadata.<key>" (key: letters, digits, _)')
    op: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in"] = "eq"
    value: Scalar | list[Scalar]


CONDITIONS = TypeAdapter(list[Condition])


def invalid_filter(message: str) -> ServiceError:
    return ServiceError(ErrorKind.INVALID_REQUEST, message, "invalid_filter")


def describe(error: ValidationError, root: str) -> str:
    """pydantic's errors as one line a person can act on ("filter[0].op: Input should be ..."), without
    its documentation links or the input echoed back."""
    parts = []
    for problem in error.errors(include_url=False, include_input=False):
        where = root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem["loc"])
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


def _literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) >= 2 ** 63:
            raise invalid_filter("integer filter value out of range")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise invalid_filter("filter values must be finite numbers")
        return repr(value)
    if len(value) > MAX_STRING or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise invalid_filter(f"filter strings must be at most {MAX_STRING} characters without control characters")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field(name: str) -> tuple[str, type | None]:
    if name in PLAIN_FIELDS:
        return name, PLAIN_FIELDS[name]
    if name.startswith("metadata."):
        key = name[len("metadata."):]
        if METADATA_KEY.match(key):
            return f'metadata["{key}"]', None
    raise invalid_filter(f"unknown filter field {name!r}: use id, source, created_at, phash or metadata.<key>")


def render(conditions: list[Condition]) -> str:
    """Milvus expression for the conditions ('' when there are none)."""
    if len(conditions) > MAX_CONDITIONS:
        raise invalid_filter(f"at most {MAX_CONDITIONS} filter conditions")
    parts = []
    for condition in conditions:
        field, kind = _field(condition.field)
        values = condition.value if isinstance(condition.value, list) else [condition.value]
        if (condition.op == "in") != isinstance(condition.value, list):
            raise invalid_filter('use a list value with "in", and a single value with every other operator')
        if not 1 <= len(values) <= MAX_IN_VALUES:
            raise invalid_filter(f'"in" takes 1 to {MAX_IN_VALUES} values')
        for value in values:
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise invalid_filter(f"{condition.field} takes integers")
            if kind is str and not isinstance(value, str):
                raise invalid_filter(f"{condition.field} takes strings")
        if condition.op in ("gt", "gte", "lt", "lte") and isinstance(values[0], (str, bool)):
            raise invalid_filter(f"{condition.op} takes a number")
        rendered = "[" + ", ".join(_literal(v) for v in values) + "]" if condition.op == "in" else _literal(values[0])
        parts.append(f"{field} {OPERATORS[condition.op]} {rendered}")
    return " and ".join(f"({p})" for p in parts)


def parse_json(text: str | None) -> list[Condition]:
    """Conditions from a JSON string (query parameter or form field); '' or None is no filter."""
    if not text:
        return []
    try:
        return validate(json.loads(text))
    except (ValueError, RecursionError) as exc:
        raise invalid_filter(f"filter must be a JSON list of conditions: {exc}") from exc


def validate(value: object) -> list[Condition]:
    """Conditions from decoded JSON (a list of objects)."""
    try:
        return CONDITIONS.validate_python(value)
    except ValidationError as exc:
        raise invalid_filter(f"filter must be a JSON list of conditions: {describe(exc, 'filter')}") from None
