"""The VectorStore protocol on one Milvus collection of images, over pymilvus's MilvusClient.

Records are keyed by their tenant and a content hash of the image bytes (gateway.core.records.record_key),
so writing the same image again into a tenant replaces the record instead of duplicating it (upsert:
idempotent, retry-safe). Every read is scoped to its tenant (on a server the tenant is the partition key:
a tenant's search reads its own partition). Ids and filters reach Milvus only as expressions.py renders
them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ...core.consistency import read_after, wrote
from ...core.errors import ErrorKind, ServiceError, unavailable
from ...core.filters import Condition
from ...core.protocols import CaptionQueueStats, EmbeddingModel, Feature, StoreCapabilities
from ...core.records import ImageRecord
from . import migration
from .connection import (
    STARTUP_DEADLINE_S,
    Calls,
    WritesApart,
    has_full_text,
    is_lite,
    open_client,
    upsert_places_partition_keys,
)
from .expressions import captions_due, in_caption_state, keys_in, render, scoped
from .flusher import BulkFlusher
from .schema import (
    FIELDS,
    KEY,
    KEYWORDS,
    TENANT,
    IndexType,
    check_dimension,
    check_model,
    column,
    create_collection,
    fields,
    from_entity,
    outdated,
    row,
    scalar_indexes,
)

log = logging.getLogger("gateway.store")
MAX_WINDOW = 16384  # Milvus refuses queries with offset + limit above this (its queryNode.maxQueryResultWindow)


@dataclass(frozen=True)
class MilvusOptions:
    """The store's settings (gateway.settings.Settings has their defaults and meaning)."""

    uri: str  # a Milvus Lite file, or http://host:19530
    token: str
    collection: str
    index_type: Literal["auto", "FLAT", "IVF_FLAT", "HNSW"]  # auto: FLAT on Lite, HNSW on servers
    timeout_s: float
    hnsw_ef: int
    read_consistency: Literal["Session", "Strong"]
    flush_after_rows: int
    flush_idle_s: float
    declared: dict[str, str]  # declared filter fields: metadata key -> type (gateway.core.declared)
    tenant_partitions: int  # partitions of the tenant partition key on a server


