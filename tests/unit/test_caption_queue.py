"""The caption queue over the in-memory store and a fake model (gateway.core.caption_queue): uploads
answer once embedded (searchable at once), workers caption later in batches; retries with backoff,
then failed with the reason; a deleted record is never written back; two workers never caption one
record; a dead worker's records are due again when its lease expires. (tests/test_caption_queue.py runs
the same on Milvus, with a captioner process SIGKILLed mid-batch.)"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np

from gateway.core.caption_queue import CaptionWorker
from gateway.core.errors import ErrorKind, ServiceError
from gateway.core.records import DEFAULT_TENANT, Upload
from tests.support.fakes import drain, fake_service
from tests.support.images import unique_image


def run(coroutine):
    return asyncio.run(coroutine)


def worker_of(core, **options) -> CaptionWorker:
    assert core.queueing is not None
    return CaptionWorker(core.inference, core.store, core.queueing.inputs, replace(core.queueing.options, **options))


async def upload(core, seeds, **kwargs):
    return await core.index_images(DEFAULT_TENANT, [Upload(f"{s}.png", unique_image(s)) for s in seeds], **kwargs)


def test_an_upload_is_searchable_at_once_and_captioned_later_in_one_batch():
    core = fake_service()

    async def main():
        done = await upload(core, [1, 2, 3])
        assert [d.record.caption_state for d in done] == ["pending"] * 3 and all(d.record.caption == "" for d in done)
        assert core.inference.calls == [("clip_image", 3)]  # no BLIP on the upload's path
        hits = await core.search_image(DEFAULT_TENANT, unique_image(2), 1)
        assert hits[0].record.id == done[1].record.id and hits[0].record.caption_state == "pending"
        assert all(core.queueing.inputs.get(d.record.id).shape == (24, 24, 3) for d in done)
        counts = await drain(core)
        assert counts.captioned == 3 and ("blip_caption", 3) in core.inference.calls  # one batch across uploads
        for d in done:
            stored = await core.get(DEFAULT_TENANT, d.record.id, with_vector=True)
            assert stored.caption.startswith("a picture of brightness") and stored.caption_state == "done"
            assert stored.job.attempts == 1 and not stored.job.lease_owner
            assert np.array_equal(stored.vector, core.store.records[d.record.id].vector)
            assert core.queueing.inputs.get(d.record.id) is None  # the input is removed once captioned
        assert await core.thumbnail(DEFAULT_TENANT, done[0].record.id)  # written back whole
        stats = await core.caption_queue()
        assert (stats.pending, stats.failed, stats.oldest_pending_at) == (0, 0, None)

    run(main())


def test_waiting_for_the_caption_and_skipping_it_bypass_the_queue():
    core = fake_service()

    async def main():
        (waited,) = await upload(core, [4], wait_for_caption=True)
        assert waited.record.caption_state == "done" and waited.record.caption.startswith("a picture of")
        (skipped,) = await upload(core, [5], captions=False)
        assert skipped.record.caption_state == "none" and core.queueing.inputs.get(skipped.record.id) is None
        assert (await core.caption_queue()).pending == 0
        refused = await asyncio.gather(upload(core, [6], captions=False, wait_for_caption=True), return_exceptions=True)
        assert isinstance(refused[0], ServiceError) and refused[0].kind is ErrorKind.INVALID_ARGUMENT

    run(main())


def test_a_failing_caption_is_retried_with_backoff_then_marked_failed_with_its_reason():
    core = fake_service(caption_max_attempts=3, caption_retry_s=60)

    async def main():
        (done,) = await upload(core, [7])
        core.inference.fail = ServiceError(ErrorKind.UNAVAILABLE, "Triton is down")
        worker = worker_of(core)
        assert await worker.step() == 1
        record = core.store.records[done.record.id]
        assert record.caption_state == "pending" and record.caption_error == "Triton is down"
        assert record.job.attempts == 1 and 55_000 < record.job.retry_at_ms - int(time.time() * 1000) <= 60_000
        assert await worker.step() == 0  # not due before its retry time
        retry_now = worker_of(core, retry_s=0)
        core.store.records[done.record.id] = replace(record, job=replace(record.job, retry_at_ms=0))
        await retry_now.drain()
        record = core.store.records[done.record.id]
        assert record.caption_state == "failed" and record.job.attempts == 3
        assert record.caption_error == "Triton is down (after 3 attempts)"
        assert core.queueing.inputs.get(done.record.id) is None
        assert (worker.counts.retried, retry_now.counts.retried, retry_now.counts.failed) == (1, 1, 1)
        assert (await core.caption_queue()).failed == 1

    run(main())


def test_a_record_whose_input_is_missing_fails_with_that_reason():
    core = fake_service()

    async def main():
        (done,) = await upload(core, [8])
        core.queueing.inputs.discard(done.record.id)
        await drain(core)
        record = core.store.records[done.record.id]
        assert record.caption_state == "failed" and "missing from the caption spool" in record.caption_error

    run(main())


def test_a_record_deleted_while_it_is_captioned_is_never_written_back():
    core = fake_service()
    caption = core.inference.caption

    async def deleting(pixels):
        for record_id in list(core.store.records):
            await core.delete(DEFAULT_TENANT, record_id)
        return await caption(pixels)

    async def main():
        await upload(core, [9, 10])
        core.inference.caption = deleting
        counts = await drain(core)
        assert core.store.records == {} and counts.captioned == 0

    run(main())


def test_a_delete_landing_between_the_last_check_and_the_write_is_undone_after_the_write():
    core = fake_service()
    write = core.store.upsert

    async def deleted_just_before(records):
        if any(r.caption_state == "done" for r in records):
            core.store.upsert = write
            for r in records:  # the delete lands after the worker's strong re-read, before its write
                await core.delete(DEFAULT_TENANT, r.id)
        await write(records)

    async def main():
        await upload(core, [11])
        core.store.upsert = deleted_just_before
        counts = await drain(core)
        assert core.store.records == {} and counts.undone_deletes == 1

    run(main())


def test_two_workers_never_caption_the_same_record():
    core = fake_service(caption_batch=8)

    async def main():
        await upload(core, range(20, 28))
        first, second = worker_of(core), worker_of(core)
        await asyncio.gather(first.drain(), second.drain())
        rows = sum(n for model, n in core.inference.calls if model == "blip_caption")
        assert rows == 8 and first.counts.captioned + second.counts.captioned == 8
        assert all(r.caption_state == "done" for r in core.store.records.values())

    run(main())


def test_the_records_of_a_worker_that_died_are_due_again_when_its_lease_expires():
    core = fake_service()

    async def main():
        await upload(core, [30, 31])
        dead = worker_of(core, lease_s=0.3)
        assert len(await dead.claim()) == 2  # claimed, then it dies before captioning
        alive = worker_of(core)
        assert await alive.step() == 0  # leased to the dead worker
        await asyncio.sleep(0.35)
        await alive.drain()
        assert alive.counts.captioned == 2
        assert all(r.caption_state == "done" for r in core.store.records.values())

    run(main())


def test_a_slow_claim_is_dropped_and_its_records_wait_for_the_lease():
    core = fake_service()
    read = core.store.captions_due

    async def slow(limit, now_ms):
        await asyncio.sleep(0.05)
        return await read(limit, now_ms)

    async def main():
        await upload(core, [32])
        core.store.captions_due = slow
        worker = worker_of(core, settle_s=0.02)  # a claim must take less than this
        assert await worker.step() == 0 and worker.counts.dropped_claims == 1
        assert core.store.records[next(iter(core.store.records))].job.lease_owner == worker.owner

    run(main())


def test_a_worker_stopped_mid_batch_releases_its_records_at_once():
    core = fake_service()
    started = asyncio.Event()

    async def endless(pixels):
        started.set()
        await asyncio.sleep(3600)

    async def main():
        await upload(core, [33, 34])
        caption = core.inference.caption
        core.inference.caption = endless
        stopped = worker_of(core)
        task = asyncio.create_task(stopped.step())
        await started.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert all(not r.job.lease_owner and r.caption_state == "pending" for r in core.store.records.values())
        core.inference.caption = caption
        assert (await drain(core)).captioned == 2  # due at once, no lease to wait for

    run(main())


def test_batch_after_batch_each_written_while_the_next_is_captioned():
    core = fake_service(caption_batch=4)

    async def main():
        await upload(core, range(40, 58))
        worker = worker_of(core)
        await worker.drain()
        assert worker.counts.captioned == 18 and [n for m, n in core.inference.calls if m == "blip_caption"] == [4, 4, 4, 4, 2]
        assert all(r.caption_state == "done" and not r.job.lease_owner for r in core.store.records.values())

    run(main())


def test_a_record_read_back_twice_is_held_by_no_worker_until_a_later_claim_leaves_one_row():
    """Two claims written as a delete and an insert each (Milvus 2.3 with tenants) can leave both rows; each
    worker then reads the record twice and must not caption it: the next claim after the lease does."""
    core = fake_service()
    read = core.store.get

    async def twice(tenant, ids, with_vectors=False, strong=False):
        found = await read(tenant, ids, with_vectors, strong)
        return found + found if strong else found

    async def main():
        (done,) = await upload(core, [40])
        core.store.get = twice
        first = worker_of(core, lease_s=0.05)
        await first.drain()
        assert first.counts.captioned == 0 and core.store.records[done.record.key].caption_state == "pending"
        core.store.get = read
        await asyncio.sleep(0.06)  # the abandoned claim's lease (50 ms here) runs out
        later = worker_of(core)
        await later.drain()
        assert later.counts.captioned == 1 and core.store.records[done.record.key].caption_state == "done"

    run(main())
