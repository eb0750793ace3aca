"""Small in-memory fakes of the core's two protocols, for fast unit tests of the core and the routes.
(The real backends are tested against real ONNX Runtime, Triton and Milvus in the integration tests.)"""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np

from gateway.core.errors import ServiceError
from gateway.core.protocols import ModelInfo
from gateway.core.records import ImageRecord
from gateway.core.text_ranking import words
from gateway.runtime.preprocess import PixelSpec

CLIP_SPEC = PixelSpec(16, 16, 16, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
BLIP_SPEC = PixelSpec(24, 24, None, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector, axis=-1, keepdims=True)).astype(np.float32)


class FakeInference:
    """Deterministic 'models': an image's vector comes from its pixels, a text's from a hash of its
    words, a caption names the image's mean brightness. ``fail`` makes every call raise it."""

    def __init__(self, dim: int = 8, captions: bool = True):
        self.info = ModelInfo(CLIP_SPEC, BLIP_SPEC if captions else None, dim, 77,
                              {"clip_image": "fake-clip", "clip_text": "fake-clip", "blip_caption": "fake-blip"})
        self.calls: list[tuple[str, int]] = []  # (model, rows)
        self.fail: ServiceError | None = None
        self.ready_error: ServiceError | None = None
        self.closed = False

    def _check(self, model: str, rows: int) -> None:
        self.calls.append((model, rows))
        if self.fail is not None:
            raise self.fail

    async def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        self._check("clip_image", len(pixels))
        flat = pixels.reshape(len(pixels), -1).astype(np.float32)
        return unit(flat[:, :self.info.embedding_dim] + 1.0)

    def text_vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return unit(np.random.default_rng(seed).normal(size=self.info.embedding_dim))

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        self._check("clip_text", len(texts))
        return np.stack([self.text_vector(t) for t in texts])

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(t.split()) + 2 for t in texts)

    async def caption(self, pixels: np.ndarray) -> list[str]:
        self._check("blip_caption", len(pixels))
        await asyncio.sleep(0)
        return [f"a picture of brightness {int(p.mean())}" for p in pixels]

    async def check_ready(self) -> None:
        if self.ready_error is not None:
            raise self.ready_error

    async def close(self) -> None:
        self.closed = True


class FakeStore:
    """Records in a dict; exact cosine search; caption search by the number of the query's words a
    caption holds (once keyword_search is set "on"). Filter expressions are recorded, not evaluated."""

    def __init__(self):
        self.keyword_search = "off: a fake store"
        self.records: dict[str, ImageRecord] = {}
        self.expressions: list[str] = []
        self.upserts = 0
        self.fail: ServiceError | None = None
        self.started = self.closed = False

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def start(self) -> None:
        self.started = True

    async def upsert(self, records: list[ImageRecord]) -> None:
        self._check()
        await asyncio.sleep(0)  # let concurrent writers interleave, as a real store would
        self.upserts += 1
        self.records.update({r.id: r for r in records})

    async def get(self, ids: list[str], with_vectors: bool = False) -> list[ImageRecord]:
        self._check()
        await asyncio.sleep(0)
        return [self.records[i] for i in ids if i in self.records]

    async def thumbnail(self, record_id: str) -> str | None:
        record = self.records.get(record_id)
        return record.thumbnail if record else None

    async def delete(self, record_id: str) -> None:
        self._check()
        self.records.pop(record_id, None)

    async def list_records(self, limit: int, offset: int) -> list[ImageRecord]:
        return sorted(self.records.values(), key=lambda r: r.id)[offset:offset + limit]

    async def all_records(self) -> list[ImageRecord]:
        return list(self.records.values())

    async def count(self) -> int:
        return len(self.records)

    async def search(self, vectors: np.ndarray, k: int, expression: str = "") -> list[list[tuple[ImageRecord, float]]]:
        self._check()
        self.expressions.append(expression)
        results = []
        for query in vectors:
            scored = [(r, float(np.dot(r.vector, query))) for r in self.records.values() if r.vector is not None]
            results.append(sorted(scored, key=lambda s: s[1], reverse=True)[:k])
        return results

    async def search_captions(self, text: str, k: int, expression: str = "") -> list[tuple[ImageRecord, float]]:
        self._check()
        assert self.keyword_search == "on", "the service asked a store without keyword search"
        self.expressions.append(expression)
        wanted = words(text)
        scored = [(r, float(len(wanted & words(r.caption)))) for r in self.records.values()]
        return sorted([s for s in scored if s[1] > 0], key=lambda s: s[1], reverse=True)[:k]

    async def check_ready(self) -> None:
        self._check()

    async def close(self) -> None:
        self.closed = True
