"""Declared filter fields: metadata keys an operator declares with a type (GATEWAY_FILTER_FIELDS, e.g.
``{"album": "keyword", "year": "integer", "tags": "keyword_list"}``). The Milvus store keeps each as a
typed scalar field beside the JSON metadata, with the scalar index its version offers, so a filter on it
reads an index instead of parsing every record's JSON; the in-memory store evaluates it as any other.

A declared key's value must have the declared type: an upload whose metadata holds another is refused
(metadata stays a JSON object, and undeclared keys are stored and filtered as before, over the JSON:
the slower path). Conditions on a declared key take values of its type and the operators that apply to
it; what a condition means is unchanged (gateway.core.filters), so declaring a key changes speed, not
results. Lists become filterable with ``contains`` / ``contains_any``, declared or not."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal, get_args

from .errors import invalid

FieldType = Literal["keyword", "integer", "float", "boolean", "keyword_list"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
METADATA_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
MAX_DECLARED = 32  # declared fields per deployment (each is a column of the collection)
MAX_KEYWORD_CHARS = 256  # a keyword, or one keyword of a list
MAX_LIST_ITEMS = 64
FLOAT_LIMIT = 1e308  # declared floats lie within +-FLOAT_LIMIT (the store marks a missing value outside it)

# the operators a condition on a declared key may use, by type
OPERATORS: dict[str, tuple[str, ...]] = {
    "keyword": ("eq", "ne", "in"), "boolean": ("eq", "ne", "in"),
    "integer": ("eq", "ne", "in", "gt", "gte", "lt", "lte"), "float": ("eq", "ne", "in", "gt", "gte", "lt", "lte"),
    "keyword_list": ("contains", "contains_any"),
}
DESCRIPTIONS = {"keyword": f"a string of 1 to {MAX_KEYWORD_CHARS} characters", "integer": "an integer",
                "float": f"a number within +-{FLOAT_LIMIT:g}", "boolean": "true or false",
                "keyword_list": f"a list of at most {MAX_LIST_ITEMS} strings of 1 to {MAX_KEYWORD_CHARS} characters"}


def is_keyword(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= MAX_KEYWORD_CHARS


def fits(kind: str, value: object) -> bool:
    """Whether a metadata value has the declared type (as uploads must; the store keeps a value that does
    not, found in a collection migrated from before the declaration, as a missing one)."""
    if kind == "keyword":
        return is_keyword(value)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2 ** 63
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= FLOAT_LIMIT
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, list) and len(value) <= MAX_LIST_ITEMS and all(is_keyword(v) for v in value)


def value_fits(kind: str, value: object) -> bool:
    """Whether a condition's value suits a declared key of that type (one keyword of a list)."""
    return fits("keyword" if kind == "keyword_list" else kind, value)


def check_declared_metadata(metadata: Mapping[str, object], declared: Mapping[str, str]) -> None:
    """INVALID_ARGUMENT naming the key when a declared key holds a value of another type."""
    for key, kind in declared.items():
        if key in metadata and not fits(kind, metadata[key]):
            raise invalid(f"metadata.{key} is a declared {kind} field (GATEWAY_FILTER_FIELDS): it takes"
                          f" {DESCRIPTIONS[kind]}, not {metadata[key]!r:.80}")


def check_declarations(declared: Mapping[str, str]) -> dict[str, str]:
    """The declarations when every key is a metadata key and every type known (settings validation)."""
    if len(declared) > MAX_DECLARED:
        raise ValueError(f"at most {MAX_DECLARED} declared filter fields")
    for key, kind in declared.items():
        if not METADATA_KEY.match(key):
            raise ValueError(f"declared filter field {key!r}: a metadata key is 1 to 64 letters, digits or _")
        if kind not in FIELD_TYPES:
            raise ValueError(f"declared filter field {key!r}: type {kind!r} is not one of {', '.join(FIELD_TYPES)}")
    return dict(declared)
