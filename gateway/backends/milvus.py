"""The vector store: one Milvus collection of images, over pymilvus's MilvusClient.

A Milvus Lite file by default (``data/images.db``), a Milvus server or cluster when the URI is
``http://host:19530``. Records are keyed by a content hash of the image bytes, so writing the same
image again replaces the record instead of duplicating it (upsert: idempotent, retry-safe).
Blocking pymilvus calls run in worker threads with a deadline; connection failures become
UNAVAILABLE, deadlines TIMEOUT.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..core.deadlines import budget
from ..core.errors import ErrorKind, ServiceError, timeout, unavailable
from ..core.records import ImageRecord, is_image_id
from .metrics import STORE_SECONDS

log = logging.getLogger("gateway.store")
FIELDS = ["caption", "source", "metadata", "created_at", "phash"]
KEYWORDS = "caption_words"  # the BM25 sparse vector Milvus derives from each caption
STARTUP_DEADLINE_S = 120.0
MIGRATION_BATCH = 500
IndexType = Literal["auto", "FLAT", "IVF_FLAT", "HNSW"]
Consistency = Literal["Session", "Strong"]


def row(record: ImageRecord) -> dict:
    return {"id": record.id, "vector": np.asarray(record.vector, np.float32).tolist(), "caption": record.caption,
            "source": record.source, "metadata": record.metadata, "created_at": record.created_at,
            "phash": record.phash, "thumbnail": record.thumbnail}


def from_entity(entity: dict) -> ImageRecord:
    vector = entity.get("vector")
    return ImageRecord(entity["id"], entity.get("caption", ""), entity.get("source", ""), entity.get("metadata") or {},
                       int(entity.get("created_at", 0)), entity.get("phash", ""),
                       None if vector is None else np.asarray(vector, np.float32), entity.get("thumbnail", ""))


def is_lite(uri: str) -> bool:
    """A Milvus Lite file rather than a server URI."""
    return "://" not in uri


def lite_file_in_use(uri: str) -> bool:
    """Whether another process holds this Milvus Lite file. milvus-lite takes a POSIX lock on
    ``.<name>.lock`` beside it; a second process would otherwise fail to open it, retry, and write
    nothing its owner sees. (A server this process already runs for the file is not "another".)"""
    import fcntl

    from milvus_lite.server_manager import server_manager_instance

    path = Path(uri).absolute().resolve()
    if str(path) in server_manager_instance._servers:
        return False
    lock = path.parent / f".{path.name}.lock"
    if not lock.exists():
        return False
    with open(lock, "a") as fh:  # this process holds no lock on it, so closing this releases nothing else
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(fh, fcntl.LOCK_UN)
    return False


def has_full_text(version: str) -> bool:
    """Whether a Milvus version has BM25 full-text search (functions over analyzed VARCHAR: 2.5+)."""
    found = re.match(r"v?(\d+)\.(\d+)", version)
    return found is not None and (int(found[1]), int(found[2])) >= (2, 5)


def check_ids(ids: list[str]) -> None:
    if not all(is_image_id(i) for i in ids):
        raise ServiceError(ErrorKind.INVALID_REQUEST, "image ids are 32 lowercase hex digits")


class MilvusStore:
    def __init__(self, uri: str, dim: int, collection: str = "images", token: str = "", index_type: IndexType = "auto",
                 timeout_s: float = 10.0, hnsw_ef: int = 128, read_consistency: Consistency = "Session",
                 flush_after_rows: int = 10_000, flush_idle_s: float = 5.0):
        """``flush_after_rows``, ``flush_idle_s``: once that many rows were written since the last flush,
        flush when writes have paused that long (0 rows: never; Milvus seals segments itself, later)."""
        self.uri, self.token, self.dim, self.name = uri, token, dim, collection
        self.timeout_s, self.hnsw_ef, self.consistency = timeout_s, hnsw_ef, read_consistency
        self.flush_after_rows, self.flush_idle_s = flush_after_rows, flush_idle_s
        self.unflushed_rows, self.last_write = 0, 0.0
        self.flusher: asyncio.Task | None = None
        self.client: Any = None  # pymilvus.MilvusClient once started
        self.lite = is_lite(uri)
        self.index_type = index_type if index_type != "auto" else ("FLAT" if self.lite else "HNSW")
        # Every read passes this. Strong waits for a server time tick (~200 ms); Session reads at the
        # timestamp of this client's last write, which pymilvus records from each write's reply.
        self.read: dict[str, Any] = {"consistency_level": read_consistency}
        self.keyword_search = "off: not connected"  # "on", or why captions are not searched by their words
        self.full_text = False  # whether this Milvus has BM25 full-text search
        self.caption_words = False  # whether any stored caption is not empty (BM25 needs one)

    @property
    def searches_keywords(self) -> bool:
        return self.keyword_search == "on"

    async def _call(self, operation: str, fn, *args, deadline: float | None = None, **kwargs):
        """Run a blocking pymilvus call in a thread with a deadline. Every operation here is idempotent
        (reads, and upserts of content-keyed rows), so a transient failure (a dropped connection, a
        GOAWAY) is retried once before it becomes a 503."""
        start = time.perf_counter()
        try:
            for attempt in (1, 2):
                limit = budget(deadline or self.timeout_s)  # the caller's deadline, when nearer than ours
                try:
                    return await asyncio.wait_for(asyncio.to_thread(partial(fn, *args, **kwargs)), limit)
                except asyncio.TimeoutError as exc:
                    raise timeout(f"Milvus did not answer {operation} within {limit:.3g}s") from exc
                except ServiceError:
                    raise
                except Exception as exc:  # pymilvus raises MilvusException and grpc errors alike
                    if attempt == 2:
                        raise unavailable(f"Milvus {operation} failed: {exc}") from exc
                    log.warning("Milvus %s failed, retrying once: %s", operation, exc)
                    await asyncio.sleep(0.2)
        finally:
            STORE_SECONDS.labels(operation).observe(time.perf_counter() - start)

    async def start(self, migrating: bool = False) -> None:
        """Connect, create the collection if needed (index building and loading can take a while on a
        server), check its dimension, load it. ``migrating``: for `image-search migrate`, which may find
        an interrupted migration to finish (a gateway refuses to start on one)."""
        await self._call("connect", self._connect, migrating, deadline=max(self.timeout_s, STARTUP_DEADLINE_S))

    @property
    def staged(self) -> str:
        return f"{self.name}_migrating"

    def _interrupted_migration(self) -> bool:
        """A migration stopped after copying the records aside: the collection gone, or already rebuilt
        with the BM25 field but not yet refilled."""
        return self.client.has_collection(self.staged) and (
            not self.client.has_collection(self.name) or KEYWORDS in self._fields())

    def _connect(self, migrating: bool = False) -> None:
        from pymilvus import MilvusClient

        if self.lite:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            if lite_file_in_use(self.uri):
                raise ServiceError(ErrorKind.MISCONFIGURED, (
                    f"the Milvus Lite file {self.uri} is in use by another process (a running gateway?), and two"
                    " processes must never write one Lite file: talk to that gateway instead (image-search --url"
                    " http://localhost:8000 ...), or stop it first"))
        self.client = MilvusClient(self.uri, token=self.token, timeout=max(self.timeout_s, STARTUP_DEADLINE_S))
        # Milvus Lite 2.5.1 has BM25 (checked); a server says its version
        version = "2.5.1 (Milvus Lite)" if self.lite else self.client.get_server_version()
        self.full_text = full_text = has_full_text(version)
        if self._interrupted_migration():
            self.keyword_search = f"off: an interrupted migration left the records in {self.staged!r}"
            if migrating:
                return
            raise ServiceError(ErrorKind.MISCONFIGURED, (
                f"an `image-search migrate` of collection {self.name!r} was interrupted and its records are in"
                f" {self.staged!r}: run `image-search migrate` again to finish it"))
        if self.client.has_collection(self.name):
            self._check_dimension()
        else:
            self._create(self.name, full_text)
        self.client.load_collection(self.name)
        if KEYWORDS in self._fields():
            self.keyword_search = "on"
            self.caption_words = bool(self.client.query(self.name, filter='caption != ""', output_fields=["id"], limit=1,
                                                        **self.read))
        elif not full_text:
            self.keyword_search = (f"off: Milvus {version} has no BM25 full-text search (2.5 and later have it);"
                                   " text search re-ranks CLIP's candidates by caption words")
        else:
            self.keyword_search = (f"off: collection {self.name!r} was created before keyword search; run"
                                   " `image-search migrate` (writes paused) to rebuild it with a BM25 caption field")
        if not self.searches_keywords:
            log.warning("keyword search %s", self.keyword_search)

    def _fields(self) -> dict[str, dict]:
        return {f["name"]: f for f in self.client.describe_collection(self.name)["fields"]}

    def _check_dimension(self) -> None:
        fields = self._fields()
        have = int(fields.get("vector", {}).get("params", {}).get("dim", -1))
        if have != self.dim:
            raise ServiceError(
                ErrorKind.MISCONFIGURED, f"collection {self.name!r} at {self.uri} holds {have}-d vectors but the models give"
                f" {self.dim}-d embeddings: use another GATEWAY_COLLECTION or re-index with the original model")

    def _create(self, name: str, full_text: bool) -> None:
        """A collection with the gateway's schema; ``full_text``: captions analysed into BM25 vectors."""
        from pymilvus import DataType, Function, FunctionType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("caption", DataType.VARCHAR, max_length=4096, **({"enable_analyzer": True} if full_text else {}))
        schema.add_field("source", DataType.VARCHAR, max_length=1024)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("phash", DataType.VARCHAR, max_length=32)
        schema.add_field("thumbnail", DataType.VARCHAR, max_length=65535)
        index = self.client.prepare_index_params()
        params = {"M": 16, "efConstruction": 200} if self.index_type == "HNSW" else (
            {"nlist": 128} if self.index_type == "IVF_FLAT" else {})
        index.add_index("vector", index_type=self.index_type, metric_type="COSINE", params=params)
        if full_text:
            schema.add_field(KEYWORDS, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(Function("caption_bm25", FunctionType.BM25, ["caption"], [KEYWORDS]))
            index.add_index(KEYWORDS, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        self.client.create_collection(name, schema=schema, index_params=index, **self.read)
        log.info("created collection %s (%d-d, %s%s)", name, self.dim, self.index_type, ", BM25 captions" * full_text)

    async def migrate(self) -> int:
        """Rebuild a collection made before keyword search with a BM25 caption field: copy every record
        (vectors and thumbnails as stored) aside into ``<name>_migrating``, drop the collection, create it
        again with the field and copy the records back (Milvus Lite cannot rename collections). Returns
        the records in the rebuilt collection. Writes made meanwhile would be lost: pause writers. Not
        retried: a run stopped part-way is resumed by the next run (before the drop it starts over;
        after it, it refills from the copy, and gateways refuse to start until then)."""
        if self.searches_keywords:
            return 0
        if not self.full_text:
            raise ServiceError(ErrorKind.MISCONFIGURED, f"cannot migrate: keyword search {self.keyword_search}")
        try:
            return await asyncio.to_thread(self._migrate)
        except ServiceError:
            raise
        except Exception as exc:
            raise unavailable(f"migration of {self.name!r} stopped: {exc}; run it again to resume it") from exc

    def _migrate(self) -> int:
        if not self._interrupted_migration():
            if self.client.has_collection(self.staged):
                self.client.drop_collection(self.staged)  # a copy stopped before the drop: start over
            self._create(self.staged, full_text=False)
            self._copy(self.name, self.staged)
            self.client.drop_collection(self.name)
        elif self.client.has_collection(self.name):
            self.client.drop_collection(self.name)  # rebuilt but not fully refilled
        self._create(self.name, full_text=True)
        copied = self._copy(self.staged, self.name)
        self.client.drop_collection(self.staged)
        self.client.load_collection(self.name)
        self.keyword_search = "on"
        log.info("migrated collection %s: %d records, BM25 captions on", self.name, copied)
        return copied

    def _copy(self, source: str, target: str) -> int:
        """Every record of one collection into another (empty) one, checked by count."""
        self.client.load_collection(source)
        iterator = self.client.query_iterator(source, batch_size=MIGRATION_BATCH, filter='id != ""',
                                              output_fields=["id", *FIELDS, "vector", "thumbnail"],
                                              consistency_level="Strong")
        copied = 0
        try:
            while page := iterator.next():
                self.client.insert(target, [{**dict(r), "vector": list(r["vector"])} for r in page])
                copied += len(page)
        finally:
            iterator.close()
        self.client.flush(target)
        self.client.load_collection(target)
        counted = int(self.client.query(target, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"])
        if counted != copied:
            raise unavailable(f"migration copied {copied} records into {target!r}, which holds {counted}")
        return copied

    async def upsert(self, records: list[ImageRecord]) -> None:
        await self._call("upsert", self.client.upsert, self.name, [row(r) for r in records])
        self.caption_words = self.caption_words or any(r.caption.strip() for r in records)
        self._written(len(records))

    def _written(self, rows: int) -> None:
        """Count rows written; after a bulk load, flush. Rows stay in growing segments until Milvus seals
        them (by size, or after ~10 minutes without writes); a growing segment is searched without the
        HNSW graph, slower, and with a filter through its interim index, which misses rows (measured:
        bench/vector_tier.py). A flush seals them now, so they are indexed within minutes."""
        if not self.flush_after_rows:
            return
        self.unflushed_rows += rows
        self.last_write = time.monotonic()
        if self.unflushed_rows >= self.flush_after_rows and self.flusher is None:
            self.flusher = asyncio.create_task(self._flush_when_idle())

    async def _flush_when_idle(self) -> None:
        try:
            while (idle := time.monotonic() - self.last_write) < self.flush_idle_s:
                await asyncio.sleep(self.flush_idle_s - idle)
            rows, self.unflushed_rows = self.unflushed_rows, 0
            await self._call("flush", self.client.flush, self.name, deadline=STARTUP_DEADLINE_S)
            log.info("flushed %s after %d rows written: their segments are sealed and will be indexed", self.name, rows)
        except ServiceError as exc:
            log.warning("flush after bulk writes failed (Milvus seals the segments itself, later): %s", exc.message)
        finally:
            self.flusher = None

    async def get(self, ids: list[str], with_vectors: bool = False) -> list[ImageRecord]:
        check_ids(ids)
        rows = await self._call("get", self.client.get, self.name, ids=ids,
                                output_fields=["id", *FIELDS] + (["vector"] if with_vectors else []), **self.read)
        return [from_entity(dict(row)) for row in rows]

    async def thumbnail(self, record_id: str) -> str | None:
        """The stored thumbnail (base64 JPEG) of an image, None when there is no such image."""
        check_ids([record_id])
        rows = await self._call("thumbnail", self.client.get, self.name, ids=[record_id], output_fields=["thumbnail"],
                                **self.read)
        return rows[0]["thumbnail"] if rows else None

    async def delete(self, record_id: str) -> None:
        check_ids([record_id])
        await self._call("delete", self._delete, record_id)

    def _delete(self, record_id: str) -> None:
        self.client.delete(self.name, ids=[record_id])
        if self.consistency == "Session" and not self.lite:
            # A Milvus 2.3 server answers a delete without its timestamp, so pymilvus's Session timestamp
            # stays at the last upsert and the deleted row stays readable. A timestamp allocated now is
            # later than the delete: make it this collection's last write.
            from pymilvus.client import ts_utils

            connection = self.client._get_connection()
            ts_utils.update_collection_ts(self.name, connection.alloc_timestamp(), connection.server_address)

    async def list_records(self, limit: int, offset: int) -> list[ImageRecord]:
        rows = await self._call("list", self.client.query, self.name, filter='id != ""', output_fields=["id", *FIELDS],
                                limit=limit, offset=offset, **self.read)
        return sorted((from_entity(dict(row)) for row in rows), key=lambda r: r.id)

    async def all_records(self, batch_size: int = 1000) -> list[ImageRecord]:
        """Every record with its vector, through a query iterator (no offset window)."""
        def collect() -> list[dict]:
            iterator = self.client.query_iterator(self.name, batch_size=batch_size, filter='id != ""',
                                                  output_fields=["id", *FIELDS, "vector"], **self.read)
            rows: list[dict] = []
            try:
                while page := iterator.next():
                    rows.extend(page)
            finally:
                iterator.close()
            return rows

        rows = await self._call("export", collect, deadline=max(self.timeout_s, STARTUP_DEADLINE_S))
        return [from_entity(dict(row)) for row in rows]

    async def count(self) -> int:
        rows = await self._call("count", self.client.query, self.name, filter="", output_fields=["count(*)"], **self.read)
        return int(rows[0]["count(*)"])

    async def search(self, vectors: np.ndarray, k: int, expression: str = "") -> list[list[tuple[ImageRecord, float]]]:
        params = {"metric_type": "COSINE", "params": {"ef": max(k, self.hnsw_ef)} if self.index_type == "HNSW" else {}}
        hits = await self._call("search", self.client.search, self.name, data=np.asarray(vectors, np.float32).tolist(),
                                anns_field="vector", limit=k, filter=expression, output_fields=["id", *FIELDS],
                                search_params=params, **self.read)
        return [[(from_entity({**hit["entity"], "id": hit["id"]}), float(hit["distance"])) for hit in row]
                for row in hits]

    async def search_captions(self, text: str, k: int, expression: str = "") -> list[tuple[ImageRecord, float]]:
        """The k records whose captions best match the text's words (BM25), with their vectors."""
        if not self.caption_words:
            return []  # Milvus refuses BM25 queries while no caption holds a word (see _search_captions)
        (hits,) = await self._call("keyword search", self._search_captions, text, k, expression)
        return [(from_entity({**hit["entity"], "id": hit["id"]}), float(hit["distance"])) for hit in hits]

    def _search_captions(self, text: str, k: int, expression: str) -> list:
        from pymilvus import MilvusException

        try:
            return self.client.search(self.name, data=[text], anns_field=KEYWORDS, limit=k, filter=expression,
                                      output_fields=["id", *FIELDS, "vector"], search_params={"metric_type": "BM25"},
                                      **self.read)
        except MilvusException as exc:
            # Milvus computes BM25 with the average caption length; with no caption words stored yet (an
            # empty collection, or captions off) that is 0/0 and it refuses the query: no keyword hits.
            if "NaN or Inf" in str(exc):
                return [[]]
            raise

    async def check_ready(self) -> None:
        if self.client is None:
            raise unavailable("Milvus is not connected")
        await self._call("ready", self.client.has_collection, self.name)

    async def close(self) -> None:
        if self.flusher is not None:
            self.flusher.cancel()
        if self.client is not None:
            await asyncio.to_thread(self.client.close)
