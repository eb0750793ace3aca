"""The in-process micro-batcher and the per-id write locks."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gateway.backends.batcher import MicroBatcher
from gateway.core.errors import ErrorKind, ServiceError
from gateway.core.locks import KeyedLocks


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_calls_share_one_run_and_get_their_own_rows_back():
    batches: list[list[list[int]]] = []

    def double(items: list[list[int]]) -> list[list[int]]:
        batches.append(items)
        return [[2 * x for x in item] for item in items]

    async def main():
        batcher = MicroBatcher("test", double, max_batch=64, max_delay=0.05)
        try:
            return await asyncio.gather(*(batcher.submit([i, i]) for i in range(10)))
        finally:
            await batcher.close()

    assert run(main()) == [[2 * i, 2 * i] for i in range(10)]
    assert len(batches) == 1 and sum(len(i) for b in batches for i in b) == 20


def test_a_batch_stops_at_max_rows():
    sizes: list[int] = []

    def rows_seen(items: list[list[int]]) -> list[int]:
        sizes.append(sum(len(i) for i in items))
        return [0] * len(items)

    async def main():
        batcher = MicroBatcher("test", rows_seen, max_batch=4, max_delay=0.05)
        try:
            await asyncio.gather(*(batcher.submit([1, 1]) for _ in range(6)))
        finally:
            await batcher.close()

    run(main())
    assert sizes == [4, 4, 4]


def test_runs_happen_off_the_event_loop_thread():
    threads: list[int] = []

    def record_thread(items):
        threads.append(threading.get_ident())
        time.sleep(0.05)
        return items

    async def main():
        batcher = MicroBatcher("test", record_thread, max_batch=1, max_delay=0)
        loop_ticks = 0

        async def tick():
            nonlocal loop_ticks
            for _ in range(5):
                await asyncio.sleep(0.01)
                loop_ticks += 1

        try:
            await asyncio.gather(batcher.submit([1]), tick())
        finally:
            await batcher.close()
        return loop_ticks

    assert run(main()) == 5  # the loop kept running while the model ran
    assert threads and threads[0] != threading.get_ident()


def test_a_failing_run_fails_every_caller_of_that_batch_as_internal():
    def broken(items):
        raise RuntimeError("onnxruntime exploded")

    async def main():
        batcher = MicroBatcher("clip", broken, max_batch=8, max_delay=0.02)
        try:
            return await asyncio.gather(*(batcher.submit([1]) for _ in range(3)), return_exceptions=True)
        finally:
            await batcher.close()

    results = run(main())
    assert all(isinstance(r, ServiceError) and r.kind is ErrorKind.INTERNAL and "onnxruntime exploded" in r.message
               for r in results)


def test_when_idle_runs_once_after_a_quiet_spell_that_follows_work_and_never_beside_a_batch():
    events: list[str] = []

    def run(items):
        events.append("run")
        time.sleep(0.05)
        return items

    async def scenario():
        batcher = MicroBatcher("m", run, max_batch=4, max_delay=0, rows=lambda item: 1, when_idle=lambda: events.append("idle"),
                               idle_s=0.1)
        await asyncio.sleep(0.3)  # no work yet: nothing to tidy
        await batcher.submit(1)
        await asyncio.sleep(0.05)  # within idle_s: the next call comes first
        await batcher.submit(2)
        await asyncio.sleep(0.4)
        await batcher.submit(3)
        await batcher.close()

    asyncio.run(scenario())
    assert events == ["run", "run", "idle", "run"]


def test_writers_of_one_key_take_turns_and_other_keys_do_not_wait():
    order: list[str] = []

    async def writer(locks: KeyedLocks, keys: list[str], name: str, hold: float):
        async with locks.hold(keys):
            order.append(f"{name}+")
            await asyncio.sleep(hold)
            order.append(f"{name}-")

    async def main():
        locks = KeyedLocks()
        await asyncio.gather(writer(locks, ["a"], "first", 0.05), writer(locks, ["a", "b"], "second", 0),
                             writer(locks, ["c"], "other", 0))
        return locks

    locks = run(main())
    assert order.index("first-") < order.index("second+")  # same key: one after the other
    assert order.index("other-") < order.index("first-")  # another key: did not wait
    assert locks.locks == {}  # nobody holds or waits: nothing kept


def test_locks_are_taken_in_sorted_order_so_crossed_writers_cannot_deadlock():
    async def main():
        locks = KeyedLocks()

        async def writer(keys):
            async with locks.hold(keys):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(asyncio.gather(*(writer(k) for k in (["x", "y"], ["y", "x"]) * 5)), 5)

    run(main())


@pytest.mark.parametrize("keys", [["a", "a", "b"], []])
def test_duplicate_and_empty_key_lists(keys):
    async def main():
        locks = KeyedLocks()
        async with locks.hold(keys):
            pass
        return locks.locks

    assert run(main()) == {}
