"""Reference outputs the tests compare the gateway with: the ONNX files run directly on the pixels
the gateway derives for an operation, transformers' tokenizer at full padding, and settings for a
test gateway. (How close those pixels are to a full-size decode is tested on its own, in
test_preprocess.py.)"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from export.triton_repo import TritonOptions
from gateway.backends.repository import read_model_info
from gateway.core.images import prepare
from gateway.runtime.blip_decode import BlipDecoder, CaptionText, GenerationSettings
from gateway.runtime.onnx_session import create_session
from gateway.settings import Settings

CAPTION = GenerationSettings(max_new_tokens=8, num_beams=2)  # what test gateways caption with
# What the tests serve: the python-backend flavour (the bundled Triton has no onnxruntime backend).
# A 30 ms batching window: tiny models run faster than an aio client issues requests, so a short window
# would sometimes catch one request at a time and the batching assertions would depend on timing.
TEST_TRITON_OPTIONS = TritonOptions(flavour="python", gpu=False, max_batch_size=16, queue_delay_us=30000, threads=1)
# what the gateway derives from an upload, per operation: (BLIP pixels, stored-record products)
PURPOSES = {"search": (False, False), "embed": (True, False), "index": (True, True), "index without captions": (False, True)}


def reexported(model_repository: Path, folder: Path, source: Path, options: TritonOptions = TEST_TRITON_OPTIONS,
               **export_options) -> Path:
    """A copy of the test repository (BLIP included) under ``folder`` with its embedding towers exported
    again from ``source`` (export_clip's other options: ``text_source``)."""
    import shutil

    from export.clip import export_clip

    repository = folder / "model_repository"
    shutil.copytree(model_repository, repository)
    export_clip(str(source), repository, options, force=True, **export_options)
    return repository


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def settings_for(repository: Path, milvus_uri: str, **overrides) -> Settings:
    """A test gateway's settings: short captions, 2 MB uploads, no gRPC server unless given a port, no .env file."""
    spool = Path(tempfile.mkdtemp(prefix="spool-"))  # (a server's default, data/caption-spool, is the checkout's)
    return Settings(_env_file=None, model_repository=repository, milvus_uri=milvus_uri, caption_beams=CAPTION.num_beams,
                    caption_max_new_tokens=CAPTION.max_new_tokens,
                    **{"max_upload_bytes": 2_000_000, "grpc_port": 0, "caption_spool": spool, **overrides})


def model_inputs(repository: Path, data: bytes, purpose: str = "embed", exact: bool = False):
    """The CLIP and BLIP pixels the gateway derives from ``data`` for ``purpose``."""
    blip, record = PURPOSES[purpose]
    return prepare(data, read_model_info(repository, captions=True), 50_000_000, blip=blip, record=record, exact=exact)


def expected_embedding(repository: Path, data: bytes, purpose: str = "embed", exact: bool = False) -> np.ndarray:
    pixels = model_inputs(repository, data, purpose, exact).clip_pixels[None]
    return create_session(repository / "clip_image" / "1" / "model.onnx").run(None, {"pixels": pixels})[0][0]


def expected_caption(repository: Path, data: bytes, purpose: str = "embed") -> str:
    folder = repository / "blip_caption"
    decoder, text = BlipDecoder.from_folder(folder), CaptionText(folder)
    pixels = model_inputs(repository, data, purpose).blip_pixels[None]
    return text.caption(decoder.generate(decoder.encode(pixels), [], CAPTION)[0])


def text_embedding(repository: Path, text: str) -> np.ndarray:
    """The reference: padded to the full context with transformers' tokenizer (the gateway pads less)."""
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(repository / "clip_text")([text], padding="max_length", max_length=77,
                                                                     truncation=True, return_tensors="np")
    session = create_session(repository / "clip_text" / "1" / "model.onnx")
    return session.run(None, {k: tokens[k].astype(np.int64) for k in ("input_ids", "attention_mask")})[0][0]


def triton_inference_counts(metrics: str, model: str) -> tuple[int, int]:
    """(inferences, executions) of a model from Triton's metrics text: fewer executions means batching."""
    import re

    def value(name: str) -> int:
        match = re.search(rf'^{name}{{model="{model}",version="1"}} (\d+)', metrics, re.MULTILINE)
        assert match, f"{name} for {model} is not in Triton's metrics"
        return int(match.group(1))

    return value("nv_inference_count"), value("nv_inference_exec_count")


def triton_counts_after(triton, model: str, before: tuple[int, int], inferences: int) -> tuple[int, int]:
    """(inferences, executions) since `before`, once Triton has counted `inferences` of them.

    Triton records an execution's statistics after its responses are sent, so a client that has every answer can
    read the metrics before the last batch is counted (CI saw 12 of 16): wait (10 s at most) for the count to settle.
    """
    import time

    deadline = time.monotonic() + 10
    while True:
        now = triton_inference_counts(triton.metrics(), model)
        counted = (now[0] - before[0], now[1] - before[1])
        if counted[0] >= inferences or time.monotonic() > deadline:
            return counted
        time.sleep(0.05)
