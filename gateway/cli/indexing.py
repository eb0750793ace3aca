"""Indexing a folder: resumable (content already indexed is skipped without upload), batched, several
batches in flight, near-duplicate detection, unreadable files reported one by one."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ErrorKind, ServiceError
from ..core.images import decode, perceptual_hash
from ..core.records import Indexed, content_id
from .clients import Client

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
# refusals of one file; any other (no key, no scope, rate limit, a dependency down) stops the whole run
FILE_ERRORS = {ErrorKind.INVALID_ARGUMENT, ErrorKind.TOO_LARGE, ErrorKind.UNSUPPORTED_MEDIA_TYPE}


def reason(exc: ServiceError) -> str:
    return f"[{exc.code}] {exc.message}"


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class IndexSummary:
    indexed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already indexed (same bytes)
    near_duplicates: list[tuple[str, str, int]] = field(default_factory=list)  # file, of, pHash distance
    failed: list[tuple[str, str]] = field(default_factory=list)  # file, reason
    captions_pending: int = 0  # indexed (searchable) with their captions queued


def hash_distance(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


async def find_near_duplicate(client: Client, data: bytes, max_distance: int, max_pixels: int) -> tuple[str, int] | None:
    """(source, pHash distance) of an indexed near-duplicate: CLIP proposes the 10 most similar
    images, the perceptual hash decides (resized or recompressed copies: 0 bits; small crops: a
    few; different photos: 20+ of 64)."""
    own = await asyncio.to_thread(lambda: perceptual_hash(decode(data, max_pixels)))
    candidates = [(hash_distance(own, hit.record.phash), hit.record.source)
                  for hit in await client.search_image(data, 10, []) if hit.record.phash]
    best = min(candidates, default=None)
    return (best[1], best[0]) if best and best[0] <= max_distance else None


async def index_folder(client: Client, root: Path, metadata: dict, batch_size: int, near_duplicates: str | None,
                       phash_distance: int, concurrency: int, captions: bool | None, max_pixels: int,
                       progress: bool = True, wait_for_caption: bool = False) -> IndexSummary:
    """Index every image under ``root``: up to ``concurrency`` batches in flight (one when looking for
    near-duplicates, so that copies within one run are compared with what was just indexed)."""
    from tqdm import tqdm

    summary = IndexSummary()
    paths = image_files(root)
    bar = tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr)
    slots = asyncio.Semaphore(1 if near_duplicates else max(1, concurrency))
    in_flight: set[asyncio.Task] = set()
    stopped: list[ServiceError] = []  # a refusal of the whole run, raised by the loop below

    def count(done: Indexed) -> None:
        (summary.indexed if done.created else summary.skipped).append(done.record.source)
        summary.captions_pending += done.created and done.record.caption_state == "pending"
        bar.set_postfix(embedded=len(summary.indexed), captions_queued=summary.captions_pending, refresh=False)

    async def send(batch: list[tuple[str, bytes]]) -> None:
        try:
            try:
                for done in await client.index(batch, metadata, captions, wait_for_caption):
                    count(done)
            except ServiceError as exc:  # one bad file fails a batch: retry one by one to name it
                if exc.kind not in FILE_ERRORS:
                    raise
                for name, data in batch:
                    try:
                        (done,) = await client.index([(name, data)], metadata, captions, wait_for_caption)
                        count(done)
                    except ServiceError as one:
                        if one.kind not in FILE_ERRORS:
                            raise
                        summary.failed.append((name, reason(one)))
            bar.update(len(batch))
        except ServiceError as exc:
            stopped.append(exc)
        finally:
            slots.release()

    async def flush(batch: list[tuple[str, bytes]]) -> None:
        if batch:
            await slots.acquire()  # bounds the files held in memory, too
            task = asyncio.create_task(send(batch))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            if near_duplicates:
                await task

    pending: list[tuple[str, bytes]] = []
    for path in paths:
        if stopped:
            break
        name = path.relative_to(root).as_posix()  # the record's source, whichever way the CLI reaches the service
        try:
            data = path.read_bytes()
        except OSError as exc:
            summary.failed.append((name, str(exc)))
            bar.update(1)
            continue
        if await client.exists(content_id(data)):
            summary.skipped.append(name)
            bar.update(1)
            continue
        if near_duplicates:
            try:
                match = await find_near_duplicate(client, data, phash_distance, max_pixels)
            except ServiceError as exc:
                if exc.kind not in FILE_ERRORS:
                    raise
                summary.failed.append((name, reason(exc)))
                bar.update(1)
                continue
            if match:
                summary.near_duplicates.append((name, *match))
                if near_duplicates == "skip":
                    bar.update(1)
                    continue
        pending.append((name, data))
        if len(pending) >= batch_size:
            await flush(pending)
            pending = []
    if not stopped:
        await flush(pending)
    await asyncio.gather(*in_flight)
    bar.close()
    if stopped:
        raise stopped[0]
    return summary
