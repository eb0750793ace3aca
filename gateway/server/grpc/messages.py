"""Protobuf messages <-> the core's types. Metadata and filter values travel as google.protobuf
Struct/Value, whose numbers are doubles: integral values come back as integers (as JSON gives them
to the HTTP API), so the same metadata and filters mean the same thing on both transports."""

from __future__ import annotations

from google.protobuf import json_format, struct_pb2

from ...api import image_search_pb2 as pb
from ...core.filters import Condition, validate
from ...core.metadata import check_metadata, parse_metadata
from ...core.records import Hit, ImageRecord, Indexed, TextHit

MAX_EXACT_INTEGER = 2 ** 53  # doubles hold every integer up to this


def integral(value):
    """Struct/Value contents with integral doubles as ints (recursively)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_EXACT_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def metadata_of(message: pb.IndexImagesRequest) -> dict:
    which = message.WhichOneof("metadata")
    if which == "metadata_json":
        return parse_metadata(message.metadata_json)
    if which == "metadata_struct":
        return check_metadata(integral(json_format.MessageToDict(message.metadata_struct)))
    return {}


def conditions_of(filters) -> list[Condition]:
    return validate([{"field": c.field, "op": c.op or "eq", "value": integral(json_format.MessageToDict(c.value))}
                     for c in filters])


def struct_of(values: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def image_of(record: ImageRecord, with_embedding: bool = False) -> pb.Image:
    image = pb.Image(id=record.id, caption=record.caption, source=record.source, metadata=struct_of(record.metadata),
                     created_at=record.created_at, phash=record.phash)
    if with_embedding and record.vector is not None:
        image.embedding.extend(record.vector.tolist())
    return image


def indexed_of(done: Indexed) -> pb.IndexedImage:
    return pb.IndexedImage(image=image_of(done.record), created=done.created)


def hit_of(hit: Hit) -> pb.Hit:
    return pb.Hit(image=image_of(hit.record), score=hit.score)


def text_hit_of(hit: TextHit) -> pb.TextHit:
    return pb.TextHit(image=image_of(hit.record), score=hit.score, clip_score=hit.clip_score, caption_match=hit.caption_match)
