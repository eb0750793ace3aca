"""One inference interface, two implementations over the same model repository.

- LocalInference (the embedded default): the repository's ONNX files in-process with onnxruntime.
  A micro-batcher per model gathers concurrent calls up to a batch size or a delay, as Triton's
  dynamic batcher does, and runs them in a worker thread, off the event loop.
- TritonInference: Triton over gRPC (tritonclient aio), one channel, a deadline per call, retries
  when Triton answers UNAVAILABLE; uint8 pixels on the wire.

Both tokenize text and read the pixel specs from the repository, so clients need no hub.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .blip_decode import BlipDecoder, CaptionText, GenerationSettings, caption_requests
from .errors import DependencyTimeout, DependencyUnavailable, GatewayError
from .metrics import INFERENCE_BATCH, INFERENCE_SECONDS
from .preprocess import PixelSpec
from .settings import Settings

log = logging.getLogger("gateway.inference")


@dataclass(frozen=True)
class ModelInfo:
    """What the repository's models take and give, read from the files the export wrote."""

    clip_pixels: PixelSpec
    blip_pixels: PixelSpec | None
    embedding_dim: int
    context_length: int
    sources: dict[str, str]  # model -> the checkpoint it was exported from

    @classmethod
    def from_repository(cls, repository: Path, captions: bool) -> "ModelInfo":
        dim = _config_dims((repository / "clip_text" / "config.pbtxt").read_text(), "output")[0]
        context = json.loads((repository / "clip_text" / "tokenizer_config.json").read_text())["model_max_length"]
        blip = PixelSpec.load(repository / "blip_caption" / "preprocess.json") if captions else None
        models = ["clip_image", "clip_text"] + (["blip_caption"] if captions else [])
        sources = {m: json.loads((repository / m / "export.json").read_text())["request"]["source"] for m in models}
        return cls(PixelSpec.load(repository / "clip_image" / "preprocess.json"), blip, dim, context, sources)

    def mismatched_sources(self, clip_model: str, blip_model: str) -> list[str]:
        wanted = {"clip_image": clip_model, "clip_text": clip_model, "blip_caption": blip_model}
        return [f"{model} was exported from {source}, not {wanted[model]}"
                for model, source in self.sources.items() if source != wanted[model]]


def _config_dims(config_text: str, section: str) -> list[int]:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = text_format.Parse(config_text, mc.ModelConfig())
    return list(getattr(config, section)[0].dims)


TEXT_BUCKET = 16  # texts are padded to a multiple of this many tokens (at most the context)


