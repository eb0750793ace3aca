"""Checked conditions (gateway.core.filters) as Milvus boolean expressions. Field names come from the
checked set and values are typed literals (strings escaped per Milvus's grammar), so nothing a
request gives is ever pasted into an expression as text. Every read names its tenant first
(``scoped``): on a server the tenant is the partition key, and the term lets Milvus read only that
tenant's partition.

Milvus reads the kind of an ``in`` list from its first value and fails the query (a segcore assert)
when a later one differs, e.g. ``metadata["n"] in [1, 2.5]``; measured on Lite 2.5.1 and the 2.3.5
server alike. So a list whose values are not all of one type (integers and floats included: floats
would round large integers) is written as ``eq`` terms joined by ``or``, which Milvus evaluates
exactly (it compares JSON numbers as numbers).

A condition on a declared metadata key reads the key's typed field (schema.column) instead of the JSON:
booleans as schema.BOOLEAN's numbers, and where the meaning wants a missing value left out (``lt`` and
``lte``: schema.MISSING lies below every value an upload may give) a term that leaves it out."""

from __future__ import annotations

from collections.abc import Sequence

from ...core.declared import FLOAT_LIMIT
from ...core.filters import Condition, Scalar
from ...core.records import record_key
from .schema import BOOLEAN, KEY, TENANT, column

OPERATORS = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": "in"}
SMALLEST = {"integer": f"{-(2 ** 63 - 1)}", "float": f"{-FLOAT_LIMIT!r}"}  # the least value an upload may give


def literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def listed(values: Sequence[Scalar]) -> str:
    return f"[{', '.join(literal(v) for v in values)}]"


def json_term(condition: Condition) -> str:
    key = condition.metadata_key
    name, values = f'metadata["{key}"]' if key is not None else condition.field, condition.values
    if condition.op in ("contains", "contains_any"):
        if condition.op == "contains" or len({type(v) for v in values}) == 1:
            return f"json_{condition.op}({name}, {literal(values[0]) if condition.op == 'contains' else listed(values)})"
        return " or ".join(f"json_contains({name}, {literal(v)})" for v in values)
    if condition.op != "in":
        return f"{name} {OPERATORS[condition.op]} {literal(values[0])}"
    if len({type(v) for v in values}) > 1:
        return " or ".join(f"{name} == {literal(v)}" for v in values)
    return f"{name} in {listed(values)}"


def declared_term(condition: Condition, kind: str) -> str:
    assert condition.metadata_key is not None
    name, op = column(condition.metadata_key), condition.op
    values: list[Scalar] = list(condition.values)
    if kind == "keyword_list":
        return f"array_{op}({name}, {literal(values[0]) if op == 'contains' else listed(values)})"
    if kind == "boolean":
        values = [BOOLEAN[bool(v)] for v in values]
    elif kind == "float":
        values = [float(v) for v in values]
    term = f"{name} in {listed(values)}" if op == "in" else f"{name} {OPERATORS[op]} {literal(values[0])}"
    if op in ("lt", "lte"):
        term += f" and {name} >= {SMALLEST[kind]}"
    return term


def term(condition: Condition) -> str:
    return json_term(condition) if condition.declared is None else declared_term(condition, condition.declared)


def render(conditions: Sequence[Condition]) -> str:
    """The expression for the conditions, ANDed ('' when there are none)."""
    return " and ".join(f"({term(c)})" for c in conditions)


def scoped(tenant: str | None, expression: str = "") -> str:
    """The expression within one tenant's records (tenant None: every tenant's)."""
    parts = ([f"{TENANT} == {literal(tenant)}"] if tenant is not None else []) + ([f"({expression})"] if expression else [])
    return " and ".join(parts)


def keys_in(tenant: str, ids: Sequence[str]) -> str:
    """The tenant's records of those ids, by primary key (a point lookup)."""
    return scoped(tenant, f"{KEY} in {listed([record_key(tenant, i) for i in ids])}")


def captions_due(now_ms: int) -> str:
    """Records whose caption is pending, not leased to a worker and not waiting for a retry at ``now_ms``."""
    return f'caption_state == "pending" and lease_until < {int(now_ms)} and retry_at <= {int(now_ms)}'


def in_caption_state(state: str) -> str:
    return f"caption_state == {literal(state)}"
