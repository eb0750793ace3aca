"""Shared fixtures: a tiny random-weight CLIP checkpoint, its exported repository, a real Triton."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.clip import export_clip
from export.random_checkpoints import build_clip
from export.triton_repo import Serving
from tests.support.tritonserver import TritonServer

# What the tests serve: the python-backend flavour (the bundled Triton has no onnxruntime backend).
TEST_SERVING = Serving(flavour="python", gpu=False, max_batch_size=16, queue_delay_us=5000, threads=1)


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory) -> Path:
    return build_clip(tmp_path_factory.mktemp("checkpoints") / "clip-tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def clip_repository(tmp_path_factory, clip_checkpoint) -> Path:
    repository = tmp_path_factory.mktemp("served") / "model_repository"
    export_clip(str(clip_checkpoint), repository, TEST_SERVING)
    return repository


@pytest.fixture(scope="session")
def triton(clip_repository, tmp_path_factory):
    with TritonServer(clip_repository, tmp_path_factory.mktemp("triton")) as server:
        yield server
