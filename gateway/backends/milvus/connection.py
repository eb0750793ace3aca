"""The connection to Milvus: one pymilvus MilvusClient on a Milvus Lite file (``data/images.db``) or a
server (``http://host:19530``), and every blocking call run in a worker thread with a deadline.
Connection failures become UNAVAILABLE, deadlines TIMEOUT."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import re
import time
from collections.abc import Callable
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


def lite_file_held(uri: str) -> bool:
    """Whether another process holds a Milvus Lite file: milvus-lite takes a POSIX lock on
    ``.<name>.lock`` beside it. Asked only after this process failed to open the file, so this
    process holds no lock on it, and the probe's unlock releases nothing of its own."""
    path = Path(uri).absolute().resolve()
    lock = path.parent / f".{path.name}.lock"
    if not lock.exists():
        return False
    with open(lock, "a") as fh:
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(fh, fcntl.LOCK_UN)
    return False


def open_client(uri: str, token: str, timeout_s: float) -> tuple[Any, str]:
    """A MilvusClient and the version of what it reached. Two processes must never write one Lite file
    (the second would fail to open it, and nothing it wrote would be seen): MISCONFIGURED saying so."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import ConnectionConfigException

    if is_lite(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        client = MilvusClient(uri, token=token, timeout=timeout_s)
    except ConnectionConfigException as exc:
        if is_lite(uri) and lite_file_held(uri):
            raise ServiceError(ErrorKind.MISCONFIGURED, (
                f"the Milvus Lite file {uri} is in use by another process (a running gateway?), and two"
                " processes must never write one Lite file: talk to that gateway instead (image-search --url"
                " http://localhost:8000 ...), or stop it first")) from exc
        raise
    return client, LITE_VERSION if is_lite(uri) else client.get_server_version()


class Calls:
    """Blocking pymilvus calls in worker threads, each within its deadline (the caller's, when nearer
    than ours) and timed per operation. Every operation the store makes is idempotent (reads, upserts
    of content-keyed rows, deletes by id), so a transient failure (a dropped connection, a GOAWAY) is
    retried once before it becomes UNAVAILABLE."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s

    async def __call__(self, operation: str, fn: Callable, *args, deadline: float | None = None, **kwargs):
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