def text_length(longest: int, context: int) -> int:
    """The padded length for a batch whose longest text has `longest` tokens: a multiple of
    TEXT_BUCKET, so that Triton can batch requests of one bucket together, capped at the context.
    A query of a few words costs 16 positions, not 77 (CLIP's text tower pools at the end-of-text
    token under a causal mask, so padding after it changes nothing)."""
    return min(-(-longest // TEXT_BUCKET) * TEXT_BUCKET, context)


class TextTokenizer:
    """CLIP's tokenizer from the repository (tokenizers only), truncated to the context and padded
    to text_length()."""

    def __init__(self, folder: Path, context_length: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.pad_id, self.context = self.tokenizer.token_to_id("<|endoftext|>"), context_length
        self.tokenizer.enable_truncation(context_length)
        self.tokenizer.no_padding()

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        length = text_length(max(len(e.ids) for e in encodings), self.context)
        ids = np.full((len(texts), length), self.pad_id, np.int64)
        mask = np.zeros((len(texts), length), np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)], mask[row, :len(encoding.ids)] = encoding.ids, 1
        return ids, mask

    def merge(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenised batches of different padded lengths -> one batch at the longest of them."""
        length = max(ids.shape[1] for ids, _ in batches)
        return (np.concatenate([np.pad(i, ((0, 0), (0, length - i.shape[1])), constant_values=self.pad_id) for i, _ in batches]),
                np.concatenate([np.pad(m, ((0, 0), (0, length - m.shape[1]))) for _, m in batches]))


class Inference:
    """The interface routes use. Arrays carry a leading batch axis."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.info = ModelInfo.from_repository(settings.model_repository, settings.captions)
        self.tokenize = TextTokenizer(settings.model_repository / "clip_text", self.info.context_length)
        self.default_caption = GenerationSettings(max_new_tokens=settings.caption_max_new_tokens,
                                                  num_beams=settings.caption_beams)

    async def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    async def caption(self, pixels: np.ndarray, prompt: str = "", settings: GenerationSettings | None = None) -> list[str]:
        raise NotImplementedError

    async def check_ready(self) -> None:
        """Raises DependencyUnavailable when a model cannot serve."""

    async def close(self) -> None:
        pass


class MicroBatcher:
    """Gathers concurrent calls into one ``run(items)`` call of at most ``max_batch`` rows, waiting at
    most ``max_delay`` seconds after the first, and runs it in a single worker thread."""

    def __init__(self, name: str, run: Callable[[list], list], max_batch: int, max_delay: float,
                 rows: Callable[[object], int] = len):
        self.name, self.run, self.max_batch, self.max_delay, self.rows = name, run, max_batch, max_delay, rows
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self.worker: asyncio.Task | None = None

    async def submit(self, item):
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            rows = self.rows(batch[0][0])
            deadline = loop.time() + self.max_delay
            while rows < self.max_batch:
                timeout = deadline - loop.time()
                try:
                    item = self.queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self.queue.get(), timeout)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                batch.append(item)
                rows += self.rows(item[0])
            INFERENCE_BATCH.labels(self.name).observe(rows)
            with INFERENCE_SECONDS.labels(self.name).time():
                try:
                    results = await loop.run_in_executor(self.executor, self.run, [item for item, _ in batch])
                except Exception as exc:  # every caller of this batch gets the error
                    log.exception("%s batch failed", self.name)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(GatewayError(f"{self.name} failed: {exc}"))
                    continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _split(arrays: list[np.ndarray], output: np.ndarray) -> list[np.ndarray]:
    bounds = np.cumsum([len(a) for a in arrays])[:-1]
    return np.split(output, bounds)


class LocalInference(Inference):
    def __init__(self, settings: Settings):
        import onnxruntime as ort

        super().__init__(settings)
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.local_threads
        options.log_severity_level = 3
        repo = settings.model_repository
        session = lambda path: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        image = session(repo / "clip_image" / "1" / "model.onnx")
        text = session(repo / "clip_text" / "1" / "model.onnx")
        delay, size = settings.local_max_delay_ms / 1000, settings.local_max_batch
        self.images = MicroBatcher(
            "clip_image", lambda items: _split(items, image.run(None, {"pixels": np.concatenate(items)})[0]), size, delay)
        merge = self.tokenize.merge  # queued texts may have different padded lengths
        self.texts = MicroBatcher(
            "clip_text", lambda items: _split([i for i, _ in items], text.run(None, dict(zip(
                ("input_ids", "attention_mask"), merge(items))))[0]), size, delay, rows=lambda item: len(item[0]))
        self.captions = None
        if settings.captions:
            decoder = BlipDecoder.from_folder(repo / "blip_caption", settings.local_threads)
            caption_text = CaptionText(repo / "blip_caption")
            self.captions = MicroBatcher("blip_caption", lambda items: caption_requests(decoder, caption_text, items),
                                         size, delay, rows=lambda item: len(item[0]))

    async def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        return await self.images.submit(pixels)

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        return await self.texts.submit(self.tokenize(texts))

    async def caption(self, pixels: np.ndarray, prompt: str = "", settings: GenerationSettings | None = None) -> list[str]:
        if self.captions is None:
            raise GatewayError("captions are disabled (GATEWAY_CAPTIONS=false)")
        return await self.captions.submit((pixels, prompt, settings or self.default_caption))

    async def close(self) -> None:
        for batcher in (self.images, self.texts, self.captions):
            if batcher is not None:
                await batcher.close()


class TritonInference(Inference):
    def __init__(self, settings: Settings):
        import tritonclient.grpc.aio as aioclient

        super().__init__(settings)
        self.grpc = aioclient
        self.client = aioclient.InferenceServerClient(settings.triton_url)
        self.models = ["clip_image", "clip_text"] + (["blip_caption"] if settings.captions else [])

    def _input(self, name: str, array: np.ndarray, datatype: str):
        tensor = self.grpc.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return tensor

    async def _infer(self, model: str, inputs: list, output: str) -> np.ndarray:
        from tritonclient.utils import InferenceServerException

        for attempt in range(self.settings.triton_retries + 1):
            try:
                with INFERENCE_SECONDS.labels(model).time():
                    result = await self.client.infer(model, inputs, client_timeout=self.settings.triton_timeout_s)
                return result.as_numpy(output)
            except InferenceServerException as exc:
                status = str(exc.status() or "")
                if "DEADLINE_EXCEEDED" in status:
                    raise DependencyTimeout(f"Triton did not answer {model} within {self.settings.triton_timeout_s}s") from exc
                if "UNAVAILABLE" in status and attempt < self.settings.triton_retries:
                    await asyncio.sleep(0.2 * 2 ** attempt)
                    continue
                if "UNAVAILABLE" in status or "NOT_FOUND" in status or "unknown model" in exc.message().lower():
                    raise DependencyUnavailable(f"Triton cannot serve {model}: {exc.message()}") from exc
                raise GatewayError(f"Triton failed on {model}: {exc.message()}") from exc
        raise AssertionError("unreachable")

    async def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        INFERENCE_BATCH.labels("clip_image").observe(len(pixels))
        return await self._infer("clip_image", [self._input("pixels", pixels, "UINT8")], "embeddings")

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        ids, mask = self.tokenize(texts)
        INFERENCE_BATCH.labels("clip_text").observe(len(ids))
        return await self._infer("clip_text", [self._input("input_ids", ids, "INT64"),
                                               self._input("attention_mask", mask, "INT64")], "embeddings")

    async def caption(self, pixels: np.ndarray, prompt: str = "", settings: GenerationSettings | None = None) -> list[str]:
        settings = settings or self.default_caption
        n = len(pixels)
        # Every optional input, always (an empty prompt is no prompt): Triton's dynamic batcher cannot
        # merge requests with different input sets and cuts a batch at the first mismatching request.
        inputs = [self._input("pixels", pixels, "UINT8"),
                  self._input("prompt", np.array([[prompt.encode()]] * n, dtype=object), "BYTES"),
                  self._input("num_beams", np.full((n, 1), settings.num_beams, np.int32), "INT32"),
                  self._input("max_new_tokens", np.full((n, 1), settings.max_new_tokens, np.int32), "INT32"),
                  self._input("repetition_penalty", np.full((n, 1), settings.repetition_penalty, np.float32), "FP32")]
        INFERENCE_BATCH.labels("blip_caption").observe(n)
        captions = await self._infer("blip_caption", inputs, "caption")
        return [c[0].decode("utf-8") for c in captions]

    async def check_ready(self) -> None:
        from tritonclient.utils import InferenceServerException

        try:
            ready = await asyncio.wait_for(
                asyncio.gather(*(self.client.is_model_ready(m) for m in self.models)), self.settings.triton_timeout_s)
        except (InferenceServerException, asyncio.TimeoutError, OSError) as exc:
            raise DependencyUnavailable(f"Triton at {self.settings.triton_url} is not reachable: {exc}") from exc
        missing = [m for m, ok in zip(self.models, ready) if not ok]
        if missing:
            raise DependencyUnavailable(f"Triton models not ready: {', '.join(missing)}")

    async def close(self) -> None:
        await self.client.close()


def create_inference(settings: Settings) -> Inference:
    return TritonInference(settings) if settings.inference_mode == "triton" else LocalInference(settings)
