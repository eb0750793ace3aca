"""The collection's schema: its fields and indexes, records <-> rows, and the checks a collection made
earlier must pass before it is served."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ...core.declared import MAX_KEYWORD_CHARS, MAX_LIST_ITEMS, fits
from ...core.errors import ErrorKind, ServiceError
from ...core.protocols import EmbeddingModel
from ...core.records import DEFAULT_TENANT, CaptionJob, ImageRecord

log = logging.getLogger("gateway.store")
KEY, TENANT = "key", "tenant"  # the primary key (gateway.core.records.record_key) and the tenant's field
QUEUE_FIELDS = ["caption_state", "caption_error", "caption_attempts", "lease_owner", "lease_until", "retry_at"]
FIELDS = ["id", TENANT, "caption", "source", "metadata", "created_at", "phash", *QUEUE_FIELDS]  # what reads return
KEYWORDS = "caption_words"  # the BM25 sparse vector Milvus derives from each caption
DECLARED_PREFIX = "meta_"  # a declared filter field's typed copy of metadata.<key> (gateway.core.declared)
IndexType = Literal["FLAT", "IVF_FLAT", "HNSW"]
MAX_CAPTION_CHARS, MAX_SOURCE_CHARS, MAX_THUMBNAIL_CHARS, MAX_ERROR_CHARS = 4096, 1024, 65535, 1024
MAX_KEYWORD_BYTES = 4 * MAX_KEYWORD_CHARS  # Milvus counts a VARCHAR's length in UTF-8 bytes
# A declared field holds its type's value, or this where the record has none (Milvus 2.3-2.4 has no nulls);
# no value an upload may give is one of these (gateway.core.declared.fits), and expressions.py keeps them
# out of every condition's result where the condition's meaning wants that.
MISSING: dict[str, object] = {"keyword": "", "integer": -2 ** 63, "float": -sys.float_info.max, "boolean": 0,
                              "keyword_list": []}
BOOLEAN = {False: 1, True: 2}  # booleans as INT8 (0: missing)


def column(key: str) -> str:
    return DECLARED_PREFIX + key


def stored(kind: str, value: object) -> object:
    """A metadata value as its declared field holds it (MISSING where it has none of the type)."""
    if value is None or not fits(kind, value):
        return MISSING[kind]
    if kind == "boolean":
        return BOOLEAN[bool(value)]
    return float(value) if kind == "float" else value  # type: ignore[arg-type]


def row(record: ImageRecord, declared: Mapping[str, str]) -> dict:
    job = record.job
    typed = {column(key): stored(kind, record.metadata.get(key)) for key, kind in declared.items()}
    return {KEY: record.key, "id": record.id, TENANT: record.tenant, "vector": np.asarray(record.vector, np.float32).tolist(),
            "caption": record.caption, "source": record.source, "metadata": record.metadata,
            "created_at": record.created_at, "phash": record.phash, "thumbnail": record.thumbnail,
            "caption_state": record.caption_state, "caption_error": record.caption_error[:MAX_ERROR_CHARS],
            "caption_attempts": job.attempts, "lease_owner": job.lease_owner, "lease_until": job.lease_until_ms,
            "retry_at": job.retry_at_ms, **typed}


def from_entity(entity: dict) -> ImageRecord:
    vector = entity.get("vector")
    caption = entity.get("caption", "")
    job = CaptionJob(int(entity.get("caption_attempts", 0)), entity.get("lease_owner", ""),
                     int(entity.get("lease_until", 0)), int(entity.get("retry_at", 0)))
    return ImageRecord(entity["id"], caption, entity.get("source", ""), entity.get("metadata") or {},
                       int(entity.get("created_at", 0)), entity.get("phash", ""),
                       None if vector is None else np.asarray(vector, np.float32), entity.get("thumbnail", ""),
                       # rows copied from a collection made before the caption queue have no state
                       entity.get("caption_state") or ("done" if caption else "none"), entity.get("caption_error", ""), job,
                       entity.get(TENANT) or DEFAULT_TENANT)  # (and those made before tenants, no tenant)


def create_collection(client: Any, name: str, dim: int, index_type: IndexType, full_text: bool, consistency: str,
                      model: EmbeddingModel | None, declared: Mapping[str, str], partitions: int | None) -> None:
    """A collection with the gateway's schema; ``full_text``: captions analysed into BM25 vectors; ``model``:
    the checkpoint whose vectors it will hold, recorded in its description (collection_model); ``declared``:
    the declared filter fields, each a typed field; ``partitions``: the tenant is a partition key over that
    many partitions (a tenant's search reads only its own; None: an ordinary field, as on Milvus Lite, which
    refuses every filter on a collection with a partition key). Scalar fields that are filtered on get the
    index Milvus chooses for their type, where it has one (add_scalar_indexes)."""
    from pymilvus import DataType, Function, FunctionType

    description = json.dumps({"embedding_model": model.fingerprint, "embedding_source": model.source}) if model else ""
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
    schema.add_field(KEY, DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("id", DataType.VARCHAR, max_length=32)
    schema.add_field(TENANT, DataType.VARCHAR, max_length=64, is_partition_key=partitions is not None)
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
    for key, kind in declared.items():
        if kind == "keyword":
            schema.add_field(column(key), DataType.VARCHAR, max_length=MAX_KEYWORD_BYTES)
        elif kind == "keyword_list":
            schema.add_field(column(key), DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_LIST_ITEMS,
                             max_length=MAX_KEYWORD_BYTES)
        else:
            schema.add_field(column(key), {"integer": DataType.INT64, "float": DataType.DOUBLE, "boolean": DataType.INT8}[kind])
    index = client.prepare_index_params()
    params = {"M": 16, "efConstruction": 200} if index_type == "HNSW" else ({"nlist": 128} if index_type == "IVF_FLAT" else {})
    index.add_index("vector", index_type=index_type, metric_type="COSINE", params=params)
    if full_text:
        schema.add_field(KEYWORDS, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function("caption_bm25", FunctionType.BM25, ["caption"], [KEYWORDS]))
        index.add_index(KEYWORDS, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    extra = {"num_partitions": partitions} if partitions is not None else {}
    client.create_collection(name, schema=schema, index_params=index, consistency_level=consistency, **extra)
    add_scalar_indexes(client, name, [TENANT, *(column(key) for key in declared)])
    log.info("created collection %s (%d-d, %s%s; tenants %s; declared fields %s)", name, dim, index_type,
             ", BM25 captions" * full_text, f"a partition key over {partitions} partitions" if partitions else "a field",
             ", ".join(f"{k} ({v})" for k, v in declared.items()) or "none")


def add_scalar_indexes(client: Any, name: str, names: list[str]) -> None:
    """The index Milvus picks for each field's type (a Trie or STL_SORT on 2.3 and Lite, INVERTED on 2.4+),
    where it has one: arrays get none before 2.4, and are then filtered field by field."""
    from pymilvus import MilvusException

    client.release_collection(name)  # (indexes are added to a released collection; _connect loads it)
    for field in names:
        params = client.prepare_index_params()
        params.add_index(field, index_name=field)
        try:
            client.create_index(name, params)
        except MilvusException as exc:
            log.info("collection %s: no scalar index on %s (%s)", name, field, exc.message)


def scalar_indexes(client: Any, name: str) -> dict[str, str]:
    """The indexed scalar fields and their index types ("" where Milvus does not say)."""
    indexed = {}
    for index_name in client.list_indexes(name):
        described = client.describe_index(name, index_name)
        if described.get("field_name") not in ("vector", KEYWORDS):
            indexed[described["field_name"]] = str(described.get("index_type", ""))
    return indexed


def declared_fields(client: Any, name: str) -> dict[str, str]:
    """The declared filter fields a collection keeps, by metadata key, with their types."""
    from pymilvus import DataType

    kinds = {DataType.VARCHAR: "keyword", DataType.INT64: "integer", DataType.DOUBLE: "float", DataType.INT8: "boolean",
             DataType.ARRAY: "keyword_list"}
    return {field[len(DECLARED_PREFIX):]: kinds[field_info["type"]] for field, field_info in fields(client, name).items()
            if field.startswith(DECLARED_PREFIX)}


def outdated(client: Any, name: str, declared: Mapping[str, str]) -> str | None:
    """Why a collection made by an earlier version, or with other declared fields, cannot be served as it is
    (`image-search migrate` rebuilds it), None when it can."""
    have = fields(client, name)
    if missing := [f for f in QUEUE_FIELDS if f not in have]:
        return f"was made before the caption queue (it has no {', '.join(missing)})"
    if TENANT not in have or KEY not in have:
        return "was made before tenants (it has no tenant field)"
    if (kept := declared_fields(client, name)) != dict(declared):
        def listed(fields_: Mapping[str, str]) -> str:
            return ", ".join(f"{k}: {v}" for k, v in sorted(fields_.items())) or "none"
        return (f"keeps the declared filter fields {{{listed(kept)}}}, not GATEWAY_FILTER_FIELDS's {{{listed(declared)}}}"
                " (or set GATEWAY_FILTER_FIELDS to the collection's)")
    return None


def fields(client: Any, name: str) -> dict[str, dict]:
    return {f["name"]: f for f in client.describe_collection(name)["fields"]}


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