def once(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """Each record once: while two writers race to rewrite one record as a delete and an insert (the split
    writes of Milvus 2.3 with tenants), both rows may stand until its next rewrite."""
    return list({r.key: r for r in records}.values())


def once_scored(hits: list[tuple[ImageRecord, float]]) -> list[tuple[ImageRecord, float]]:
    """Hits, best first, each record once (see ``once``)."""
    kept: dict[str, tuple[ImageRecord, float]] = {}
    for record, score in hits:
        kept.setdefault(record.key, (record, score))
    return list(kept.values())


class MilvusStore:
    def __init__(self, options: MilvusOptions, dim: int, model: EmbeddingModel | None = None):
        """``model``: the checkpoint whose vectors this gateway writes and searches with; a collection that
        records another one is refused (schema.check_model), a new one records it."""
        self.options, self.dim, self.name, self.model = options, dim, options.collection, model
        self.lite = is_lite(options.uri)
        self.calls = Calls(options.timeout_s, WritesApart() if self.lite else None)
        self.client: Any = None  # pymilvus.MilvusClient once started
        self.index_type: IndexType = options.index_type if options.index_type != "auto" else ("FLAT" if self.lite else "HNSW")
        self.flusher = BulkFlusher(self._flush, options.flush_after_rows, options.flush_idle_s, self.name)
        self.full_text = False  # whether this Milvus has BM25 full-text search
        self.schema_current = False  # whether the collection has the current schema (else: `image-search migrate`)
        self.caption_words = False  # whether any stored caption is not empty (BM25 needs one)
        self.split_writes = False  # upserts written as a delete and an insert (connection.upsert_places_partition_keys)
        self.partitions = None if self.lite else options.tenant_partitions  # Lite cannot filter a partition-key collection
        self.indexed: dict[str, str] = {}  # scalar fields with an index, and its type
        self.capabilities = self._capabilities(Feature(False, "not connected"))

    def read(self, strong: bool = False) -> dict[str, Any]:
        """The consistency every read passes. Session (the default) reads at the timestamp of this
        client's last write, which pymilvus records from each write's reply; Strong waits for a server
        time tick (~200 ms); a call with another replica's consistency token reads at the later of the
        token and this client's own last write (a wait only until the server has passed the token)."""
        if strong or self.options.read_consistency == "Strong":
            return {"consistency_level": "Strong"}
        after = read_after()
        if after is None:
            return {"consistency_level": "Session"}
        return {"consistency_level": "Customized", "guarantee_timestamp": max(after, self._session_timestamp())}

    def _session_timestamp(self) -> int:
        """This client's last write to the collection (0: none, and always 0 on Milvus Lite, whose replies
        carry no timestamps). pymilvus keeps it per server address and has no public call for either."""
        from pymilvus.client import ts_utils

        return int(ts_utils.get_collection_ts(self.name, self.client._get_connection().server_address) or 0)

    def _report_write(self) -> None:
        if timestamp := self._session_timestamp():
            wrote(timestamp)

    def _capabilities(self, keyword_search: Feature) -> StoreCapabilities:
        vectors = {"FLAT": "exact (FLAT)", "HNSW": f"approximate (HNSW, ef {self.options.hnsw_ef} or k)",
                   "IVF_FLAT": "approximate (IVF_FLAT)"}[self.index_type]

        def index(field: str) -> str:
            if field not in self.indexed:
                return "not indexed"
            return f"{self.indexed[field]} index" if self.indexed[field] else "indexed"
        tenants = (f"a partition key over {self.partitions} partitions, {index(TENANT)}" if self.partitions
                   else f"a filtered field, {index(TENANT)} (Milvus Lite has no partition keys)")
        declared = "typed fields: " + ", ".join(f"{key} {index(column(key))}" for key in self.options.declared)
        return StoreCapabilities(keyword_search, MAX_WINDOW, vectors, tenants, declared)

    @property
    def startup_deadline(self) -> float:
        return max(self.options.timeout_s, STARTUP_DEADLINE_S)

    async def start(self) -> None:
        """Connect, create the collection if needed (index building and loading can take a while on a
        server), check its dimension, load it."""
        await self.calls("connect", self._connect, False, deadline=self.startup_deadline)

    def _connect(self, migrating: bool) -> None:
        self.client, version = open_client(self.options.uri, self.options.token, self.startup_deadline)
        self.full_text = has_full_text(version)
        self.split_writes = self.partitions is not None and not upsert_places_partition_keys(version)
        if self.split_writes:  # rewrites are a delete and an insert: this process's reads never fall between them
            self.calls.apart = self.calls.apart or WritesApart()
        declared = self.options.declared
        if migration.interrupted(self.client, self.name, self.full_text, declared):
            self.capabilities = self._capabilities(Feature(
                False, f"an interrupted migration left the records in {migration.staged(self.name)!r}"))
            if migrating:
                return
            raise ServiceError(ErrorKind.MISCONFIGURED, (
                f"an `image-search migrate` of collection {self.name!r} was interrupted and its records are in"
                f" {migration.staged(self.name)!r}: run `image-search migrate` again to finish it"))
        if self.client.has_collection(self.name):
            check_dimension(self.client, self.name, self.dim, self.options.uri)
            check_model(self.client, self.name, self.model, self.options.uri)
        else:
            create_collection(self.client, self.name, self.dim, self.index_type, self.full_text, self.options.read_consistency,
                              self.model, declared, self.partitions)
        self.schema_current = migration.current(self.client, self.name, self.full_text, declared)
        if (why := outdated(self.client, self.name, declared)) and not migrating:
            raise ServiceError(ErrorKind.MISCONFIGURED, (
                f"collection {self.name!r} {why}: run `image-search migrate` once, with writers paused (records,"
                " vectors and captions are kept)"))
        self.indexed = scalar_indexes(self.client, self.name)
        self.client.load_collection(self.name)
        if KEYWORDS in fields(self.client, self.name):
            keywords = Feature(True)
            self.caption_words = bool(self.client.query(self.name, filter='caption != ""', output_fields=["id"], limit=1,
                                                        **self.read()))
        elif not self.full_text:
            keywords = Feature(False, f"Milvus {version} has no BM25 full-text search (2.5 and later have it); text"
                               " search re-ranks CLIP's candidates by caption words")
        else:
            keywords = Feature(False, f"collection {self.name!r} was created before keyword search; run `image-search"
                               " migrate` (writes paused) to rebuild it with a BM25 caption field")
        self.capabilities = self._capabilities(keywords)
        if not keywords.on:
            log.warning("keyword search %s", keywords.describe())

    async def migrate(self) -> int | None:
        await self.calls("connect", self._connect, True, deadline=self.startup_deadline)
        declared = self.options.declared
        if self.schema_current and not migration.interrupted(self.client, self.name, self.full_text, declared):
            return None
        try:
            copied = await asyncio.to_thread(migration.migrate, self.client, self.name, self.dim, self.index_type,
                                             self.options.read_consistency, self.full_text, self.model, declared,
                                             self.partitions)
        except ServiceError:
            raise
        except Exception as exc:
            raise unavailable(f"migration of {self.name!r} stopped: {exc}; run it again to resume it") from exc
        self.schema_current = True
        self.indexed = await self.calls("migrate", scalar_indexes, self.client, self.name)
        self.capabilities = self._capabilities(Feature(True) if self.full_text else self.capabilities.keyword_search)
        return copied

    async def upsert(self, records: list[ImageRecord], new: bool = False) -> None:
        rows = [row(r, self.options.declared) for r in records]
        if not self.split_writes:
            await self.calls("upsert", self.client.upsert, self.name, rows, write=True)
        elif new:  # nothing to replace: an insert places each row in its tenant's partition
            await self.calls("upsert", self.client.insert, self.name, rows)
        else:
            await self.calls("upsert", self._rewrite, rows, write=True)
        self._report_write()
        self.caption_words = self.caption_words or any(r.caption.strip() for r in records)
        self.flusher.written(len(records))

    def _rewrite(self, rows: list[dict]) -> None:
        self.client.delete(self.name, ids=[r[KEY] for r in rows])
        self.client.insert(self.name, rows)

    async def _flush(self) -> None:
        await self.calls("flush", self.client.flush, self.name, deadline=STARTUP_DEADLINE_S, write=True)

    async def get(self, tenant: str, ids: list[str], with_vectors: bool = False, strong: bool = False
                  ) -> list[ImageRecord]:
        if not ids:
            return []
        if strong:  # the read that decides a 404: an unloaded collection is UNAVAILABLE, not empty
            await self.calls("get", self._check_loaded)
        rows = await self.calls("get", self.client.query, self.name, filter=keys_in(tenant, ids),
                                output_fields=[*FIELDS] + (["vector"] if with_vectors else []), **self.read(strong))
        return [from_entity(dict(row)) for row in rows]

    async def thumbnail(self, tenant: str, record_id: str, strong: bool = False) -> str | None:
        """The stored thumbnail (base64 JPEG) of one of the tenant's images, None when it has no such image."""
        if strong:
            await self.calls("thumbnail", self._check_loaded)
        rows = await self.calls("thumbnail", self.client.query, self.name, filter=keys_in(tenant, [record_id]),
                                output_fields=["thumbnail"], **self.read(strong))
        return rows[0]["thumbnail"] if rows else None

    async def delete(self, tenant: str, record_id: str) -> None:
        await self.calls("delete", self._delete, keys_in(tenant, [record_id]), write=True)
        self._report_write()

    def _delete(self, expression: str) -> None:
        self.client.delete(self.name, filter=expression)
        if self.options.read_consistency == "Session" and not self.lite:
            # A Milvus 2.3 server answers a delete without its timestamp, so pymilvus's Session timestamp
            # stays at the last upsert and the deleted row stays readable. A timestamp allocated now is
            # later than the delete: make it this collection's last write. pymilvus has no public call
            # for either (MilvusClient exposes neither AllocTimestamp nor the Session timestamps).
            from pymilvus.client import ts_utils

            connection = self.client._get_connection()
            ts_utils.update_collection_ts(self.name, connection.alloc_timestamp(), connection.server_address)

    def _count(self, expression: str, strong: bool = False) -> int:
        rows = self.client.query(self.name, filter=expression, output_fields=["count(*)"], **self.read(strong))
        return int(rows[0]["count(*)"])

    async def list_records(self, tenant: str, limit: int, offset: int) -> list[ImageRecord]:
        rows = await self.calls("list", self.client.query, self.name, filter=scoped(tenant, f'{KEY} != ""'),
                                output_fields=FIELDS, limit=limit, offset=offset, **self.read())
        return sorted(once(from_entity(dict(row)) for row in rows), key=lambda r: r.id)

    def _scan(self, expression: str, output_fields: list[str], batch_size: int = 1000) -> list[dict]:
        """Every row of the expression, through a query iterator (no offset window)."""
        iterator = self.client.query_iterator(self.name, batch_size=batch_size, filter=expression,
                                              output_fields=output_fields, **self.read())
        rows: list[dict] = []
        try:
            while page := iterator.next():
                rows.extend(page)
        finally:
            iterator.close()
        return rows

    async def all_records(self, tenant: str | None) -> list[ImageRecord]:
        rows = await self.calls("export", self._scan, scoped(tenant, f'{KEY} != ""'), [*FIELDS, "vector"],
                                deadline=self.startup_deadline)
        return [from_entity(dict(row)) for row in rows]

    async def count(self, tenant: str | None) -> int:
        return await self.calls("count", self._count, scoped(tenant))

    async def ids(self, tenant: str, conditions: Sequence[Condition] = ()) -> list[str]:
        rows = await self.calls("scan", self._scan, scoped(tenant, render(conditions) or f'{KEY} != ""'), ["id"],
                                deadline=self.startup_deadline)
        return [found["id"] for found in rows]

    async def tenants(self) -> dict[str, int]:
        """A scan of the tenant field (Milvus has no grouped count before 2.6): 6-7 s at 1M records on 2 cores."""
        rows = await self.calls("tenants", self._scan, f'{KEY} != ""', [TENANT], 16384, deadline=self.startup_deadline)
        counts: dict[str, int] = {}
        for found in rows:
            counts[found[TENANT]] = counts.get(found[TENANT], 0) + 1
        return counts

    async def delete_tenant(self, tenant: str) -> int:
        def delete() -> int:
            count = self._count(scoped(tenant), strong=True)  # (Milvus 2.3 answers a delete without a count)
            self._delete(scoped(tenant))
            return count

        deleted = await self.calls("delete tenant", delete, write=True, deadline=self.startup_deadline)
        self._report_write()
        return deleted

    async def captions_due(self, limit: int, now_ms: int) -> list[ImageRecord]:
        rows = await self.calls("caption queue", self.client.query, self.name, filter=captions_due(now_ms), limit=limit,
                                output_fields=[*FIELDS, "vector", "thumbnail"], consistency_level="Strong")
        return [from_entity(dict(row)) for row in rows]

    async def caption_queue(self) -> CaptionQueueStats:
        def stats() -> CaptionQueueStats:
            oldest = self.client.query(self.name, filter=in_caption_state("pending"), output_fields=["created_at"],
                                       limit=MAX_WINDOW, **self.read())
            return CaptionQueueStats(self._count(in_caption_state("pending")), self._count(in_caption_state("failed")),
                                     min((int(r["created_at"]) for r in oldest), default=None))

        return await self.calls("caption queue", stats)

    async def search(self, tenant: str | None, vectors: np.ndarray, k: int, conditions: Sequence[Condition] = ()
                     ) -> list[list[tuple[ImageRecord, float]]]:
        params = {"metric_type": "COSINE", "params": {"ef": max(k, self.options.hnsw_ef)} if self.index_type == "HNSW" else {}}
        hits = await self.calls("search", self.client.search, self.name, data=np.asarray(vectors, np.float32).tolist(),
                                anns_field="vector", limit=k, filter=scoped(tenant, render(conditions)),
                                output_fields=FIELDS, search_params=params, **self.read())
        return [once_scored([(from_entity(hit["entity"]), float(hit["distance"])) for hit in row]) for row in hits]

    async def search_captions(self, tenant: str, text: str, k: int, conditions: Sequence[Condition] = ()
                              ) -> list[tuple[ImageRecord, float]]:
        """The tenant's k records whose captions best match the text's words (BM25), with their vectors."""
        if not self.caption_words:
            return []  # Milvus refuses BM25 queries while no caption holds a word (see _search_captions)
        (hits,) = await self.calls("keyword search", self._search_captions, text, k, scoped(tenant, render(conditions)))
        return once_scored([(from_entity(hit["entity"]), float(hit["distance"])) for hit in hits])

    def _search_captions(self, text: str, k: int, expression: str) -> list:
        from pymilvus import MilvusException

        try:
            return self.client.search(self.name, data=[text], anns_field=KEYWORDS, limit=k, filter=expression,
                                      output_fields=[*FIELDS, "vector"], search_params={"metric_type": "BM25"},
                                      **self.read())
        except MilvusException as exc:
            # Milvus computes BM25 with the average caption length; with no caption words stored yet (an
            # empty collection, or captions off) that is 0/0 and it refuses the query: no keyword hits.
            # It says so only in the message ("... NaN or Inf ..."), with the code of any failed search.
            if "NaN or Inf" in str(exc):
                return [[]]
            raise

    async def check_ready(self) -> None:
        """Ready means acknowledged records are readable: the collection is loaded (after a server restart
        Milvus reloads it, and until then reads miss records without an error) and a Strong read answers."""
        if self.client is None:
            raise unavailable("Milvus is not connected")
        await self.calls("ready", self._check_ready)

    def _check_ready(self) -> None:
        self._check_loaded()
        self.client.query(self.name, filter="", output_fields=["count(*)"], consistency_level="Strong")

    def _check_loaded(self) -> None:
        state = self.client.get_load_state(self.name)["state"]
        if getattr(state, "name", str(state)) != "Loaded":
            raise unavailable(f"collection {self.name!r} is not loaded ({getattr(state, 'name', state)}): Milvus is"
                              " loading it, e.g. after a restart")

    async def close(self) -> None:
        self.flusher.close()
        if self.client is not None:
            await asyncio.to_thread(self.client.close)
