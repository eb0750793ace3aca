"""Rebuilding a collection made by an older version with the current schema (`image-search migrate`):
the caption queue's fields (records keep their captions: state done, or none where a record has no
caption), tenants (records made before them are the default tenant's, keyed by their id as before),
the declared filter fields of GATEWAY_FILTER_FIELDS (filled from each record's metadata; a value that
does not have the declared type is kept in the metadata and counts as missing for the typed field,
which the log reports) and, where Milvus has full-text search, the BM25 caption field. Copy every
record (vectors and thumbnails as stored, no model runs) aside into
``<name>_migrating``, drop the collection, create it again with the field and copy the records back.
Milvus Lite cannot rename collections (UNIMPLEMENTED), hence the copy back. Writes made meanwhile
would be lost: writers pause. Blocking calls (run in a worker thread), never retried: a run stopped
part-way is resumed by the next (stopped before the drop it starts over; after it, it refills from
the copy, and gateways refuse to start until then)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ...core.declared import fits
from ...core.errors import unavailable
from ...core.protocols import EmbeddingModel
from .schema import KEYWORDS, IndexType, collection_model, create_collection, fields, from_entity, outdated, row

log = logging.getLogger("gateway.store")
BATCH = 500


def staged(name: str) -> str:
    return f"{name}_migrating"


def current(client: Any, name: str, full_text: bool, declared: Mapping[str, str]) -> bool:
    """Whether a collection has the current schema (the BM25 field only where Milvus has full-text search)
    with the declared fields."""
    return outdated(client, name, declared) is None and (KEYWORDS in fields(client, name) or not full_text)


def interrupted(client: Any, name: str, full_text: bool, declared: Mapping[str, str]) -> bool:
    """A migration stopped after copying the records aside: the collection gone, or already rebuilt
    with the current schema but not yet refilled."""
    return client.has_collection(staged(name)) and (
        not client.has_collection(name) or current(client, name, full_text, declared))


def migrate(client: Any, name: str, dim: int, index_type: IndexType, consistency: str, full_text: bool,
            model: EmbeddingModel | None, declared: Mapping[str, str], partitions: int | None) -> int:
    """The records in the rebuilt collection, which records the model the old one recorded (``model``, this
    gateway's, where it recorded none; the gateway refused a collection of another model before this)."""
    aside = staged(name)
    if not interrupted(client, name, full_text, declared):
        if client.has_collection(aside):
            client.drop_collection(aside)  # a copy stopped before the drop: start over
        model = collection_model(client, name) or model
        create_collection(client, aside, dim, index_type, False, consistency, model, declared, partitions)
        copy(client, name, aside, declared)
        client.drop_collection(name)
    else:
        model = collection_model(client, aside) or model  # the copy aside kept what the original recorded
        if client.has_collection(name):
            client.drop_collection(name)  # rebuilt but not fully refilled
    create_collection(client, name, dim, index_type, full_text, consistency, model, declared, partitions)
    copied = copy(client, aside, name, declared)
    client.drop_collection(aside)
    client.load_collection(name)
    log.info("migrated collection %s: %d records, caption queue fields, tenants, declared fields %s%s", name, copied,
             ", ".join(declared) or "none", ", BM25 captions" * full_text)
    return copied


def copy(client: Any, source: str, target: str, declared: Mapping[str, str]) -> int:
    """Every record of one collection into another (empty) one, checked by count; fields the source
    lacks get their defaults (schema.from_entity), declared fields their values from the metadata."""
    client.load_collection(source)
    stored = [f for f in fields(client, source) if f != KEYWORDS]  # BM25 vectors are derived, never written
    iterator = client.query_iterator(source, batch_size=BATCH, filter='id != ""', consistency_level="Strong",
                                     output_fields=stored)
    copied = unfit = 0
    try:
        while page := iterator.next():
            records = [from_entity(dict(r)) for r in page]
            client.insert(target, [row(r, declared) for r in records])
            copied += len(page)
            unfit += sum(key in r.metadata and not fits(kind, r.metadata[key]) for r in records for key, kind in declared.items())
    finally:
        iterator.close()
    if unfit:
        log.warning("%s: %d metadata values do not have their declared type: kept in the metadata, missing for the"
                    " typed field (a declared-field filter does not find them)", target, unfit)
    client.flush(target)
    client.load_collection(target)
    counted = int(client.query(target, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"])
    if counted != copied:
        raise unavailable(f"migration copied {copied} records into {target!r}, which holds {counted}")
    return copied
