"""The collection's schema: its fields and indexes, records <-> rows, and the checks a collection made
earlier must pass before it is served."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np

from ...core.errors import ErrorKind, ServiceError
from ...core.records import ImageRecord

log = logging.getLogger("gateway.store")
FIELDS = ["caption", "source", "metadata", "created_at", "phash"]  # what reads return beside the id
KEYWORDS = "caption_words"  # the BM25 sparse vector Milvus derives from each caption
IndexType = Literal["FLAT", "IVF_FLAT", "HNSW"]
MAX_CAPTION_CHARS, MAX_SOURCE_CHARS, MAX_THUMBNAIL_CHARS = 4096, 1024, 65535


def row(record: ImageRecord) -> dict:
    return {"id": record.id, "vector": np.asarray(record.vector, np.float32).tolist(), "caption": record.caption,
            "source": record.source, "metadata": record.metadata, "created_at": record.created_at,
            "phash": record.phash, "thumbnail": record.thumbnail}


def from_entity(entity: dict) -> ImageRecord:
    vector = entity.get("vector")
    return ImageRecord(entity["id"], entity.get("caption", ""), entity.get("source", ""), entity.get("metadata") or {},
                       int(entity.get("created_at", 0)), entity.get("phash", ""),
                       None if vector is None else np.asarray(vector, np.float32), entity.get("thumbnail", ""))


def create_collection(client: Any, name: str, dim: int, index_type: IndexType, full_text: bool, consistency: str) -> None:
    """A collection with the gateway's schema; ``full_text``: captions analysed into BM25 vectors."""
    from pymilvus import DataType, Function, FunctionType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    analysed = {"enable_analyzer": True} if full_text else {}
    schema.add_field("caption", DataType.VARCHAR, max_length=MAX_CAPTION_CHARS, **analysed)
    schema.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_CHARS)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("created_at", DataType.INT64)
    schema.add_field("phash", DataType.VARCHAR, max_length=32)
    schema.add_field("thumbnail", DataType.VARCHAR, max_length=MAX_THUMBNAIL_CHARS)
    index = client.prepare_index_params()
    params = {"M": 16, "efConstruction": 200} if index_type == "HNSW" else ({"nlist": 128} if index_type == "IVF_FLAT" else {})
    index.add_index("vector", index_type=index_type, metric_type="COSINE", params=params)
    if full_text:
        schema.add_field(KEYWORDS, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function("caption_bm25", FunctionType.BM25, ["caption"], [KEYWORDS]))
        index.add_index(KEYWORDS, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection(name, schema=schema, index_params=index, consistency_level=consistency)
    log.info("created collection %s (%d-d, %s%s)", name, dim, index_type, ", BM25 captions" * full_text)


def fields(client: Any, name: str) -> dict[str, dict]:
    return {f["name"]: f for f in client.describe_collection(name)["fields"]}


def check_dimension(client: Any, name: str, dim: int, where: str) -> None:
    have = int(fields(client, name).get("vector", {}).get("params", {}).get("dim", -1))
    if have != dim:
        raise ServiceError(
            ErrorKind.MISCONFIGURED, f"collection {name!r} at {where} holds {have}-d vectors but the models give"
            f" {dim}-d embeddings: use another GATEWAY_COLLECTION or re-index with the original model")
