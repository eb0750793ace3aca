"""The connection to Milvus: one pymilvus MilvusClient on a Milvus Lite file (``data/images.db``) or a
server (``http://host:19530``), and every blocking call run in a worker thread with a deadline.
Connection failures become UNAVAILABLE, deadlines TIMEOUT."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from ...core.deadlines import budget
from ...core.errors import ErrorKind, ServiceError, timeout, unavailable
from ..metrics import STORE_SECONDS

log = logging.getLogger("gateway.store")
STARTUP_DEADLINE_S = 120.0
LITE_VERSION = "2.5.1 (Milvus Lite)"  # the milvus-lite pin (pyproject.toml); it has BM25 (checked)


def is_lite(uri: str) -> bool:
    """A Milvus Lite file rather than a server URI."""
    return "://" not in uri


def has_full_text(version: str) -> bool:
    """Whether a Milvus version has BM25 full-text search (functions over analyzed VARCHAR: 2.5+)."""
    found = re.match(r"v?(\d+)\.(\d+)", version)
    return found is not None and (int(found[1]), int(found[2])) >= (2, 5)


def upsert_places_partition_keys(version: str) -> bool:
    """Whether a server's upsert puts each row in its partition key's partition. Milvus 2.3 hashed another
    field (milvus#30607, fixed in 2.3.10 and 2.4): measured on 2.3.5, 2 of 32 rows upserted for one tenant were
    found by a filter on it, every one after an insert. Every 2.3 counts as affected (the fix's release is
    not certain); the store then writes new rows with insert and rewrites as a delete and an insert."""
    found = re.match(r"v?(\d+)\.(\d+)", version)
    return found is None or (int(found[1]), int(found[2])) >= (2, 4)


def lite_file_held(uri: str) -> bool:
    """Whether another process holds a Milvus Lite file. milvus-lite takes a POSIX lock on
    ``.<name>.lock`` beside it, and a second process must not even try to open the file: milvus-lite
    2.5.1's failed attempt deletes the lock file on its way out (Server.stop unlinks it), and the
    next attempt would then lock a new file and write beside the owner. Asked without opening the
    lock file (closing any descriptor of a file drops this process's own POSIX locks on it): the
    kernel's lock table, /proc/locks, lists who holds it. Elsewhere than Linux: not known (False)."""
    lock = Path(uri).absolute().resolve()
    lock = lock.parent / f".{lock.name}.lock"
    try:
        held = lock.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return False
    where = f"{os.major(held.st_dev):02x}:{os.minor(held.st_dev):02x}:{held.st_ino}"
    for entry in table.splitlines():
        fields = entry.split()
        if "->" in fields or len(fields) < 6:
            continue  # a process waiting for the lock (milvus-lite's own binary waits on its parent's)
        if fields[5] == where and fields[4] != str(os.getpid()):
            return True
    return False


def open_client(uri: str, token: str, timeout_s: float) -> tuple[Any, str]:
    """A MilvusClient and the version of what it reached. Two processes must never write one Lite file:
    MISCONFIGURED saying what to do instead, before any attempt to open it."""
    from pymilvus import MilvusClient

    if is_lite(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        if lite_file_held(uri):
            raise ServiceError(ErrorKind.MISCONFIGURED, (
                f"the Milvus Lite file {uri} is in use by another process (a running gateway?), and two"
                " processes must never write one Lite file: talk to that gateway instead (image-search --url"
                " http://localhost:8000 ...), or stop it first"))
    client = MilvusClient(uri, token=token, timeout=timeout_s)
    return client, LITE_VERSION if is_lite(uri) else client.get_server_version()


class WritesApart:
    """Reads share, writes exclude (waiting writers first). Milvus Lite applies an upsert as a delete and
    an insert that concurrent reads can fall between: measured with 2 rows upserted in a loop and reads
    beside it, 765 of 5,333 reads by id missed the row and 3,715 counts were short; with writes kept
    apart from reads, none missed. The caption queue rewrites every record when it claims and when it
    captions, so on Lite (one process: every reader and writer is here) reads wait for writes."""

    def __init__(self) -> None:
        self.readers = self.writers_waiting = 0
        self.writing = False
        self.changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self.changed is None:
            self.changed = asyncio.Condition()
        return self.changed

    @asynccontextmanager
    async def hold(self, write: bool) -> AsyncIterator[None]:
        changed = self._condition()
        async with changed:
            if write:
                self.writers_waiting += 1
                await changed.wait_for(lambda: not self.writing and self.readers == 0)
                self.writers_waiting -= 1
                self.writing = True
            else:
                await changed.wait_for(lambda: not self.writing and self.writers_waiting == 0)
                self.readers += 1
        try:
            yield
        finally:
            async with changed:
                if write:
                    self.writing = False
                else:
                    self.readers -= 1
                changed.notify_all()


class Calls:
    """Blocking pymilvus calls in worker threads, each within its deadline (the caller's, when nearer
    than ours) and timed per operation. Every operation the store makes is idempotent (reads, upserts
    of content-keyed rows, deletes by id), so a transient failure (a dropped connection, a GOAWAY) is
    retried once before it becomes UNAVAILABLE. ``apart``: writes (``write=True``) kept apart from reads
    (Milvus Lite, see WritesApart)."""

    def __init__(self, timeout_s: float, apart: WritesApart | None = None):
        self.timeout_s, self.apart = timeout_s, apart

    async def __call__(self, operation: str, fn: Callable, *args, deadline: float | None = None, write: bool = False,
                       **kwargs):
        if self.apart is None:
            return await self._call(operation, fn, *args, deadline=deadline, **kwargs)
        async with self.apart.hold(write):
            return await self._call(operation, fn, *args, deadline=deadline, **kwargs)

    async def _call(self, operation: str, fn: Callable, *args, deadline: float | None = None, **kwargs):
        start = time.perf_counter()
        try:
            for attempt in (1, 2):
                limit = budget(deadline or self.timeout_s)
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
