"""Filters: a typed grammar rendered as escaped Milvus literals, never pasted text."""

from __future__ import annotations

import pytest

from gateway.core.errors import ErrorKind, ServiceError
from gateway.core.filters import parse_json, render, validate


def rendered(conditions: list[dict]) -> str:
    return render(validate(conditions))


@pytest.mark.parametrize("condition,expression", [
    ({"field": "source", "value": "a.jpg"}, '(source == "a.jpg")'),
    ({"field": "created_at", "op": "gte", "value": 1700000000}, "(created_at >= 1700000000)"),
    ({"field": "metadata.rank", "op": "lt", "value": 2.5}, '(metadata["rank"] < 2.5)'),
    ({"field": "metadata.ok", "op": "ne", "value": True}, '(metadata["ok"] != true)'),
    ({"field": "id", "op": "in", "value": ["a", "b"]}, '(id in ["a", "b"])'),
])
def test_each_operator_renders_a_typed_literal(condition, expression):
    assert rendered([condition]) == expression


def test_conditions_are_anded_and_no_conditions_is_no_filter():
    assert rendered([{"field": "source", "value": "x"}, {"field": "metadata.a", "value": 1}]) == \
        '(source == "x") and (metadata["a"] == 1)'
    assert render([]) == "" and parse_json(None) == [] and parse_json("") == []


def test_quotes_and_backslashes_stay_inside_the_literal():
    assert rendered([{"field": "metadata.name", "value": 'say "hi" \\ bye'}]) == '(metadata["name"] == "say \\"hi\\" \\\\ bye")'
    escape = rendered([{"field": "source", "value": '" or id != "'}])
    assert escape == '(source == "\\" or id != \\"")'


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
        rendered([condition])
    assert refused.value.kind is ErrorKind.INVALID_REQUEST and refused.value.code == "invalid_filter"


def test_too_many_conditions():
    with pytest.raises(ServiceError, match="at most 16"):
        rendered([{"field": "source", "value": str(i)} for i in range(17)])


def test_schema_errors_name_the_place_without_pydantic_links():
    with pytest.raises(ServiceError) as refused:
        parse_json('[{"field": "source", "op": "like", "value": "x"}]')
    message = refused.value.message
    assert message.startswith("filter must be a JSON list of conditions: filter[0].op: Input should be")
    assert "http" not in message and "errors.pydantic.dev" not in message
    with pytest.raises(ServiceError, match="filter must be a JSON list"):
        parse_json("not json")
