"""Inference on Triton over gRPC (tritonclient aio): one channel, a deadline per call, retries when
Triton answers UNAVAILABLE; uint8 pixels on the wire. Tokenisation runs here, from the repository's
tokenizer files, so clients need no hub.

The channel balances round robin over every address its target resolves to: with
``dns:///triton-pods:8001`` (a headless Kubernetes Service) each Triton pod gets its share, and new
pods join as DNS shows them. gRPC balances per connection, so behind one ClusterIP address a single
channel would stay on the pod it first reached."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from ..core.deadlines import budget
from ..core.errors import ErrorKind, ServiceError, timeout, unavailable
from ..core.protocols import DecodedImage
from ..runtime.blip_decode import GenerationSettings
from ..runtime.tier_decode import UNDECODABLE
from .metrics import INFERENCE_BATCH, INFERENCE_SECONDS
from .repository import RepositoryModels, check_tier_decode, served_models


def channel_args() -> list[tuple[str, object]]:
    """tritonclient's own defaults (no message size cap, keep-alive) plus round-robin balancing."""
    from tritonclient.grpc import KeepAliveOptions
    from tritonclient.grpc._client import MAX_GRPC_MESSAGE_SIZE

    keepalive = KeepAliveOptions()
    return [("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.lb_policy_name", "round_robin")]


class TritonInference(RepositoryModels):
    def __init__(self, url: str, repository: Path, captions: bool, caption_settings: GenerationSettings, *,
                 timeout_s: float, retries: int, tier_decode: bool = False):
        """``captions``: serve BLIP too; ``tier_decode``: Triton decodes JPEGs too (GATEWAY_DECODE=inference,
        gateway.core.protocols.TierDecoding); the rest as GATEWAY_TRITON_* (gateway.settings)."""
        import tritonclient.grpc.aio as aioclient

        super().__init__(repository, captions, caption_settings)
        self.grpc = aioclient
        self.url, self.timeout_s, self.retries = url, timeout_s, retries
        self.client = aioclient.InferenceServerClient(url, channel_args=channel_args())
        self.models = served_models(captions) + (check_tier_decode(repository, captions) if tier_decode else [])

    def _input(self, name: str, array: np.ndarray, datatype: str):
        tensor = self.grpc.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return tensor

    async def _infer(self, model: str, inputs: list, output: str) -> np.ndarray:
        return (await self._outputs(model, inputs, [output]))[0]

    async def _outputs(self, model: str, inputs: list, outputs: list[str]) -> list[np.ndarray]:
        from tritonclient.utils import InferenceServerException

        requested = [self.grpc.InferRequestedOutput(name) for name in outputs]
        for attempt in range(self.retries + 1):
            limit = budget(self.timeout_s)  # the caller's deadline, when nearer than ours
            try:
                with INFERENCE_SECONDS.labels(model).time():
                    result = await self.client.infer(model, inputs, outputs=requested, client_timeout=limit)
                return [result.as_numpy(name) for name in outputs]
            except InferenceServerException as exc:
                status = str(exc.status() or "")
                if UNDECODABLE in exc.message():  # the file, not Triton: the gateway's own refusal of it
                    reason = exc.message().split(UNDECODABLE, 1)[1].strip()
                    raise ServiceError(ErrorKind.INVALID_ARGUMENT, reason, "invalid_image") from None
                if "DEADLINE_EXCEEDED" in status:
                    raise timeout(f"Triton did not answer {model} within {limit:.3g}s") from exc
                if "UNAVAILABLE" in status and attempt < self.retries:
                    await asyncio.sleep(0.2 * 2 ** attempt)
                    continue
                if "UNAVAILABLE" in status or "NOT_FOUND" in status or "unknown model" in exc.message().lower():
                    raise unavailable(f"Triton cannot serve {model}: {exc.message()}") from exc
                raise ServiceError(ErrorKind.INTERNAL, f"Triton failed on {model}: {exc.message()}") from exc
        raise AssertionError("unreachable")

    async def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        INFERENCE_BATCH.labels("clip_image").observe(len(pixels))
        return await self._infer("clip_image", [self._input("pixels", pixels, "UINT8")], "embeddings")

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        ids, mask = self.tokenize(texts)
        INFERENCE_BATCH.labels("clip_text").observe(len(ids))
        return await self._infer("clip_text", [self._input("input_ids", ids, "INT64"),
                                               self._input("attention_mask", mask, "INT64")], "embeddings")

    async def caption(self, pixels: np.ndarray) -> list[str]:
        settings, n = self.caption_settings, len(pixels)
        # Every optional input, always (an empty prompt is no prompt): Triton's dynamic batcher cannot
        # merge requests with different input sets and cuts a batch at the first mismatching request.
        inputs = [self._input("pixels", pixels, "UINT8"),
                  self._input("prompt", np.array([[b""]] * n, dtype=object), "BYTES"),
                  self._input("num_beams", np.full((n, 1), settings.num_beams, np.int32), "INT32"),
                  self._input("max_new_tokens", np.full((n, 1), settings.max_new_tokens, np.int32), "INT32"),
                  self._input("repetition_penalty", np.full((n, 1), settings.repetition_penalty, np.float32), "FP32")]
        INFERENCE_BATCH.labels("blip_caption").observe(n)
        captions = await self._infer("blip_caption", inputs, "caption")
        return [c[0].decode("utf-8") for c in captions]

    def _encoded(self, data: bytes):
        return self._input("image", np.array([[data]], dtype=object), "BYTES")

    async def decode_encoded(self, data: bytes, blip: bool, record: bool) -> DecodedImage:
        outputs = ["clip_pixels"] + (["blip_pixels"] if blip else []) + (["record_pixels"] if record else [])
        INFERENCE_BATCH.labels("image_decode").observe(1)
        found = dict(zip(outputs, (array[0] for array in await self._outputs("image_decode", [self._encoded(data)], outputs))))
        return DecodedImage(found["clip_pixels"], found.get("blip_pixels"), found.get("record_pixels"))

    async def embed_encoded(self, data: bytes) -> np.ndarray:
        INFERENCE_BATCH.labels("clip_image_bytes").observe(1)
        return (await self._infer("clip_image_bytes", [self._encoded(data)], "embeddings"))[0]

    async def check_ready(self) -> None:
        from tritonclient.utils import InferenceServerException

        try:
            ready = await asyncio.wait_for(asyncio.gather(*(self.client.is_model_ready(m) for m in self.models)),
                                           self.timeout_s)
        except (InferenceServerException, asyncio.TimeoutError, OSError) as exc:
            raise unavailable(f"Triton at {self.url} is not reachable: {exc}") from exc
        missing = [m for m, ok in zip(self.models, ready) if not ok]
        if missing:
            raise unavailable(f"Triton models not ready: {', '.join(missing)}")

    async def close(self) -> None:
        await self.client.close()
