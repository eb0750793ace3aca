"""The vector store: one Milvus collection of images, over pymilvus's MilvusClient.

A Milvus Lite file by default (``data/images.db``), a Milvus server or cluster when the URI is
``http://host:19530``. Records are keyed by a content hash of the image bytes, so writing the same
image again replaces the record instead of duplicating it (upsert: idempotent, retry-safe).
Blocking pymilvus calls run in worker threads with a deadline; connection failures become 503s.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from .errors import DependencyTimeout, DependencyUnavailable, StoreConfigError
from .metrics import STORE_SECONDS
from .settings import Settings

log = logging.getLogger("gateway.store")
FIELDS = ["caption", "source", "metadata", "created_at", "phash"]
STARTUP_DEADLINE_S = 120.0
ID_PATTERN = r"^[0-9a-f]{32}$"  # pymilvus pastes ids into an expression: only ever pass ids of this form


def content_id(data: bytes) -> str:
    """The record id of an image: the first 128 bits of SHA-256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()[:32]


@dataclass
class ImageRecord:
    id: str
    caption: str
    source: str
    metadata: dict
    created_at: int
    phash: str
    vector: np.ndarray | None = field(default=None, repr=False)
    thumbnail: str = field(default="", repr=False)  # base64 JPEG, at most THUMBNAIL_SIZE px

    def row(self) -> dict:
        return {"id": self.id, "vector": np.asarray(self.vector, np.float32).tolist(), "caption": self.caption,
                "source": self.source, "metadata": self.metadata, "created_at": self.created_at, "phash": self.phash,
                "thumbnail": self.thumbnail}

    @classmethod
    def from_entity(cls, entity: dict) -> "ImageRecord":
        vector = entity.get("vector")
        return cls(entity["id"], entity.get("caption", ""), entity.get("source", ""), entity.get("metadata") or {},
                   int(entity.get("created_at", 0)), entity.get("phash", ""),
                   None if vector is None else np.asarray(vector, np.float32), entity.get("thumbnail", ""))


class KeyedLocks:
    """asyncio locks by key, taken in sorted order (no deadlock), dropped when nobody holds or waits."""

    def __init__(self):
        self.locks: dict[str, list] = {}  # key -> [lock, users]

    @asynccontextmanager
    async def hold(self, keys):
        keys = sorted(set(keys))
        entries = [self.locks.setdefault(key, [asyncio.Lock(), 0]) for key in keys]
        for entry in entries:
            entry[1] += 1
        acquired = []
        try:
            for entry in entries:
                await entry[0].acquire()
                acquired.append(entry)
            yield
        finally:
            for entry in acquired:
                entry[0].release()
            for key, entry in zip(keys, entries):
                entry[1] -= 1
                if entry[1] == 0:
                    self.locks.pop(key, None)


