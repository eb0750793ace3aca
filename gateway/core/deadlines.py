"""The caller's deadline, carried to every dependency call the request makes.

A transport that knows its caller's deadline (gRPC: ``context.time_remaining()``) runs the request
``within`` it; backends bound each Triton or Milvus call by ``budget(their own timeout)``, so a call
never outlives the caller that waits for it, and a request whose deadline has passed makes no call.
Context variables follow the request into tasks and worker threads (asyncio copies them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .errors import timeout

_DEADLINE: ContextVar[float | None] = ContextVar("deadline", default=None)  # time.monotonic() seconds


@contextmanager
def within(seconds: float | None) -> Iterator[None]:
    """Run the enclosed calls with ``seconds`` left (None: no deadline of the caller's)."""
    token = _DEADLINE.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def budget(own_timeout: float) -> float:
    """Seconds a dependency call may take: its own timeout, or less when the caller's deadline is nearer.
    TIMEOUT when the deadline has already passed."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return own_timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise timeout("the request's deadline passed before the service could answer")
    return min(own_timeout, left)
