"""Metadata: a JSON object Milvus can store and filter on, or INVALID_ARGUMENT."""

from __future__ import annotations

import pytest

from gateway.core.errors import ErrorKind, ServiceError
from gateway.core.metadata import MAX_METADATA_CHARS, check_metadata, parse_metadata


def test_objects_pass_and_nothing_is_an_empty_object():
    assert parse_metadata('{"album": "holiday", "n": [1, 2.5, {"x": null}]}') == {"album": "holiday", "n": [1, 2.5, {"x": None}]}
    assert parse_metadata(None) == {} and parse_metadata("") == {}
    assert check_metadata({"a": 1}) == {"a": 1}


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"), ('"text"', "must be a JSON object"),
    ('{"x": NaN}', "not valid JSON"), ('{"x": Infinity}', "not valid JSON"),
    ('{"x": 9223372036854775808}', "fit in 64 bits"), ('{"x": 1e400}', "finite"),
    ('{"a": ' * 9 + "1" + "}" * 9, "deeper than 8 levels"),
    ('{"a": "' + "x" * MAX_METADATA_CHARS + '"}', "longer than"),
])
def test_bad_metadata_is_refused(text, message):
    with pytest.raises(ServiceError, match=message) as refused:
        parse_metadata(text)
    assert refused.value.kind is ErrorKind.INVALID_ARGUMENT and refused.value.code == "bad_request"


def test_objects_built_in_code_get_the_same_checks():
    with pytest.raises(ServiceError, match="finite"):
        check_metadata({"x": float("inf")})
    with pytest.raises(ServiceError, match="longer than"):
        check_metadata({"x": "y" * MAX_METADATA_CHARS})
