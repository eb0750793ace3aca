"""Read-your-writes across gateway replicas without paying for Strong reads: every write gives a
consistency token (the store's timestamp of the write), and a read that carries one sees at least
every write up to it, whichever replica wrote. Transports carry the token at their edge (HTTP
``X-Consistency-Token`` both ways, gRPC ``x-consistency-token`` metadata in and trailing metadata out)
and run each call inside ``consistency(token)``; stores read ``read_after()`` and report ``wrote(...)``
through it, as deadlines go through gateway.core.deadlines. Tokens are opaque to clients: they echo
the latest one they received."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import ErrorKind, ServiceError

TOKEN = re.compile(r"^[0-9]{1,20}$")


@dataclass
class Consistency:
    after: int | None  # the token this call's reads must see past (None: the store's own consistency)
    written: int | None = None  # the token of this call's last write


_CURRENT: ContextVar[Consistency | None] = ContextVar("consistency", default=None)


@contextmanager
def consistency(token: str | None) -> Iterator[Consistency]:
    """A call's consistency: reads after ``token`` (a token this service gave, or None), and the token
    of the call's writes in ``.written`` afterwards. INVALID_REQUEST for a token this service cannot
    have given."""
    if token is not None and not TOKEN.match(token.strip()):
        raise ServiceError(ErrorKind.INVALID_REQUEST, "a consistency token is the X-Consistency-Token (gRPC:"
                           " x-consistency-token) a write returned: digits only")
    state = Consistency(int(token) if token else None)
    reset = _CURRENT.set(state)
    try:
        yield state
    finally:
        _CURRENT.reset(reset)


def read_after() -> int | None:
    """The token the current call's reads must see past, if it gave one."""
    state = _CURRENT.get()
    return state.after if state else None


def wrote(token: int) -> None:
    """A store's report of a write's token (the latest of a call's writes is what it returns)."""
    state = _CURRENT.get()
    if state is not None:
        state.written = max(token, state.written or 0)
