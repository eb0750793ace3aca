"""A fake of the core's inference protocol and the in-memory store with a recorder, for fast unit tests
of the core and the routes. (The real backends are tested against real ONNX Runtime, Triton and Milvus
in the integration tests; the in-memory store passes the same store contract as Milvus, tests/contract.)"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gateway.backends.memory import InMemoryStore
from gateway.core.caption_queue import CaptionWorker, WorkerCounts
from gateway.core.errors import ServiceError
from gateway.core.filters import Condition
from gateway.core.protocols import ModelInfo
from gateway.core.records import ImageRecord
from gateway.core.service import ImageSearchService
from gateway.runtime.preprocess import PixelSpec
from gateway.runtime.text import TextSpec
from gateway.settings import Settings
from gateway.wiring import service_over

CLIP_SPEC = PixelSpec(16, 16, 16, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
BLIP_SPEC = PixelSpec(24, 24, None, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector, axis=-1, keepdims=True)).astype(np.float32)


class FakeInference:
    """Deterministic 'models': an image's vector comes from its pixels, a text's from a hash of its
    words, a caption names the image's mean brightness. ``fail`` makes every call raise it."""

    def __init__(self, dim: int = 8, captions: bool = True):
        self.info = ModelInfo(CLIP_SPEC, BLIP_SPEC if captions else None, dim, TextSpec(77, "<|endoftext|>"),
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


class RecordingStore(InMemoryStore):
    """The in-memory store (gateway.backends.memory) with what unit tests look at: upserts counted, the
    conditions of each search recorded, start and close noted, and ``fail`` raised by reads, writes,
    searches and readiness checks while it is set."""

    def __init__(self, keyword_search: bool = False):
        super().__init__(keyword_search=keyword_search, max_window=16384)
        self.upserts = 0
        self.searched: list[list[Condition]] = []  # the conditions each search was given, in order
        self.fail: ServiceError | None = None
        self.started = self.closed = False
        self.strong_reads = 0

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def upsert(self, records: list[ImageRecord], new: bool = False) -> None:
        self._check()
        self.upserts += 1
        await super().upsert(records, new)

    async def get(self, tenant: str, ids: list[str], with_vectors: bool = False, strong: bool = False) -> list[ImageRecord]:
        self._check()
        self.strong_reads += strong
        return await super().get(tenant, ids, with_vectors, strong)

    async def delete(self, tenant: str, record_id: str) -> None:
        self._check()
        await super().delete(tenant, record_id)

    async def search(self, tenant: str | None, vectors: np.ndarray, k: int, conditions: Sequence[Condition] = ()):
        self._check()
        self.searched.append(list(conditions))
        return await super().search(tenant, vectors, k, conditions)

    async def search_captions(self, tenant: str, text: str, k: int, conditions: Sequence[Condition] = ()):
        self._check()
        self.searched.append(list(conditions))
        return await super().search_captions(tenant, text, k, conditions)

    async def check_ready(self) -> None:
        self._check()

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True


def fake_service(captions: bool = True, keyword_search: bool = False, **settings) -> ImageSearchService:
    """The service over FakeInference and a RecordingStore, with unit_settings (``settings`` override them:
    ``max_k=5``; ``drain`` runs a caption worker)."""
    return service_over(unit_settings(**settings), FakeInference(captions=captions), RecordingStore(keyword_search))


def unit_settings(**settings) -> Settings:
    """Settings for fast tests: no .env file, the caption spool in a new temporary folder, no caption
    worker of the service's own, claims settling in 10 ms; ``settings`` override them."""
    defaults = {"caption_spool": Path(tempfile.mkdtemp(prefix="spool-")), "caption_worker": False, "caption_settle_s": 0.01}
    return Settings(_env_file=None, **{**defaults, **settings})


async def drain(core: ImageSearchService) -> WorkerCounts | None:
    """Caption everything due in a service's queue with a worker of its own; what the worker did."""
    if core.queueing is None or not core.captioning:
        return None
    worker = CaptionWorker(core.inference, core.store, core.queueing.inputs, core.queueing.options)
    await worker.drain()
    return worker.counts
