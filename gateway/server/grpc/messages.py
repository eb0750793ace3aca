"""Protobuf messages <-> the core's types (metadata and filter values: gateway.api.structs)."""

from __future__ import annotations

from google.protobuf import unknown_fields
from google.protobuf.message import Message

from ...api import image_search_pb2 as pb
from ...api.structs import struct_of, to_python
from ...core.errors import ErrorKind, ServiceError
from ...core.filters import FilterCondition, validate
from ...core.metadata import check_metadata, parse_metadata
from ...core.records import Hit, ImageRecord, Indexed, TextHit


def check_known(message: Message) -> None:
    """INVALID_REQUEST naming the fields a message takes when it carries a field its type does not
    declare (a client built from another version of the .proto): never ignored, as over HTTP."""
    unknown = sorted({f.field_number for f in unknown_fields.UnknownFieldSet(message)})
    descriptor = message.DESCRIPTOR
    if unknown:
        raise ServiceError(ErrorKind.INVALID_REQUEST, f"unknown field number{'s' * (len(unknown) > 1)}"
                           f" {', '.join(map(str, unknown))} in {descriptor.full_name}: it takes"
                           f" {', '.join(f.name for f in descriptor.fields)}")
    for field, value in message.ListFields():
        if field.message_type is not None:
            for child in (value if field.is_repeated else [value]):
                if isinstance(child, Message):
                    check_known(child)


def metadata_of(message: pb.IndexImagesRequest) -> dict:
    which = message.WhichOneof("metadata")
    if which == "metadata_json":
        return parse_metadata(message.metadata_json)
    if which == "metadata_struct":
        return check_metadata(to_python(message.metadata_struct))
    return {}


def conditions_of(filters) -> list[FilterCondition]:
    return validate([{"field": c.field, "op": c.op or "eq", "value": to_python(c.value)}
                     for c in filters])


def image_of(record: ImageRecord, with_embedding: bool = False) -> pb.Image:
    image = pb.Image(id=record.id, caption=record.caption, source=record.source, metadata=struct_of(record.metadata),
                     created_at=record.created_at, phash=record.phash, caption_state=record.caption_state,
                     caption_error=record.caption_error)
    if with_embedding and record.vector is not None:
        image.embedding.extend(record.vector.tolist())
    return image


def indexed_of(done: Indexed) -> pb.IndexedImage:
    return pb.IndexedImage(image=image_of(done.record), created=done.created)


def hit_of(hit: Hit) -> pb.Hit:
    return pb.Hit(image=image_of(hit.record), score=hit.score)


def text_hit_of(hit: TextHit) -> pb.TextHit:
    return pb.TextHit(image=image_of(hit.record), score=hit.score, clip_score=hit.clip_score, caption_match=hit.caption_match,
                      keyword_score=hit.keyword_score, rank_score=hit.rank_score)
