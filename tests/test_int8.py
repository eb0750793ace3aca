"""int8 CLIP for CPU serving (python -m export clip --cpu --precision int8, export/quantize.py): the
fidelity gate against the fp32 graph, a broken quantizer refused with nothing installed, and the int8
repository served end to end in both inference modes (in-process and the real tritonserver)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from contextlib import nullcontext

import httpx
import pytest

import export.__main__ as export_cli
import export.clip as clip_export
from export.clip import export_clip
from export.parity import ParityError
from export.random_checkpoints import build_clip
from local_servers.tritonserver import TritonServer
from tests.support.gateways import http_and_grpc
from tests.support.images import PHOTO_JPEGS
from tests.support.references import TEST_TRITON_OPTIONS, cosine, reexported

pytestmark = pytest.mark.integration
INT8 = dataclasses.replace(TEST_TRITON_OPTIONS, int8=True)


@pytest.fixture(scope="module")
def int8_repository(model_repository, clip_checkpoint, tmp_path_factory):
    """The test repository (BLIP included) with CLIP re-exported in int8."""
    return reexported(model_repository, tmp_path_factory.mktemp("int8"), clip_checkpoint, INT8)


def test_the_int8_export_records_its_gate(int8_repository):
    for tower in ("clip_image", "clip_text"):
        manifest = json.loads((int8_repository / tower / "export.json").read_text())
        gate = manifest["int8"]
        assert manifest["precision"] == "int8" and manifest["request"]["serving"]["int8"] is True
        assert gate["mean_cosine"] >= 0.99 and gate["min_cosine"] >= 0.98 and gate["top10_agreement"] >= 0.9, gate
        assert manifest["parity"]["min_cosine"] >= 0.99999  # the fp32 graph it came from passed PyTorch's gate
    graph = (int8_repository / "clip_image" / "1" / "model.onnx").read_bytes()
    assert b"MatMulInteger" in graph or b"DynamicQuantizeMatMul" in graph  # int8 products, not fp32 ones
    assert not list((int8_repository / "clip_image" / "1").glob("*.tmp"))


def test_a_quantizer_that_breaks_the_model_is_refused_and_nothing_is_installed(clip_checkpoint, tmp_path, monkeypatch):
    other = build_clip(tmp_path / "other", size="tiny", seed=7)
    stranger = tmp_path / "stranger"
    export_clip(str(other), stranger, TEST_TRITON_OPTIONS)

    def wrong_graph(fp32, int8):  # "quantizes" into another checkpoint's tower
        tower = fp32.parent.parent.name  # the staged model's folder
        shutil.copyfile(stranger / tower / "1" / "model.onnx", int8)

    monkeypatch.setattr(clip_export, "quantize", wrong_graph)
    repository = tmp_path / "repository"
    with pytest.raises(ParityError, match="int8 gate refused"):
        export_clip(str(clip_checkpoint), repository, INT8)
    assert not (repository / "clip_image").exists() and not (repository / "clip_text").exists()
    assert not [p for p in repository.iterdir() if not p.name.startswith(".")]


@pytest.mark.parametrize("flags, refusal", [(["clip", "--precision", "int8"], "add --cpu"),
                                            (["blip", "--precision", "int8", "--cpu"], "CLIP only"),
                                            (["clip", "--precision", "int8", "--cpu", "--fp16"], "without --fp16")])
def test_int8_is_refused_where_it_does_not_apply(flags, refusal, capsys):
    with pytest.raises(SystemExit):
        export_cli.parse_args(flags)
    assert refusal in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["local", "triton"])
def test_int8_is_served_and_searched_end_to_end_and_labelled(int8_repository, model_repository, tmp_path, mode):
    with TritonServer(int8_repository, tmp_path / "triton") if mode == "triton" else nullcontext() as triton:
        overrides = {"inference_mode": "triton", "triton_url": triton.grpc_url} if triton else {}
        with http_and_grpc(int8_repository, str(tmp_path / "int8.db"), **overrides) as (url, _), \
                http_and_grpc(model_repository, str(tmp_path / "fp32.db")) as (fp32_url, _):
            features = httpx.get(f"{url}/readyz").json()["features"]
            assert features["precision"] == "clip_image int8, clip_text int8, blip_caption fp32"
            assert httpx.get(f"{fp32_url}/readyz").json()["features"]["precision"] == "fp32"
            files = [("files", (f"{n}.jpg", PHOTO_JPEGS[n], "image/jpeg")) for n in ("astronaut", "coffee", "rocket")]
            stored = httpx.post(f"{url}/v1/images", files=files, timeout=120).json()["images"]
            hits = httpx.post(f"{url}/v1/search/image", files={"file": ("q.jpg", PHOTO_JPEGS["coffee"], "image/jpeg")},
                              data={"k": 3}, timeout=60).json()["results"]
            assert hits[0]["id"] == stored[1]["id"] and hits[0]["score"] > 0.9999
            assert httpx.get(f"{url}/v1/search/text", params={"q": "a cup of coffee", "k": 3}).status_code == 200
            vectors = [httpx.post(f"{u}/embed-image/", files={"file": ("a.jpg", PHOTO_JPEGS["astronaut"], "image/jpeg")},
                                  timeout=120).json()["embedding_vector"] for u in (url, fp32_url)]
            assert cosine(*vectors) >= 0.98  # the gate's floor, through the whole service
