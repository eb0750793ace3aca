"""A vector store in this process's memory: the whole VectorStore protocol, filters evaluated as
gateway.core.filters defines them, exact cosine search by numpy brute force, keyword search by the
number of the query's words a caption holds, tenants kept apart by each record's key. One process sees
every write at once, so it needs no consistency tokens. Nothing survives the process: it is the store
of the fast tests (tests/contract runs the same suite on it, on Milvus Lite and on the Milvus server)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..core.filters import Condition, matches
from ..core.protocols import CaptionQueueStats, Feature, StoreCapabilities
from ..core.records import ImageRecord, record_key
from ..core.text_ranking import words


def view(record: ImageRecord, with_vector: bool) -> ImageRecord:
    """A record as reads return it (as Milvus's do): the thumbnail only through thumbnail(), the vector
    only where asked for."""
    return replace(record, vector=record.vector if with_vector else None, thumbnail="")


class InMemoryStore:
    def __init__(self, keyword_search: bool = True, max_window: int | None = None):
        """``keyword_search``: whether search_captions works (off: as a Milvus 2.3 server);
        ``max_window``: the largest offset + limit list_records takes, as Milvus's window."""
        self.capabilities = StoreCapabilities(
            Feature(True) if keyword_search else Feature(False, "the in-memory store was made without it"),
            max_window, "exact (numpy brute force)")
        self.records: dict[str, ImageRecord] = {}  # by key

    def _of(self, tenant: str | None) -> list[ImageRecord]:
        return [r for r in self.records.values() if tenant is None or r.tenant == tenant]

    async def start(self) -> None:
        return None

    async def upsert(self, records: list[ImageRecord], new: bool = False) -> None:
        await asyncio.sleep(0)  # let concurrent writers interleave, as a real store would
        self.records.update({r.key: r for r in records})

    async def get(self, tenant: str, ids: list[str], with_vectors: bool = False, strong: bool = False) -> list[ImageRecord]:
        await asyncio.sleep(0)
        keys = (record_key(tenant, i) for i in dict.fromkeys(ids))
        return [view(self.records[key], with_vectors) for key in keys if key in self.records]

    async def thumbnail(self, tenant: str, record_id: str, strong: bool = False) -> str | None:
        record = self.records.get(record_key(tenant, record_id))
        return record.thumbnail if record else None

    async def delete(self, tenant: str, record_id: str) -> None:
        self.records.pop(record_key(tenant, record_id), None)

    async def list_records(self, tenant: str, limit: int, offset: int) -> list[ImageRecord]:
        return [view(r, False) for r in sorted(self._of(tenant), key=lambda r: r.id)[offset:offset + limit]]

    async def all_records(self, tenant: str | None) -> list[ImageRecord]:
        return [view(r, True) for r in self._of(tenant)]

    async def count(self, tenant: str | None) -> int:
        return len(self._of(tenant))

    def _matching(self, tenant: str | None, conditions: Sequence[Condition]) -> list[ImageRecord]:
        return [r for r in self._of(tenant) if matches(conditions, r)]

    async def search(self, tenant: str | None, vectors: np.ndarray, k: int, conditions: Sequence[Condition] = ()
                     ) -> list[list[tuple[ImageRecord, float]]]:
        candidates = [r for r in self._matching(tenant, conditions) if r.vector is not None]
        if not candidates:
            return [[] for _ in vectors]
        stored = np.stack([r.vector for r in candidates if r.vector is not None])
        scores = np.asarray(vectors, np.float32) @ stored.T
        return [[(view(candidates[i], False), float(row[i])) for i in np.argsort(-row, kind="stable")[:k]] for row in scores]

    async def search_captions(self, tenant: str, text: str, k: int, conditions: Sequence[Condition] = ()
                              ) -> list[tuple[ImageRecord, float]]:
        assert self.capabilities.keyword_search.on, "the service asked a store without keyword search"
        wanted = words(text)
        scored = [(view(r, True), float(len(wanted & words(r.caption)))) for r in self._matching(tenant, conditions)]
        return sorted([s for s in scored if s[1] > 0], key=lambda s: s[1], reverse=True)[:k]

    async def ids(self, tenant: str, conditions: Sequence[Condition] = ()) -> list[str]:
        return [r.id for r in self._matching(tenant, conditions)]

    async def tenants(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records.values():
            counts[record.tenant] = counts.get(record.tenant, 0) + 1
        return counts

    async def delete_tenant(self, tenant: str) -> int:
        doomed = [r.key for r in self._of(tenant)]
        for key in doomed:
            del self.records[key]
        return len(doomed)

    async def captions_due(self, limit: int, now_ms: int) -> list[ImageRecord]:
        await asyncio.sleep(0)
        due = [r for r in self.records.values()
               if r.caption_state == "pending" and r.job.lease_until_ms < now_ms and r.job.retry_at_ms <= now_ms]
        return [replace(r) for r in due[:limit]]

    async def caption_queue(self) -> CaptionQueueStats:
        pending = [r.created_at for r in self.records.values() if r.caption_state == "pending"]
        failed = sum(r.caption_state == "failed" for r in self.records.values())
        return CaptionQueueStats(len(pending), failed, min(pending, default=None))

    async def migrate(self) -> int | None:
        return None  # one schema: nothing to migrate

    async def check_ready(self) -> None:
        return None

    async def close(self) -> None:
        return None
