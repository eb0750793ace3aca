"""Progress lines with timings for long export steps."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def step(label: str):
    """Print ``label ...`` now and ``label: done in N.Ns`` when the block ends."""
    say(f"{label} ...")
    start = time.perf_counter()
    yield
    say(f"{label}: done in {time.perf_counter() - start:.1f}s")
