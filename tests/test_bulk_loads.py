"""After a bulk load the store flushes, so the rows leave Milvus's growing segments (searched without
the HNSW graph, and through an interim index that misses rows under a filter) and get indexed;
checked on the real Milvus server."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from gateway.backends.milvus import MilvusStore
from gateway.core.records import ImageRecord
from gateway.settings import Settings
from gateway.wiring import build_store
from tests.support.fakes import unit

pytestmark = pytest.mark.integration
DIM = 8


def records(start: int, count: int) -> list[ImageRecord]:
    rng = np.random.default_rng(start)
    return [ImageRecord(f"{i:032x}", f"caption {i}", f"{i}.jpg", {}, i, "0" * 16, unit(rng.normal(size=DIM)), "")
            for i in range(start, start + count)]


def sealed_rows(store: MilvusStore) -> int:
    return sum(s.num_rows for s in store.client.list_persistent_segments(store.name))


async def load(uri: str, collection: str, flush_after_rows: int) -> tuple[int, int]:
    """Write 300 rows in 8-row upserts, pause, and report (rows in flushed segments, rows searchable)
    once the flush is done, or after 15 s."""
    store = build_store(Settings(_env_file=None, milvus_uri=uri, collection=collection, flush_after_rows=flush_after_rows,
                                 flush_idle_s=0.5), DIM)
    await store.start()
    try:
        for start in range(0, 300, 8):
            await store.upsert(records(start, min(8, 300 - start)))
        assert store.flusher.unflushed_rows == (0 if not flush_after_rows else 300)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (sealed_rows(store) < 300 or store.flusher.task is not None):
            await asyncio.sleep(0.5)
        return sealed_rows(store), await store.count(None)
    finally:
        store.client.drop_collection(collection)
        await store.close()


def test_a_bulk_load_is_flushed_once_writes_pause(milvus_server, caplog):
    caplog.set_level("INFO", "gateway.store")
    sealed, _ = asyncio.run(load(milvus_server.uri, "bulk_flushed", flush_after_rows=200))
    assert sealed == 300
    assert [r.message for r in caplog.records if r.message.startswith("flushed")] == [
        "flushed bulk_flushed after 300 rows written: their segments are sealed and will be indexed"]


def test_without_the_flush_the_rows_stay_in_growing_segments(milvus_server):
    sealed, searchable = asyncio.run(load(milvus_server.uri, "bulk_unflushed", flush_after_rows=0))
    assert sealed == 0 and searchable == 300
