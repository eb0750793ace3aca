"""JSON objects <-> google.protobuf.Struct/Value, for the server and its clients alike. Struct numbers
are doubles: integral values come back as integers (as JSON gives them to the HTTP API), so the same
metadata and filters mean the same on both transports."""

from __future__ import annotations

from google.protobuf import json_format, struct_pb2

MAX_EXACT_INTEGER = 2 ** 53  # doubles hold every integer up to this


def integral(value):
    """``value`` with integral doubles as ints (recursively through lists and objects)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_EXACT_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def to_python(message: struct_pb2.Struct | struct_pb2.Value):
    """A Struct as a dict, a Value as its JSON value, numbers as JSON would have them."""
    return integral(json_format.MessageToDict(message))


def struct_of(values: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def value_of(value) -> struct_pb2.Value:
    """A JSON value (a string, number, bool, list, object) as a Value."""
    return json_format.ParseDict(value, struct_pb2.Value())
