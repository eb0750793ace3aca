"""Filters: requests' conditions checked into typed Conditions (what every store is given), and what a
condition means (gateway.core.filters.holds: the in-memory store's evaluation; tests/contract checks
that Milvus agrees)."""

from __future__ import annotations

import pytest

from gateway.core.errors import ErrorKind, ServiceError
from gateway.core.filters import Condition, check, holds, parse_json, validate
from gateway.core.records import ImageRecord


def checked(conditions: list[dict]) -> list[Condition]:
    return check(validate(conditions))


def test_conditions_become_typed_values_and_no_conditions_is_no_filter():
    assert checked([{"field": "source", "value": "a.jpg"}, {"field": "metadata.n", "op": "in", "value": [1, 2.5, "x"]}]) == [
        Condition("source", "eq", ("a.jpg",)), Condition("metadata.n", "in", (1, 2.5, "x"))]
    assert checked([{"field": "metadata.n", "value": 1}])[0].metadata_key == "n"
    assert check([]) == [] and parse_json(None) == [] and parse_json("") == []


def record(**metadata) -> ImageRecord:
    return ImageRecord("0" * 32, "", "a.jpg", metadata, 5, "")


@pytest.mark.parametrize("condition,kept,dropped", [
    ({"field": "metadata.n", "value": 1}, [record(n=1), record(n=1.0)], [record(n="1"), record(n=True), record(), record(n=[1])]),
    ({"field": "metadata.n", "op": "ne", "value": 1}, [record(n="1"), record(), record(n=None), record(n=2)], [record(n=1.0)]),
    ({"field": "metadata.n", "op": "gt", "value": 0}, [record(n=0.5), record(n=3)], [record(n=True), record(n="9"), record()]),
    ({"field": "metadata.ok", "value": True}, [record(ok=True)], [record(ok=1), record(ok="true")]),
    ({"field": "metadata.n", "op": "in", "value": [1, "a"]}, [record(n=1), record(n="a")], [record(n="1"), record(n=True)]),
    ({"field": "created_at", "op": "lte", "value": 5}, [record()], []),
])
def test_what_a_condition_keeps(condition, kept, dropped):
    (one,) = checked([condition])
    assert [holds(one, r) for r in kept] == [True] * len(kept)
    assert [holds(one, r) for r in dropped] == [False] * len(dropped)


@pytest.mark.parametrize("condition,message", [
    ({"field": "vector", "value": 1}, "unknown filter field"),
    ({"field": "metadata.a-b", "value": 1}, "unknown filter field"),
    ({"field": "created_at", "value": "yesterday"}, "created_at takes integers"),
    ({"field": "created_at", "value": True}, "created_at takes integers"),
    ({"field": "source", "value": 3}, "source takes strings"),
    ({"field": "source", "op": "in", "value": "x"}, 'use a list value with "in"'),
    ({"field": "source", "value": ["x"]}, 'use a list value with "in"'),
    ({"field": "metadata.a", "op": "gt", "value": "b"}, "gt takes a number"),
    ({"field": "metadata.a", "value": 2 ** 63}, "out of range"),
    ({"field": "metadata.a", "value": float("nan")}, "finite"),
    ({"field": "metadata.a", "value": "a\x00b"}, "control characters"),
    ({"field": "id", "op": "in", "value": [str(i) for i in range(101)]}, '"in" takes 1 to 100 values'),
])
def test_bad_conditions_are_invalid_filters(condition, message):
    with pytest.raises(ServiceError, match=message) as refused:
        checked([condition])
    assert refused.value.kind is ErrorKind.INVALID_REQUEST and refused.value.code == "invalid_filter"


def test_too_many_conditions():
    with pytest.raises(ServiceError, match="at most 16"):
        checked([{"field": "source", "value": str(i)} for i in range(17)])


def test_schema_errors_name_the_place_without_pydantic_links():
    with pytest.raises(ServiceError) as refused:
        parse_json('[{"field": "source", "op": "like", "value": "x"}]')
    message = refused.value.message
    assert message.startswith("filter must be a JSON list of conditions: filter[0].op: Input should be")
    assert "http" not in message and "errors.pydantic.dev" not in message
    with pytest.raises(ServiceError, match="filter must be a JSON list"):
        parse_json("not json")
