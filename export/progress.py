"""Progress lines with timings for long export steps."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Progress:
    """``label: done/total, elapsed, ETA`` lines for a loop of similar parts (minutes of silence look hung)."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done, self.start = label, total, 0, time.perf_counter()

    def advance(self, count: int = 1) -> None:
        self.done += count
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        say(f"{self.label}: {self.done}/{self.total}, {elapsed:.0f}s so far, about {eta:.0f}s to go")


@contextmanager
def step(label: str):
    """Print ``label ...`` now and ``label: done in N.Ns`` when the block ends."""
    say(f"{label} ...")
    start = time.perf_counter()
    yield
    say(f"{label}: done in {time.perf_counter() - start:.1f}s")
