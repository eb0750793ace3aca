"""The caption queue: records are written at upload with caption_state "pending" (searchable by CLIP at
once) and BLIP's input in the spool (CaptionInputs); workers caption them later, in batches across
uploads, and write each record back with its caption. The queue is the records themselves: no other
server. Workers run in the gateway (GATEWAY_CAPTION_WORKER) or alone (`python -m gateway.captioner`).

Exactly-once effect, with a store that has no conditional writes (Milvus):
- Claim: read due records strongly, write them back leased to this worker (owner, until), wait
  ``settle_s``, read them again strongly and keep those still leased to it. Two workers claiming one
  record both write; the later write wins, and both see it, provided each worker's read-to-write time
  is below ``settle_s`` (a claim that took longer is dropped: its records wait for the lease to
  expire). So one worker holds a record at a time.
- Write: only records still leased to this worker and still pending are written, and none once the
  lease is within a tenth of its end (another worker may claim it after that). A record deleted
  meanwhile is gone from the strong read; a delete leaves a mark in the spool first
  (CaptionInputs.forget), and every write (claims included) looks at the marks just before it, leaving
  out marked records, and again after it, deleting again a record whose delete began in between.
- A worker killed mid-batch leaves its records leased: they are due again when the lease expires
  (``lease_s``), and their inputs are still in the spool.
- A failing caption is retried after ``retry_s`` x 3^(attempts - 1), then marked failed with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from .errors import ServiceError
from .protocols import CaptionInputs, Inference, VectorStore
from .records import CaptionJob, ImageRecord

log = logging.getLogger("gateway.captions")
T = TypeVar("T")


@dataclass(frozen=True)
class QueueOptions:
    """(gateway.settings.Settings documents each, GATEWAY_CAPTION_*, and has the defaults.)"""

    batch: int
    lease_s: float
    settle_s: float
    max_attempts: int
    retry_s: float
    poll_s: float


@dataclass
class WorkerCounts:
    """What one worker did since it started (exported as metrics)."""

    captioned: int = 0
    failed: int = 0  # records given up (caption_state "failed")
    retried: int = 0  # failed attempts that will be retried
    dropped_claims: int = 0  # records claimed too slowly to be sure, or whose lease ran out while captioning
    undone_deletes: int = 0  # records written back after a delete, deleted again


def now_ms() -> int:
    return int(time.time() * 1000)


class CaptionWorker:
    def __init__(self, inference: Inference, store: VectorStore, inputs: CaptionInputs, options: QueueOptions,
                 owner: str | None = None):
        self.inference, self.store, self.inputs, self.options = inference, store, inputs, options
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.counts = WorkerCounts()
        self.last_sweep = 0.0

    async def run(self) -> None:
        """Caption until cancelled; a failing store or model is logged and tried again after poll_s."""
        await self._work(until_idle=False)

    async def drain(self) -> None:
        """Caption until nothing is due (for the CLI's embedded index and tests)."""
        await self._work(until_idle=True)

    async def step(self) -> int:
        """Claim one batch, caption it and write it; the records claimed (0: nothing was due, or the claim
        was lost)."""
        held = await self.claim()
        if held:
            await self._write(held, await self._captioned_or_release(held))
        return len(held)

    async def _work(self, until_idle: bool) -> None:
        """Claim, caption and write batch after batch: the next batch's claim settles while this one is
        captioned, and this one is written while the next is captioned (BLIP never waits for the store)."""
        claiming: asyncio.Future | None = None
        previous: asyncio.Future | None = None
        writing: asyncio.Future | None = None
        try:
            while True:
                prefetched = claiming is not None  # claimed while the last batch was captioned
                claiming = claiming or asyncio.ensure_future(self.claim())
                held = await self._logged(claiming) or []
                claiming = None
                if not held and (writing is not None or prefetched):
                    if writing is not None:
                        await self._logged(writing)
                        writing = None
                    continue  # the last batches' retries may be due now: look again
                if not held:
                    if until_idle:
                        return
                    await asyncio.sleep(self.options.poll_s)
                    await self._sweep()
                    continue
                claiming = asyncio.ensure_future(self.claim())
                updates = await self._logged(self._captioned_or_release(held))
                previous, writing = writing, asyncio.ensure_future(self._write(held, updates)) if updates is not None else None
                if previous is not None:
                    await self._logged(previous)
        finally:
            if claiming is not None:
                claiming.cancel()
                await asyncio.gather(claiming, return_exceptions=True)
            # captions made are written, even when stopping
            await asyncio.shield(asyncio.gather(*(w for w in (previous, writing) if w is not None), return_exceptions=True))

    @staticmethod
    async def _logged(work: Awaitable[T]) -> T | None:
        """``work``'s result; a failure logged (None), the worker carries on."""
        try:
            return await work
        except ServiceError as exc:
            log.warning("caption queue: %s", exc.message)
        except Exception:
            log.exception("caption queue: unexpected failure")
        return None

    async def _captioned_or_release(self, held: list[ImageRecord]) -> list[ImageRecord]:
        try:
            return await self.captioned(held)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(held))  # stopped (not killed): the records are due again at once
            raise

    async def _release(self, held: list[ImageRecord]) -> None:
        try:
            still = {r.key for r in await self._still_held(held)}
            released = await self._not_deleted([replace(r, job=replace(r.job, lease_owner="", lease_until_ms=0))
                                                 for r in held if r.key in still])
            if released:
                await self.store.upsert(released)
            await self._undo_deleted(released)
        except ServiceError as exc:
            log.warning("caption queue: could not release %d records (due again when their lease expires): %s",
                        len(held), exc.message)

    async def claim(self) -> list[ImageRecord]:
        started, now = time.monotonic(), now_ms()
        due = await self.store.captions_due(self.options.batch, now)
        if not due:
            return []
        until = now + int(self.options.lease_s * 1000)
        claims = await self._not_deleted([replace(r, job=replace(r.job, lease_owner=self.owner, lease_until_ms=until))
                                          for r in due])
        if not claims:
            return []
        await self.store.upsert(claims)
        await self._undo_deleted(claims)
        try:
            return await self._settle(claims, started)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(claims))  # stopped while the claim settled
            raise

    async def _settle(self, claims: list[ImageRecord], started: float) -> list[ImageRecord]:
        if time.monotonic() - started >= self.options.settle_s:
            log.warning("caption queue: a claim took %.1f s (>= GATEWAY_CAPTION_SETTLE_S): its %d records wait for"
                        " their lease to expire", time.monotonic() - started, len(claims))
            self.counts.dropped_claims += len(claims)
            return []
        await asyncio.sleep(self.options.settle_s)
        return await self._still_held(claims)

    async def _still_held(self, records: list[ImageRecord]) -> list[ImageRecord]:
        """Those still leased to this worker, read strongly. A record read back twice is held by no one: a store
        that writes a rewrite as a delete and an insert (Milvus 2.3 with tenants) keeps both rows of two
        claims whose deletes came before both inserts; the next claim, once the lease ends, leaves one."""
        by_tenant: dict[str, list[str]] = {}
        for record in records:
            by_tenant.setdefault(record.tenant, []).append(record.id)
        read = [r for tenant, ids in by_tenant.items() for r in await self.store.get(tenant, ids, strong=True)]
        twice = {key for key, count in Counter(r.key for r in read).items() if count > 1}
        current = {r.key: r for r in read if r.key not in twice}
        return [r for r in records if (c := current.get(r.key)) is not None and c.caption_state == "pending"
                and c.job.lease_owner == self.owner and c.job.lease_until_ms == r.job.lease_until_ms]

    async def captioned(self, held: list[ImageRecord]) -> list[ImageRecord]:
        """The held records as they are to be written: captioned, or failed (for good or for a retry)."""
        inputs = await asyncio.to_thread(lambda: [self.inputs.get(r.key) for r in held])
        updates: list[ImageRecord] = []
        present = [(r, pixels) for r, pixels in zip(held, inputs) if pixels is not None]
        for record, pixels in zip(held, inputs):
            if pixels is None and not await asyncio.to_thread(self.inputs.was_deleted, record.key):
                updates.append(self._give_up(record, "BLIP's input is missing from the caption spool"
                                                     " (GATEWAY_CAPTION_SPOOL): index the image again"))
        if present:
            try:
                texts = await self.inference.caption(np.stack([pixels for _, pixels in present]))
                updates += [replace(r, caption=text, caption_state="done", caption_error="",
                                    job=CaptionJob(attempts=r.job.attempts + 1)) for (r, _), text in zip(present, texts)]
            except ServiceError as exc:
                updates += [self._failed_attempt(r, exc.message) for r, _ in present]
        return updates

    def _failed_attempt(self, record: ImageRecord, reason: str) -> ImageRecord:
        attempts = record.job.attempts + 1
        if attempts >= self.options.max_attempts:
            return self._give_up(record, f"{reason} (after {attempts} attempts)")
        self.counts.retried += 1
        wait_ms = int(self.options.retry_s * 3 ** (attempts - 1) * 1000)
        log.info("caption of %s failed (attempt %d), retried in %.0f s: %s", record.id, attempts, wait_ms / 1000, reason)
        return replace(record, caption_error=reason, job=CaptionJob(attempts, retry_at_ms=now_ms() + wait_ms))

    def _give_up(self, record: ImageRecord, reason: str) -> ImageRecord:
        log.warning("caption of %s failed for good: %s", record.id, reason)
        return replace(record, caption_state="failed", caption_error=reason, job=CaptionJob(record.job.attempts + 1))

    async def _write(self, held: list[ImageRecord], updates: list[ImageRecord]) -> None:
        lease_end = min(r.job.lease_until_ms for r in held)
        if now_ms() > lease_end - self.options.lease_s * 100:  # within a tenth of the lease's end
            log.warning("caption queue: the lease of %d records ran out while captioning (raise GATEWAY_CAPTION_LEASE_S):"
                        " nothing written, they are due again", len(held))
            self.counts.dropped_claims += len(held)
            return
        still = {r.key for r in await self._still_held(held)}
        writes = await self._not_deleted([u for u in updates if u.key in still])
        if writes:
            await self.store.upsert(writes)
        await self._undo_deleted(writes)
        for record in writes:
            if record.caption_state != "pending":
                await asyncio.to_thread(self.inputs.discard, record.key)
            self.counts.captioned += record.caption_state == "done"
            self.counts.failed += record.caption_state == "failed"

    async def _not_deleted(self, records: list[ImageRecord]) -> list[ImageRecord]:
        """Those without a delete mark, looked at just before a write: a delete that began earlier is never
        undone by the write (one that begins between this look and the write is, by _undo_deleted)."""
        deleted = await asyncio.to_thread(lambda: {r.key for r in records if self.inputs.was_deleted(r.key)})
        return [r for r in records if r.key not in deleted]

    async def _undo_deleted(self, written: list[ImageRecord]) -> None:
        for record in written:
            if await asyncio.to_thread(self.inputs.was_deleted, record.key):
                await self.store.delete(record.tenant, record.id)
                self.counts.undone_deletes += 1

    async def _sweep(self) -> None:
        """Delete marks outlive every write that could follow their delete (a claim's or a caption's,
        within a lease); removed an hour after that."""
        if time.monotonic() - self.last_sweep > 600:
            self.last_sweep = time.monotonic()
            await asyncio.to_thread(self.inputs.sweep, 2 * self.options.lease_s + 3600)
