"""The two things the service needs from outside: something that runs the models, and a vector store.
Implementations live in gateway.backends; tests use small in-memory fakes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..runtime.preprocess import PixelSpec
from .records import ImageRecord


@dataclass(frozen=True)
class ModelInfo:
    """What the models take and give (read from the files the export wrote)."""

    clip_pixels: PixelSpec
    blip_pixels: PixelSpec | None  # None: captions are off
    embedding_dim: int
    context_length: int
    sources: dict[str, str]  # model -> the checkpoint it was exported from

    def mismatched_sources(self, clip_model: str, blip_model: str) -> list[str]:
        wanted = {"clip_image": clip_model, "clip_text": clip_model, "blip_caption": blip_model}
        return [f"{model} was exported from {source}, not {wanted[model]}"
                for model, source in self.sources.items() if source != wanted[model]]


class Inference(Protocol):
    """Runs the models. Arrays carry a leading batch axis; failures are ServiceErrors
    (UNAVAILABLE, TIMEOUT, INTERNAL)."""

    info: ModelInfo

    async def embed_images(self, pixels: np.ndarray) -> np.ndarray: ...

    async def embed_texts(self, texts: list[str]) -> np.ndarray: ...

    def count_tokens(self, texts: list[str]) -> int: ...

    async def caption(self, pixels: np.ndarray) -> list[str]: ...

    async def check_ready(self) -> None: ...

    async def close(self) -> None: ...


class VectorStore(Protocol):
    """One collection of image records, searched by cosine similarity. ``expression`` is a filter
    rendered by gateway.core.filters (typed, escaped literals)."""

    async def start(self) -> None: ...

    async def upsert(self, records: list[ImageRecord]) -> None: ...

    async def get(self, ids: list[str], with_vectors: bool = False) -> list[ImageRecord]: ...

    async def thumbnail(self, record_id: str) -> str | None: ...

    async def delete(self, record_id: str) -> None: ...

    async def list_records(self, limit: int, offset: int) -> list[ImageRecord]: ...

    async def all_records(self) -> list[ImageRecord]: ...

    async def count(self) -> int: ...

    async def search(self, vectors: np.ndarray, k: int, expression: str = "") -> list[list[tuple[ImageRecord, float]]]: ...

    # "on" where search_captions works, else "off: <why>"
    keyword_search: str

    async def search_captions(self, text: str, k: int, expression: str = "") -> list[tuple[ImageRecord, float]]: ...

    async def check_ready(self) -> None: ...

    async def close(self) -> None: ...
