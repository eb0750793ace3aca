"""A micro-batcher: concurrent in-process model calls gathered into one batch, as Triton's dynamic
batcher does for remote ones."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..core.errors import ErrorKind, ServiceError
from .metrics import INFERENCE_BATCH, INFERENCE_SECONDS

log = logging.getLogger("gateway.backends")


class MicroBatcher:
    """Gathers concurrent calls into one ``run(items)`` call of at most ``max_batch`` rows, waiting at
    most ``max_delay`` seconds after the first, and runs it in a single worker thread. ``when_idle``
    runs in that thread once no call has come for ``idle_s`` after a batch (never beside a batch);
    ``thread_setup`` runs in it first."""

    def __init__(self, name: str, run: Callable[[list], list], max_batch: int, max_delay: float,
                 rows: Callable[[Any], int] = len, when_idle: Callable[[], Any] | None = None, idle_s: float = 2.0,
                 thread_setup: Callable[[], Any] | None = None):
        self.name, self.run, self.max_batch, self.max_delay, self.rows = name, run, max_batch, max_delay, rows
        self.when_idle, self.idle_s, self.busy_since_idle = when_idle, idle_s, False
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}", initializer=thread_setup)
        self.worker: asyncio.Task | None = None

    async def submit(self, item):
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))
        return await future

    async def _next(self):
        """The next queued call; ``when_idle`` first, once, if it has been idle_s since the last batch."""
        if self.when_idle is None or not self.busy_since_idle:
            return await self.queue.get()
        try:
            return await asyncio.wait_for(self.queue.get(), self.idle_s)
        except asyncio.TimeoutError:
            self.busy_since_idle = False
            await asyncio.get_running_loop().run_in_executor(self.executor, self.when_idle)
            return await self.queue.get()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._next()]
            rows = self.rows(batch[0][0])
            deadline = loop.time() + self.max_delay
            while rows < self.max_batch:
                timeout = deadline - loop.time()
                try:
                    item = self.queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self.queue.get(), timeout)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                batch.append(item)
                rows += self.rows(item[0])
            INFERENCE_BATCH.labels(self.name).observe(rows)
            self.busy_since_idle = True
            with INFERENCE_SECONDS.labels(self.name).time():
                try:
                    results = await loop.run_in_executor(self.executor, self.run, [item for item, _ in batch])
                except Exception as exc:  # every caller of this batch gets the error
                    log.exception("%s batch failed", self.name)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(ServiceError(ErrorKind.INTERNAL, f"{self.name} failed: {exc}"))
                    continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
