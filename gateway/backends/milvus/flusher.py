"""Flushing after bulk loads. Rows stay in growing segments until Milvus seals them (by size, or after
~10 minutes without writes); a growing segment is searched without the HNSW graph, slower, and with a
filter through its interim index, which misses rows (measured: bench/vector_tier.py). A flush seals
them now, so they are indexed within minutes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ...core.errors import ServiceError

log = logging.getLogger("gateway.store")


class BulkFlusher:
    def __init__(self, flush: Callable[[], Awaitable[None]], after_rows: int, idle_s: float, collection: str):
        """Once ``after_rows`` rows were written since the last flush, ``flush()`` when writes have paused
        for ``idle_s`` (0 rows: never; Milvus seals segments itself, later)."""
        self.flush, self.after_rows, self.idle_s, self.collection = flush, after_rows, idle_s, collection
        self.unflushed_rows, self.last_write = 0, 0.0
        self.task: asyncio.Task | None = None

    def written(self, rows: int) -> None:
        if not self.after_rows:
            return
        self.unflushed_rows += rows
        self.last_write = time.monotonic()
        if self.unflushed_rows >= self.after_rows and self.task is None:
            self.task = asyncio.create_task(self._flush_when_idle())

    async def _flush_when_idle(self) -> None:
        try:
            while (idle := time.monotonic() - self.last_write) < self.idle_s:
                await asyncio.sleep(self.idle_s - idle)
            rows, self.unflushed_rows = self.unflushed_rows, 0
            await self.flush()
            log.info("flushed %s after %d rows written: their segments are sealed and will be indexed", self.collection, rows)
        except ServiceError as exc:
            log.warning("flush after bulk writes failed (Milvus seals the segments itself, later): %s", exc.message)
        finally:
            self.task = None

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
