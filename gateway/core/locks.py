"""Per-key asyncio locks: writers of one image id take its lock."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager


class KeyedLocks:
    """asyncio locks by key, taken in sorted order (no deadlock), dropped when nobody holds or waits."""

    def __init__(self):
        self.locks: dict[str, list] = {}  # key -> [lock, users]

    @asynccontextmanager
    async def hold(self, keys):
        keys = sorted(set(keys))
        entries = [self.locks.setdefault(key, [asyncio.Lock(), 0]) for key in keys]
        for entry in entries:
            entry[1] += 1
        acquired = []
        try:
            for entry in entries:
                await entry[0].acquire()
                acquired.append(entry)
            yield
        finally:
            for entry in acquired:
                entry[0].release()
            for key, entry in zip(keys, entries):
                entry[1] -= 1
                if entry[1] == 0:
                    self.locks.pop(key, None)
