"""Checked conditions as Milvus expressions: typed, escaped literals, never pasted text; ``in`` lists of
mixed value types written as terms Milvus can evaluate (it fails a query on ``[1, 2.5]``)."""

from __future__ import annotations

import pytest

from gateway.backends.milvus.expressions import keys_in, render, scoped
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
    assert keys_in("t1", ['a"b']) == 'tenant == "t1" and (key in ["a\\"b.t1"])'
    assert keys_in("default", ["ab"]) == 'tenant == "default" and (key in ["ab"])'


DECLARED = {"album": "keyword", "year": "integer", "rank": "float", "ok": "boolean", "tags": "keyword_list"}


@pytest.mark.parametrize("condition,expression", [
    ({"field": "metadata.album", "value": "x"}, '(meta_album == "x")'),
    ({"field": "metadata.album", "op": "in", "value": ["x", "y"]}, '(meta_album in ["x", "y"])'),
    ({"field": "metadata.year", "op": "gte", "value": 2020}, "(meta_year >= 2020)"),
    # a missing value is stored below every value an upload may give: lt and lte leave it out
    ({"field": "metadata.year", "op": "lt", "value": 2020}, "(meta_year < 2020 and meta_year >= -9223372036854775807)"),
    ({"field": "metadata.rank", "op": "lte", "value": 2}, "(meta_rank <= 2.0 and meta_rank >= -1e+308)"),
    ({"field": "metadata.rank", "op": "in", "value": [1, 2.5]}, "(meta_rank in [1.0, 2.5])"),
    ({"field": "metadata.ok", "op": "ne", "value": True}, "(meta_ok != 2)"),
    ({"field": "metadata.tags", "op": "contains", "value": "cat"}, '(array_contains(meta_tags, "cat"))'),
    ({"field": "metadata.tags", "op": "contains_any", "value": ["a", "b"]}, '(array_contains_any(meta_tags, ["a", "b"]))'),
])
def test_declared_fields_read_their_typed_field(condition, expression):
    assert render(check(validate([condition]), DECLARED)) == expression


def test_undeclared_lists_are_searched_in_the_json_and_reads_are_scoped_to_a_tenant():
    assert rendered([{"field": "metadata.tags", "op": "contains", "value": "cat"}]) == '(json_contains(metadata["tags"], "cat"))'
    assert rendered([{"field": "metadata.tags", "op": "contains_any", "value": [1, "a"]}]) == \
        '(json_contains(metadata["tags"], 1) or json_contains(metadata["tags"], "a"))'
    assert scoped("acme", '(source == "x")') == 'tenant == "acme" and ((source == "x"))'
    assert scoped(None, "") == "" and scoped("acme") == 'tenant == "acme"'
