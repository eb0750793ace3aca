"""Search filters: conditions on a record's fields, ANDed, checked here into typed ``Condition``s that
every store evaluates itself (the Milvus store renders them in its own syntax, escaped; the in-memory
store evaluates them in Python). Requests give them as JSON:

    [{"field": "metadata.color", "op": "eq", "value": "red"},
     {"field": "created_at", "op": "gte", "value": 1700000000}]

What a condition means, in every store (tests/contract checks each store against brute force):
- values are strings, numbers (integers and floats compare as numbers) or booleans;
- ``eq``: the field holds a value of the same kind, equal to it; ``in``: ``eq`` to one of the values;
- ``ne``: not ``eq``, so a record without the metadata key, or with a value of another kind, matches;
- ``gt``, ``gte``, ``lt``, ``lte``: the field holds a number, compared with the value (a number);
- ``contains``: the field holds a list with an element ``eq`` to the value; ``contains_any``: with an
  element ``eq`` to one of the values (metadata keys only);
- a metadata key holding a list, an object or null is otherwise only ever matched by ``ne``.

Declared metadata keys (gateway.core.declared) mean the same; their conditions take values of the
declared type and the operators that apply to it, and carry the type (``Condition.declared``) so a
store can use the typed field it keeps for the key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .declared import DESCRIPTIONS, METADATA_KEY, OPERATORS, value_fits
from .errors import ErrorKind, ServiceError
from .records import ImageRecord

Scalar = bool | int | float | str
Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "contains_any"]
RANGES = ("gt", "gte", "lt", "lte")
LISTS = ("in", "contains_any")  # the operators that take a list of values
PLAIN_FIELDS: dict[str, type] = {"id": str, "source": str, "created_at": int, "phash": str, "caption_state": str}
METADATA = "metadata."
MAX_CONDITIONS, MAX_IN_VALUES, MAX_STRING = 16, 100, 1024


class FilterCondition(BaseModel):
    """One condition as a request gives it (the API's schema); ``check`` makes it a Condition."""

    model_config = ConfigDict(extra="forbid", title="Condition", json_schema_extra={"examples": [
        {"field": "metadata.color", "op": "eq", "value": "red"}, {"field": "created_at", "op": "gte", "value": 1700000000}]})

    field: str = Field(description='"id", "source", "created_at", "phash" or "metadata.<key>" (key: letters, digits, _)')
    op: Op = "eq"
    value: Scalar | list[Scalar]


@dataclass(frozen=True)
class Condition:
    """A checked condition: a known field, values of the field's type, at most MAX_IN_VALUES of them."""

    field: str  # "id", "source", "created_at", "phash" or "metadata.<key>"
    op: Op
    values: tuple[Scalar, ...]  # one value; one or more for "in" and "contains_any"
    declared: str | None = None  # a declared metadata key's type (gateway.core.declared.FieldType)

    @property
    def metadata_key(self) -> str | None:
        return self.field[len(METADATA):] if self.field.startswith(METADATA) else None


FILTER = TypeAdapter(list[FilterCondition])


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


def _check_value(value: Scalar) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) >= 2 ** 63:
            raise invalid_filter("integer filter value out of range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise invalid_filter("filter values must be finite numbers")
    elif len(value) > MAX_STRING or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise invalid_filter(f"filter strings must be at most {MAX_STRING} characters without control characters")


def _check_one(condition: FilterCondition, declared: Mapping[str, str]) -> Condition:
    name, op = condition.field, condition.op
    key = name[len(METADATA):] if name.startswith(METADATA) else None
    if name not in PLAIN_FIELDS and not (key is not None and METADATA_KEY.match(key)):
        raise invalid_filter(f"unknown filter field {name!r}: use id, source, created_at, phash or metadata.<key>")
    if (op in LISTS) != isinstance(condition.value, list):
        raise invalid_filter('use a list value with "in" and "contains_any", and a single value with every other operator')
    values = tuple(condition.value) if isinstance(condition.value, list) else (condition.value,)
    if not 1 <= len(values) <= MAX_IN_VALUES:
        raise invalid_filter(f'"{op}" takes 1 to {MAX_IN_VALUES} values')
    kind = PLAIN_FIELDS.get(name)
    for value in values:
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise invalid_filter(f"{name} takes integers")
        if kind is str and not isinstance(value, str):
            raise invalid_filter(f"{name} takes strings")
        _check_value(value)
    if op in RANGES and isinstance(values[0], (str, bool)):
        raise invalid_filter(f"{op} takes a number")
    if op.startswith("contains") and key is None:
        raise invalid_filter(f"{op} applies to metadata keys holding lists, not to {name}")
    declared_type = declared.get(key) if key is not None else None
    if declared_type is not None:
        if op not in OPERATORS[declared_type]:
            raise invalid_filter(f"{name} is a declared {declared_type} field: it takes {', '.join(OPERATORS[declared_type])}")
        wanted = "keyword" if declared_type == "keyword_list" else declared_type
        if not all(value_fits(declared_type, value) for value in values):
            raise invalid_filter(f"{name} is a declared {declared_type} field: its values are {DESCRIPTIONS[wanted]}")
    return Condition(name, op, values, declared_type)


def check(conditions: Sequence[FilterCondition], declared: Mapping[str, str] | None = None) -> list[Condition]:
    """The conditions checked (INVALID_REQUEST "invalid_filter" naming the problem); ``declared``: the
    declared metadata keys and their types (GATEWAY_FILTER_FIELDS)."""
    if len(conditions) > MAX_CONDITIONS:
        raise invalid_filter(f"at most {MAX_CONDITIONS} filter conditions")
    return [_check_one(c, declared or {}) for c in conditions]


def parse_json(text: str | None) -> list[FilterCondition]:
    """Conditions from a JSON string (query parameter or form field); '' or None is no filter."""
    if not text:
        return []
    try:
        return validate(json.loads(text))
    except (ValueError, RecursionError) as exc:
        raise invalid_filter(f"filter must be a JSON list of conditions: {exc}") from exc


def validate(value: object) -> list[FilterCondition]:
    """Conditions from decoded JSON (a list of objects)."""
    try:
        return FILTER.validate_python(value)
    except ValidationError as exc:
        raise invalid_filter(f"filter must be a JSON list of conditions: {describe(exc, 'filter')}") from None


# --- what a condition means, for stores that evaluate conditions themselves ------------------------

def _kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "str" if isinstance(value, str) else None


def _equal(held: object, value: Scalar) -> bool:
    return _kind(held) is not None and _kind(held) == _kind(value) and held == value


def holds(condition: Condition, record: ImageRecord) -> bool:
    """Whether a record meets a condition (the rules in this module's docstring)."""
    key = condition.metadata_key
    held = record.metadata.get(key) if key is not None else getattr(record, condition.field)
    if condition.op in ("eq", "in"):
        return any(_equal(held, v) for v in condition.values)
    if condition.op in ("contains", "contains_any"):
        return isinstance(held, list) and any(_equal(item, v) for item in held for v in condition.values)
    if condition.op == "ne":
        return not _equal(held, condition.values[0])
    if _kind(held) != "number":
        return False
    value = condition.values[0]
    assert isinstance(held, (int, float)) and isinstance(value, (int, float))
    return {"gt": held > value, "gte": held >= value, "lt": held < value, "lte": held <= value}[condition.op]


def matches(conditions: Sequence[Condition], record: ImageRecord) -> bool:
    return all(holds(c, record) for c in conditions)
