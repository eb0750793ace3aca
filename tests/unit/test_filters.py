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


DECLARED = {"album": "keyword", "year": "integer", "rank": "float", "ok": "boolean", "tags": "keyword_list"}


def test_list_operators_keep_records_whose_list_holds_a_value():
    (holds_cat,) = checked([{"field": "metadata.tags", "op": "contains", "value": "cat"}])
    (any_of,) = checked([{"field": "metadata.tags", "op": "contains_any", "value": ["dog", 1]}])
    assert [holds(holds_cat, r) for r in (record(tags=["cat", "x"]), record(tags="cat"), record(tags=[]), record())] == \
        [True, False, False, False]
    assert [holds(any_of, r) for r in (record(tags=["dog"]), record(tags=[1.0]), record(tags=[True]), record(tags=["1"]))] == \
        [True, True, False, False]


def test_conditions_on_declared_keys_carry_their_type_and_mean_what_undeclared_ones_mean():
    (on_year,) = check(validate([{"field": "metadata.year", "op": "lt", "value": 2020}]), DECLARED)
    assert on_year.declared == "integer" and checked([{"field": "metadata.year", "value": 1}])[0].declared is None
    assert [holds(on_year, r) for r in (record(year=2019), record(year=2021), record())] == [True, False, False]


@pytest.mark.parametrize("condition,message", [
    ({"field": "metadata.album", "value": 3}, "declared keyword field: its values are a string"),
    ({"field": "metadata.album", "value": ""}, "declared keyword field"),
    ({"field": "metadata.album", "op": "gt", "value": 3}, "declared keyword field: it takes eq, ne, in"),
    ({"field": "metadata.year", "value": 2.5}, "declared integer field: its values are an integer"),
    ({"field": "metadata.year", "value": True}, "declared integer field"),
    ({"field": "metadata.rank", "value": "1"}, "declared float field"),
    ({"field": "metadata.ok", "value": 1}, "declared boolean field"),
    ({"field": "metadata.tags", "value": "cat"}, "declared keyword_list field: it takes contains, contains_any"),
    ({"field": "metadata.tags", "op": "contains", "value": 1}, "declared keyword_list field: its values are a string"),
    ({"field": "source", "op": "contains", "value": "a"}, "contains applies to metadata keys"),
    ({"field": "metadata.tags", "op": "contains_any", "value": "cat"}, 'use a list value with "in" and "contains_any"'),
])
def test_conditions_refused_on_declared_keys_and_list_operators(condition, message):
    with pytest.raises(ServiceError, match=message) as refused:
        check(validate([condition]), DECLARED)
    assert refused.value.code == "invalid_filter"
