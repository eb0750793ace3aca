"""Checked conditions (gateway.core.filters) as Milvus boolean expressions. Field names come from the
checked set and values are typed literals (strings escaped per Milvus's grammar), so nothing a
request gives is ever pasted into an expression as text.

Milvus reads the kind of an ``in`` list from its first value and fails the query (a segcore assert)
when a later one differs, e.g. ``metadata["n"] in [1, 2.5]``; measured on Lite 2.5.1 and the 2.3.5
server alike. So a list whose values are not all of one type (integers and floats included: floats
would round large integers) is written as ``eq`` terms joined by ``or``, which Milvus evaluates
exactly (it compares JSON numbers as numbers)."""

from __future__ import annotations

from collections.abc import Sequence

from ...core.filters import Condition, Scalar

OPERATORS = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": "in"}


def literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def field(condition: Condition) -> str:
    key = condition.metadata_key
    return f'metadata["{key}"]' if key is not None else condition.field


def term(condition: Condition) -> str:
    name, values = field(condition), condition.values
    if condition.op != "in":
        return f"{name} {OPERATORS[condition.op]} {literal(values[0])}"
    if len({type(v) for v in values}) > 1:
        return " or ".join(f"{name} == {literal(v)}" for v in values)
    return f"{name} in [{', '.join(literal(v) for v in values)}]"


def render(conditions: Sequence[Condition]) -> str:
    """The expression for the conditions, ANDed ('' when there are none)."""
    return " and ".join(f"({term(c)})" for c in conditions)


def ids_in(ids: Sequence[str]) -> str:
    return f"id in [{', '.join(literal(i) for i in ids)}]"


def captions_due(now_ms: int) -> str:
    """Records whose caption is pending, not leased to a worker and not waiting for a retry at ``now_ms``."""
    return f'caption_state == "pending" and lease_until < {int(now_ms)} and retry_at <= {int(now_ms)}'


def in_caption_state(state: str) -> str:
    return f"caption_state == {literal(state)}"
