"""The collection's schema: its fields and indexes, records <-> rows, and the checks a collection made
earlier must pass before it is served."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import numpy as np

from ...core.errors import ErrorKind, ServiceError
from ...core.protocols import EmbeddingModel
from ...core.records import CaptionJob, ImageRecord

log = logging.getLogger("gateway.store")
QUEUE_FIELDS = ["caption_state", "caption_error", "caption_attempts", "lease_owner", "lease_until", "retry_at"]
FIELDS = ["caption", "source", "metadata", "created_at", "phash", *QUEUE_FIELDS]  # what reads return beside the id
KEYWORDS = "caption_words"  # the BM25 sparse vector Milvus derives from each caption
IndexType = Literal["FLAT", "IVF_FLAT", "HNSW"]
MAX_CAPTION_CHARS, MAX_SOURCE_CHARS, MAX_THUMBNAIL_CHARS, MAX_ERROR_CHARS = 4096, 1024, 65535, 1024


def row(record: ImageRecord) -> dict:
    job = record.job
    return {"id": record.id, "vector": np.asarray(record.vector, np.float32).tolist(), "caption": record.caption,
            "source": record.source, "metadata": record.metadata, "created_at": record.created_at,
            "phash": record.phash, "thumbnail": record.thumbnail, "caption_state": record.caption_state,
            "caption_error": record.caption_error[:MAX_ERROR_CHARS], "caption_attempts": job.attempts,
            "lease_owner": job.lease_owner, "lease_until": job.lease_until_ms, "retry_at": job.retry_at_ms}


def from_entity(entity: dict) -> ImageRecord:
    vector = entity.get("vector")
    caption = entity.get("caption", "")
    job = CaptionJob(int(entity.get("caption_attempts", 0)), entity.get("lease_owner", ""),
                     int(entity.get("lease_until", 0)), int(entity.get("retry_at", 0)))
    return ImageRecord(entity["id"], caption, entity.get("source", ""), entity.get("metadata") or {},
                       int(entity.get("created_at", 0)), entity.get("phash", ""),
                       None if vector is None else np.asarray(vector, np.float32), entity.get("thumbnail", ""),
                       # rows copied from a collection made before the caption queue have no state
                       entity.get("caption_state") or ("done" if caption else "none"), entity.get("caption_error", ""), job)


def create_collection(client: Any, name: str, dim: int, index_type: IndexType, full_text: bool, consistency: str,
                      model: EmbeddingModel | None) -> None:
    """A collection with the gateway's schema; ``full_text``: captions analysed into BM25 vectors; ``model``:
    the checkpoint whose vectors it will hold, recorded in its description (collection_model)."""
    from pymilvus import DataType, Function, FunctionType

    description = json.dumps({"embedding_model": model.fingerprint, "embedding_source": model.source}) if model else ""
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    analysed = {"enable_analyzer": True} if full_text else {}
    schema.add_field("caption", DataType.VARCHAR, max_length=MAX_CAPTION_CHARS, **analysed)
    schema.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_CHARS)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("created_at", DataType.INT64)
    schema.add_field("phash", DataType.VARCHAR, max_length=32)
    schema.add_field("thumbnail", DataType.VARCHAR, max_length=MAX_THUMBNAIL_CHARS)
    schema.add_field("caption_state", DataType.VARCHAR, max_length=16)
    schema.add_field("caption_error", DataType.VARCHAR, max_length=MAX_ERROR_CHARS)
    schema.add_field("caption_attempts", DataType.INT64)
    schema.add_field("lease_owner", DataType.VARCHAR, max_length=128)
    schema.add_field("lease_until", DataType.INT64)
    schema.add_field("retry_at", DataType.INT64)
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


def missing_queue_fields(client: Any, name: str) -> list[str]:
    """The caption queue's fields a collection made before it lacks (`image-search migrate` adds them)."""
    have = fields(client, name)
    return [f for f in QUEUE_FIELDS if f not in have]


def collection_model(client: Any, name: str) -> EmbeddingModel | None:
    """The checkpoint a collection records (None: made before collections recorded it)."""
    try:
        recorded = json.loads(client.describe_collection(name).get("description") or "{}")
    except ValueError:
        return None
    if not isinstance(recorded, dict) or "embedding_model" not in recorded:
        return None
    return EmbeddingModel(str(recorded["embedding_model"]), str(recorded.get("embedding_source", "")))


def check_model(client: Any, name: str, model: EmbeddingModel | None, where: str) -> None:
    """MISCONFIGURED when the collection holds another checkpoint's vectors: searching them with this one's
    would rank by two embedding spaces at once."""
    recorded = collection_model(client, name)
    if recorded is None or model is None:
        if model is not None:
            log.warning("collection %s at %s does not record which model made its vectors (made before collections"
                        " recorded it): serving it with %s", name, where, model.source)
        return
    if recorded.fingerprint != model.fingerprint:
        raise ServiceError(ErrorKind.MISCONFIGURED, (
            f"collection {name!r} at {where} holds vectors made by {recorded.source} ({recorded.fingerprint}), but this"
            f" gateway's CLIP was exported from {model.source} ({model.fingerprint}): their embeddings are not comparable."
            " Serve the repository exported from the collection's model, or give this model its own collection"
            " (GATEWAY_COLLECTION) and index the images into it again"))


def check_dimension(client: Any, name: str, dim: int, where: str) -> None:
    have = int(fields(client, name).get("vector", {}).get("params", {}).get("dim", -1))
    if have != dim:
        raise ServiceError(
            ErrorKind.MISCONFIGURED, f"collection {name!r} at {where} holds {have}-d vectors but the models give"
            f" {dim}-d embeddings: use another GATEWAY_COLLECTION or re-index with the original model")
