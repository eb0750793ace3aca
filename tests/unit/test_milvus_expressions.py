"""Checked conditions as Milvus expressions: typed, escaped literals, never pasted text; ``in`` lists of
mixed value types written as terms Milvus can evaluate (it fails a query on ``[1, 2.5]``)."""

from __future__ import annotations

import pytest

from gateway.backends.milvus.expressions import ids_in, render
from gateway.core.filters import check, validate


def rendered(conditions: list[dict]) -> str:
    return render(check(validate(conditions)))


@pytest.mark.parametrize("condition,expression", [
    ({"field": "source", "value": "a.jpg"}, '(source == "a.jpg")'),
    ({"field": "created_at", "op": "gte", "value": 1700000000}, "(created_at >= 1700000000)"),
    ({"field": "metadata.rank", "op": "lt", "value": 2.5}, '(metadata["rank"] < 2.5)'),
    ({"field": "metadata.ok", "op": "ne", "value": True}, '(metadata["ok"] != true)'),
    ({"field": "id", "op": "in", "value": ["a", "b"]}, '(id in ["a", "b"])'),
    ({"field": "metadata.n", "op": "in", "value": [1, 2]}, '(metadata["n"] in [1, 2])'),
    ({"field": "metadata.n", "op": "in", "value": [1, 2.5, "x"]},
     '(metadata["n"] == 1 or metadata["n"] == 2.5 or metadata["n"] == "x")'),
])
def test_each_operator_renders_a_typed_literal(condition, expression):
    assert rendered([condition]) == expression


def test_conditions_are_anded_and_no_conditions_is_no_expression():
    assert rendered([{"field": "source", "value": "x"}, {"field": "metadata.a", "value": 1}]) == \
        '(source == "x") and (metadata["a"] == 1)'
    assert render([]) == ""


def test_quotes_and_backslashes_stay_inside_the_literal():
    assert rendered([{"field": "metadata.name", "value": 'say "hi" \\ bye'}]) == '(metadata["name"] == "say \\"hi\\" \\\\ bye")'
    assert rendered([{"field": "source", "value": '" or id != "'}]) == '(source == "\\" or id != \\"")'
    assert ids_in(['a"b']) == 'id in ["a\\"b"]'