class VectorStore:
    def __init__(self, settings: Settings, dim: int):
        self.settings, self.dim = settings, dim
        # Milvus has no unique key: concurrent upserts of one id leave duplicate rows. Writers of an id
        # take its lock (one process; see the README for several gateway replicas).
        self.write_locks = KeyedLocks()
        self.client = None
        self.name = settings.collection
        self.lite = settings.milvus_is_lite
        self.index_type = settings.index_type if settings.index_type != "auto" else ("FLAT" if self.lite else "HNSW")
        # Every read passes this. Strong waits for a server time tick (~200 ms); Session reads at the
        # timestamp of this client's last write, which pymilvus records from each write's reply.
        self.read = {"consistency_level": settings.read_consistency}

    async def _call(self, operation: str, fn, *args, deadline: float | None = None, **kwargs):
        """Run a blocking pymilvus call in a thread with a deadline. Every operation here is idempotent
        (reads, and upserts of content-keyed rows), so a transient failure (a dropped connection, a
        GOAWAY) is retried once before it becomes a 503."""
        start, deadline = time.perf_counter(), deadline or self.settings.store_timeout_s
        try:
            for attempt in (1, 2):
                try:
                    return await asyncio.wait_for(asyncio.to_thread(partial(fn, *args, **kwargs)), deadline)
                except asyncio.TimeoutError as exc:
                    raise DependencyTimeout(f"Milvus did not answer {operation} within {deadline}s") from exc
                except (StoreConfigError, DependencyUnavailable):
                    raise
                except Exception as exc:  # pymilvus raises MilvusException and grpc errors alike
                    if attempt == 2:
                        raise DependencyUnavailable(f"Milvus {operation} failed: {exc}") from exc
                    log.warning("Milvus %s failed, retrying once: %s", operation, exc)
                    await asyncio.sleep(0.2)
        finally:
            STORE_SECONDS.labels(operation).observe(time.perf_counter() - start)

    async def start(self) -> None:
        """Connect, create the collection if needed (index building and loading can take a while on a
        server), check its dimension, load it."""
        await self._call("connect", self._connect, deadline=max(self.settings.store_timeout_s, STARTUP_DEADLINE_S))

    def _connect(self) -> None:
        from pymilvus import MilvusClient

        if self.lite:
            from pathlib import Path

            Path(self.settings.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
        self.client = MilvusClient(self.settings.milvus_uri, token=self.settings.milvus_token,
                                   timeout=max(self.settings.store_timeout_s, STARTUP_DEADLINE_S))
        if self.client.has_collection(self.name):
            self._check_dimension()
        else:
            self._create()
        self.client.load_collection(self.name)

    def _check_dimension(self) -> None:
        fields = {f["name"]: f for f in self.client.describe_collection(self.name)["fields"]}
        have = int(fields.get("vector", {}).get("params", {}).get("dim", -1))
        if have != self.dim:
            raise StoreConfigError(
                f"collection {self.name!r} at {self.settings.milvus_uri} holds {have}-d vectors but the models give"
                f" {self.dim}-d embeddings: use another GATEWAY_COLLECTION or re-index with the original model")

    def _create(self) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("caption", DataType.VARCHAR, max_length=4096)
        schema.add_field("source", DataType.VARCHAR, max_length=1024)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("phash", DataType.VARCHAR, max_length=32)
        schema.add_field("thumbnail", DataType.VARCHAR, max_length=65535)
        index = self.client.prepare_index_params()
        params = {"M": 16, "efConstruction": 200} if self.index_type == "HNSW" else (
            {"nlist": 128} if self.index_type == "IVF_FLAT" else {})
        index.add_index("vector", index_type=self.index_type, metric_type="COSINE", params=params)
        self.client.create_collection(self.name, schema=schema, index_params=index, **self.read)
        log.info("created collection %s (%d-d, %s)", self.name, self.dim, self.index_type)

    async def upsert(self, records: list[ImageRecord]) -> None:
        await self._call("upsert", self.client.upsert, self.name, [r.row() for r in records])

    async def get(self, ids: list[str], with_vectors: bool = False) -> list[ImageRecord]:
        if not all(re.match(ID_PATTERN, i) for i in ids):
            raise ValueError("image ids are 32 lowercase hex digits")
        rows = await self._call("get", self.client.get, self.name, ids=ids,
                                output_fields=["id", *FIELDS] + (["vector"] if with_vectors else []), **self.read)
        return [ImageRecord.from_entity(dict(row)) for row in rows]

    async def thumbnail(self, record_id: str) -> str | None:
        """The stored thumbnail (base64 JPEG) of an image, None when there is no such image."""
        if not re.match(ID_PATTERN, record_id):
            raise ValueError("image ids are 32 lowercase hex digits")
        rows = await self._call("thumbnail", self.client.get, self.name, ids=[record_id], output_fields=["thumbnail"], **self.read)
        return rows[0]["thumbnail"] if rows else None

    async def delete(self, record_id: str) -> bool:
        if not await self.get([record_id]):
            return False
        await self._call("delete", self._delete, record_id)
        return True

    def _delete(self, record_id: str) -> None:
        self.client.delete(self.name, ids=[record_id])
        if self.settings.read_consistency == "Session" and not self.lite:
            # A Milvus 2.3 server answers a delete without its timestamp, so pymilvus's Session timestamp
            # stays at the last upsert and the deleted row stays readable. A timestamp allocated now is
            # later than the delete: make it this collection's last write.
            from pymilvus.client import ts_utils

            connection = self.client._get_connection()
            ts_utils.update_collection_ts(self.name, connection.alloc_timestamp(), connection.server_address)

    async def list(self, limit: int, offset: int) -> list[ImageRecord]:
        rows = await self._call("list", self.client.query, self.name, filter='id != ""', output_fields=["id", *FIELDS],
                                limit=limit, offset=offset, **self.read)
        return sorted((ImageRecord.from_entity(dict(row)) for row in rows), key=lambda r: r.id)

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

        rows = await self._call("export", collect, deadline=max(self.settings.store_timeout_s, STARTUP_DEADLINE_S))
        return [ImageRecord.from_entity(dict(row)) for row in rows]

    async def count(self) -> int:
        rows = await self._call("count", self.client.query, self.name, filter="", output_fields=["count(*)"], **self.read)
        return int(rows[0]["count(*)"])

    async def search(self, vectors: np.ndarray, k: int, expression: str = "") -> list[list[tuple[ImageRecord, float]]]:
        params = {"metric_type": "COSINE", "params": {"ef": max(k, self.settings.hnsw_ef)} if self.index_type == "HNSW" else {}}
        hits = await self._call("search", self.client.search, self.name, data=np.asarray(vectors, np.float32).tolist(),
                                limit=k, filter=expression, output_fields=["id", *FIELDS], search_params=params, **self.read)
        return [[(ImageRecord.from_entity({**hit["entity"], "id": hit["id"]}), float(hit["distance"])) for hit in row]
                for row in hits]

    async def check_ready(self) -> None:
        if self.client is None:
            raise DependencyUnavailable("Milvus is not connected")
        await self._call("ready", self.client.has_collection, self.name)

    async def close(self) -> None:
        if self.client is not None:
            await asyncio.to_thread(self.client.close)
