"""A real tritonserver (the nvidia-pytriton binary) serving the exported CLIP towers over gRPC."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from transformers import AutoTokenizer
from tritonclient.utils import InferenceServerException

from gateway.runtime.preprocess import PixelSpec, preprocess
from tests.support.images import PHOTOS, photo_bytes
from tests.support.references import triton_counts_after, triton_inference_counts

pytestmark = [pytest.mark.integration, pytest.mark.triton]


def pixels_input(pixels: np.ndarray, module=aioclient) -> object:
    tensor = module.InferInput("pixels", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    return tensor


async def embed_images(url: str, batches: list[np.ndarray]) -> list[np.ndarray]:
    """Send every batch concurrently over one channel, as the gateway will."""
    client = aioclient.InferenceServerClient(url)
    try:
        results = await asyncio.gather(*(client.infer("clip_image", [pixels_input(b)], client_timeout=60) for b in batches))
        return [r.as_numpy("embeddings") for r in results]
    finally:
        await client.close()


async def embed_texts(url: str, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    client = aioclient.InferenceServerClient(url)
    try:
        inputs = [aioclient.InferInput("input_ids", list(ids.shape), "INT64"),
                  aioclient.InferInput("attention_mask", list(mask.shape), "INT64")]
        inputs[0].set_data_from_numpy(ids)
        inputs[1].set_data_from_numpy(mask)
        return (await client.infer("clip_text", inputs, client_timeout=60)).as_numpy("embeddings")
    finally:
        await client.close()


@pytest.fixture(scope="module")
def photo_pixels(model_repository) -> np.ndarray:
    spec = PixelSpec.load(model_repository / "clip_image" / "preprocess.json")
    return np.stack([preprocess(photo_bytes(name, "JPEG"), spec) for name in PHOTOS])


def onnx_direct(repository, model: str, feed: dict) -> np.ndarray:
    session = ort.InferenceSession(str(repository / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def test_models_ready(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    assert client.is_server_ready()
    assert client.is_model_ready("clip_image") and client.is_model_ready("clip_text")
    metadata = client.get_model_metadata("clip_image")
    assert metadata.inputs[0].datatype == "UINT8" and list(metadata.inputs[0].shape) == [-1, 32, 32, 3]


def test_clip_image_over_grpc_matches_onnx(triton, model_repository, photo_pixels):
    singles = asyncio.run(embed_images(triton.grpc_url, [p[None] for p in photo_pixels]))
    (batch,) = asyncio.run(embed_images(triton.grpc_url, [photo_pixels]))
    expected = onnx_direct(model_repository, "clip_image", {"pixels": photo_pixels})
    np.testing.assert_allclose(np.concatenate(singles), expected, atol=1e-5)
    np.testing.assert_allclose(batch, expected, atol=1e-5)


def test_clip_text_over_grpc_matches_onnx(triton, model_repository):
    tokenizer = AutoTokenizer.from_pretrained(model_repository / "clip_text")
    tokens = tokenizer(["man in red jacket", "a cat", ""], padding="max_length", max_length=77, return_tensors="np")
    ids, mask = tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64)
    got = asyncio.run(embed_texts(triton.grpc_url, ids, mask))
    expected = onnx_direct(model_repository, "clip_text", {"input_ids": ids, "attention_mask": mask})
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_concurrent_requests_are_batched(triton, photo_pixels):
    before = triton_inference_counts(triton.metrics(), "clip_image")
    requests = [photo_pixels[i % len(photo_pixels)][None] for i in range(48)]
    results = asyncio.run(embed_images(triton.grpc_url, requests))
    inferences, executions = triton_counts_after(triton, "clip_image", before, 48)
    assert inferences == 48
    assert executions < inferences, f"{inferences} requests ran as {executions} executions: no batching"
    # batched rows are the same as the row computed alone
    for i, result in enumerate(results):
        np.testing.assert_allclose(result[0], results[i % len(photo_pixels)][0], atol=1e-5)


@pytest.mark.parametrize("pixels,match", [
    (np.zeros((1, 32, 32, 3), np.float32), "data-type|datatype|FP32"),
    (np.zeros((1, 31, 32, 3), np.uint8), "shape"),
    (np.zeros((17, 32, 32, 3), np.uint8), "batch"),  # above max_batch_size
], ids=["wrong-dtype", "wrong-shape", "batch-too-large"])
def test_malformed_requests_get_triton_errors_and_the_server_keeps_serving(triton, photo_pixels, pixels, match):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    tensor = grpcclient.InferInput("pixels", list(pixels.shape), "FP32" if pixels.dtype == np.float32 else "UINT8")
    tensor.set_data_from_numpy(pixels)
    with pytest.raises(InferenceServerException, match=re.compile(match, re.IGNORECASE)):
        client.infer("clip_image", [tensor])
    good = client.infer("clip_image", [pixels_input(photo_pixels[:1], grpcclient)])
    assert good.as_numpy("embeddings").shape == (1, 16)
    assert triton.process.poll() is None


def test_missing_input_is_rejected(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    ids = grpcclient.InferInput("input_ids", [1, 77], "INT64")
    ids.set_data_from_numpy(np.zeros((1, 77), np.int64))
    with pytest.raises(InferenceServerException, match="attention_mask"):
        client.infer("clip_text", [ids])


def test_triton_loads_the_installed_models_and_not_an_exports_staging_folder(clip_checkpoint, tmp_path):
    """Triton takes every folder of a repository for a model, hidden ones too (a half-assembled
    .staging-* folder would fail its start): it is told which models to load, those an export installed."""
    from export.clip import export_clip
    from export.triton_repo import STAGING_PREFIX, installed_models
    from local_servers.tritonserver import TritonServer
    from tests.support.references import TEST_TRITON_OPTIONS

    repository = tmp_path / "repository"
    export_clip(str(clip_checkpoint), repository, TEST_TRITON_OPTIONS)
    half = repository / f"{STAGING_PREFIX}clip_image-x" / "clip_image"
    (half / "1").mkdir(parents=True)
    (half / "config.pbtxt").write_text('name: "clip_image"\nbackend: "python"\n')  # no model.py: cannot load
    assert installed_models(repository) == ["clip_image", "clip_text"]
    with TritonServer(repository, tmp_path / "triton") as triton:
        client = grpcclient.InferenceServerClient(triton.grpc_url)
        assert client.is_model_ready("clip_image") and client.is_model_ready("clip_text")
        assert {m.name for m in client.get_model_repository_index().models if m.state == "READY"} == {"clip_image", "clip_text"}
