"""Shared fixtures: tiny random-weight CLIP and BLIP checkpoints, their exported repository, a real Triton."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from export.blip import export_blip
from export.clip import export_clip
from export.random_checkpoints import build_blip, build_clip
from local_servers.milvus_server import MilvusServer
from local_servers.tritonserver import TritonServer
from tests.support.references import TEST_TRITON_OPTIONS


def pytest_configure(config) -> None:
    """A run ended by SIGTERM (a timeout, a cancelled job) unwinds like Ctrl-C: pytest runs every
    fixture's teardown, so the servers the fixtures started are stopped (and die with this process
    in any case, local_servers.processes.start_server)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory) -> Path:
    return build_clip(tmp_path_factory.mktemp("checkpoints") / "clip-tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def blip_checkpoint(tmp_path_factory) -> Path:
    return build_blip(tmp_path_factory.mktemp("checkpoints") / "blip-tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def export_reports(tmp_path_factory, clip_checkpoint, blip_checkpoint) -> tuple[Path, dict]:
    repository = tmp_path_factory.mktemp("served") / "model_repository"
    reports = export_clip(str(clip_checkpoint), repository, TEST_TRITON_OPTIONS)
    reports.update(export_blip(str(blip_checkpoint), repository, TEST_TRITON_OPTIONS))
    return repository, reports


@pytest.fixture(scope="session")
def model_repository(export_reports) -> Path:
    return export_reports[0]


@pytest.fixture(scope="session")
def decode_repository(model_repository, tmp_path_factory) -> Path:
    """A copy of model_repository with the models that decode on the inference tier (export/decode.py)."""
    import shutil

    from export.decode import export_decode

    repository = tmp_path_factory.mktemp("tier-decode") / "model_repository"
    shutil.copytree(model_repository, repository)
    export_decode(repository, TEST_TRITON_OPTIONS)
    return repository


@pytest.fixture(scope="session")
def triton(model_repository, tmp_path_factory):
    with TritonServer(model_repository, tmp_path_factory.mktemp("triton")) as server:
        yield server


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    with MilvusServer(tmp_path_factory.mktemp("milvus-server")) as server:
        yield server
