"""What the routes do, as plain async functions over an Inference and a VectorStore."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import BadRequest
from .inference import Inference
from .preprocess import decode_image, to_pixels
from .store import ImageRecord, VectorStore, content_id

WORD = re.compile(r"[a-z0-9]+")
STOP_WORDS = frozenset("a an the of in on at to and or with for by is are from".split())


THUMBNAIL_SIZE = 192


@dataclass
class PreparedImage:
    id: str
    clip_pixels: np.ndarray
    blip_pixels: np.ndarray | None
    phash: str  # "" and
    thumbnail: str  # "" unless prepared for a stored record (base64 JPEG for the search page)


def thumbnail(image: Image.Image) -> str:
    small = image.copy()
    small.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode()


def prepare(data: bytes, inference: Inference, max_pixels: int, blip: bool = False, record: bool = False) -> PreparedImage:
    """Decode once and derive only what the caller uses: CLIP pixels always, BLIP pixels for
    captions, perceptual hash and thumbnail for a stored record. CPU-bound: call it in a thread."""
    import imagehash

    image: Image.Image = decode_image(data, max_pixels)
    info = inference.info
    return PreparedImage(content_id(data), to_pixels(image, info.clip_pixels),
                         to_pixels(image, info.blip_pixels) if blip and info.blip_pixels is not None else None,
                         str(imagehash.phash(image)) if record else "", thumbnail(image) if record else "")


async def prepare_all(files: list[bytes], inference: Inference, max_pixels: int, blip: bool = False,
                      record: bool = False) -> list[PreparedImage]:
    return await asyncio.gather(*(asyncio.to_thread(prepare, data, inference, max_pixels, blip, record) for data in files))


async def embed_and_caption(images: list[PreparedImage], inference: Inference, captions: bool) -> tuple[np.ndarray, list[str]]:
    embed = inference.embed_images(np.stack([i.clip_pixels for i in images]))
    if not captions:
        return await embed, [""] * len(images)
    caption = inference.caption(np.stack([i.blip_pixels for i in images]))
    vectors, texts = await asyncio.gather(embed, caption)
    return vectors, texts


@dataclass
class Indexed:
    record: ImageRecord
    created: bool


async def index_images(files: list[tuple[str, bytes]], metadata: dict, inference: Inference, store: VectorStore,
                       max_pixels: int, captions: bool) -> list[Indexed]:
    """Index uploads. Same bytes -> same id: images already stored are returned as they are (no
    inference, no write). New images are embedded and captioned first and written in one upsert at
    the end, so a failure anywhere writes nothing."""
    prepared = await prepare_all([data for _, data in files], inference, max_pixels, blip=captions, record=True)
    ids = sorted({p.id for p in prepared})
    async with store.write_locks.hold(ids):  # concurrent uploads of one image: the first writes, the rest find it
        existing = {r.id: r for r in await store.get(ids)}
        fresh = {p.id: (name, p) for (name, _), p in zip(files, prepared) if p.id not in existing}
        records: dict[str, ImageRecord] = {}
        if fresh:
            order = list(fresh.values())
            vectors, texts = await embed_and_caption([p for _, p in order], inference, captions)
            now = int(time.time())
            for (name, p), vector, text in zip(order, vectors, texts):
                records[p.id] = ImageRecord(p.id, text, name, metadata, now, p.phash, vector, p.thumbnail)
            await store.upsert(list(records.values()))
    return [Indexed(existing[p.id], False) if p.id in existing else Indexed(records[p.id], True) for p in prepared]


async def search_image(data: bytes, k: int, expression: str, inference: Inference, store: VectorStore,
                       max_pixels: int) -> list[tuple[ImageRecord, float]]:
    (prepared,) = await prepare_all([data], inference, max_pixels)
    vectors = await inference.embed_images(prepared.clip_pixels[None])
    return (await store.search(vectors, k, expression))[0]


def words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if w not in STOP_WORDS}


@dataclass
class TextHit:
    record: ImageRecord
    score: float
    clip_score: float
    caption_match: float


async def search_text(query: str, k: int, expression: str, inference: Inference, store: VectorStore,
                      caption_weight: float, max_k: int) -> list[TextHit]:
    """CLIP text->image similarity, re-ranked with caption word overlap.

    Fusion: fetch the top max(4k, 50) images by CLIP cosine, then score = cosine + w * overlap, where
    overlap is the share of the query's content words found in the caption (0..1) and w is
    GATEWAY_CAPTION_WEIGHT (0.1). CLIP decides; captions break near-ties in favour of images whose
    caption names what was asked. w = 0 gives pure CLIP ranking.
    """
    query = query.strip()
    if not query:
        raise BadRequest("the query is empty")
    vectors = await inference.embed_texts([query])
    pool = min(max(4 * k, 50), max_k) if caption_weight > 0 else k
    hits = (await store.search(vectors, pool, expression))[0]
    wanted = words(query)
    fused = []
    for record, clip_score in hits:
        overlap = len(wanted & words(record.caption)) / len(wanted) if wanted else 0.0
        fused.append(TextHit(record, clip_score + caption_weight * overlap, clip_score, overlap))
    fused.sort(key=lambda h: h.score, reverse=True)
    return fused[:k]
