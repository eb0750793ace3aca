"""In-process inference (the embedded default): the repository's ONNX files run by ONNX Runtime.

A micro-batcher per model gathers concurrent calls up to a batch size or a delay, as Triton's
dynamic batcher does, and runs them in a worker thread, off the event loop. Text is tokenised and
images are expected as uint8 pixels exactly as for Triton: the same files, the same inputs.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.errors import ErrorKind, ServiceError
from ..runtime.blip_decode import BlipDecoder, CaptionText, GenerationSettings, caption_requests
from ..runtime.onnx_session import create_session
from .batcher import MicroBatcher
from .repository import RepositoryModels


def freed_memory_returner() -> Callable[[], int] | None:
    """glibc's malloc_trim(0), which hands the free pages of the heap back to the system (None where the
    C library is not glibc). Captioning's keys/values are large buffers freed after each batch, which
    glibc otherwise keeps: with the base models (docs/benchmarks.md, Memory) a trim took the process from
    3.1 to 2.2 GiB in 0.08 s, but the next batch then faults its buffers in again (0.3 s slower when
    trimmed after every batch), so the captioner trims only once it has been idle for a while."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


def lowered_priority(nice: int) -> Callable[[], None]:
    """Sets the calling thread's nice level (Linux: per thread; threads it starts inherit it, ONNX
    Runtime's intra-op threads among them, which a session starts when it is made)."""
    def lower() -> None:
        if nice:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    return lower


def _split(arrays: list[np.ndarray], output: np.ndarray) -> list[np.ndarray]:
    bounds = np.cumsum([len(a) for a in arrays])[:-1]
    return np.split(output, bounds)


class LocalInference(RepositoryModels):
    def __init__(self, repository: Path, captions: bool, caption_settings: GenerationSettings, *, max_batch: int,
                 max_delay_s: float, threads: int, caption_memory_mb: int, caption_nice: int):
        """``captions``: load BLIP; the rest as GATEWAY_LOCAL_*, GATEWAY_CAPTION_MEMORY_MB and
        GATEWAY_CAPTION_NICE (gateway.settings): BLIP runs in threads of lowered priority, made in the
        captioner's own thread, so that captions yield the CPU to CLIP (uploads, searches)."""
        super().__init__(repository, captions, caption_settings)
        image = create_session(repository / "clip_image" / "1" / "model.onnx", threads=threads)
        text = create_session(repository / "clip_text" / "1" / "model.onnx", threads=threads)
        merge = self.tokenize.merge  # queued texts may have different padded lengths

        def embed_images(items: list[np.ndarray]) -> list[np.ndarray]:
            return _split(items, image.run(None, {"pixels": np.concatenate(items)})[0])

        def embed_texts(items: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
            ids, mask = merge(items)
            return _split([i for i, _ in items], text.run(None, {"input_ids": ids, "attention_mask": mask})[0])

        self.images = MicroBatcher("clip_image", embed_images, max_batch, max_delay_s)
        self.texts = MicroBatcher("clip_text", embed_texts, max_batch, max_delay_s, rows=lambda item: len(item[0]))
        self.captioner: MicroBatcher | None = None
        if captions:
            caption_text = CaptionText(repository / "blip_caption")
            loaded: list[BlipDecoder] = []
            self.captioner = MicroBatcher("blip_caption", lambda items: caption_requests(loaded[0], caption_text, items),
                                         max_batch, max_delay_s, rows=lambda item: len(item[0]),
                                         when_idle=freed_memory_returner(), thread_setup=lowered_priority(caption_nice))
            loaded.append(self.captioner.executor.submit(
                BlipDecoder.from_folder, repository / "blip_caption", threads, memory_mb=caption_memory_mb).result())

    async def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        return await self.images.submit(pixels)

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        return await self.texts.submit(self.tokenize(texts))

    async def caption(self, pixels: np.ndarray) -> list[str]:
        if self.captioner is None:
            raise ServiceError(ErrorKind.INVALID_ARGUMENT, "captions are disabled (GATEWAY_CAPTIONS=false)")
        return await self.captioner.submit((pixels, "", self.caption_settings))

    async def check_ready(self) -> None:
        """Sessions are loaded in the constructor: nothing can stop serving afterwards."""

    async def close(self) -> None:
        for batcher in (self.images, self.texts, self.captioner):
            if batcher is not None:
                await batcher.close()
