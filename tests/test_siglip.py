"""SigLIP 2 (fixed resolution, SiglipModel with Gemma's tokenizer pipeline) through `python -m export clip`:
the family told from the checkpoint, texts padded to 64 lowercased tokens as transformers pads them, the
parity gate (a broken tower refused, nothing installed), NaFlex refused with the way forward, the
collection of another family refused, and the repository served and searched end to end in both
inference modes (in-process and the real tritonserver), PyTorch as the reference."""

from __future__ import annotations

import asyncio
import json
from contextlib import nullcontext

import httpx
import numpy as np
import pytest

import export.__main__ as export_cli
import export.clip as clip_export
from export.clip import export_clip
from export.families import UnsupportedCheckpoint, family_of
from export.parity import ParityError
from export.random_checkpoints import build_siglip2
from gateway.backends.repository import read_model_info
from gateway.core.errors import ErrorKind, ServiceError
from gateway.runtime.text import TextSpec, TextTokenizer
from gateway.wiring import build_store
from local_servers.tritonserver import TritonServer
from tests.support.gateways import check_text_side, http_and_grpc
from tests.support.images import PHOTO_JPEGS
from tests.support.references import TEST_TRITON_OPTIONS, reexported, settings_for

pytestmark = pytest.mark.integration
TEXTS = ["A Photo of a CAT sleeping on a sofa", "eine Katze schläft auf dem Sofa", "猫がソファで寝ている", "",
         "Ünïcödé, emoji 🚲 and punctuation!?", "a very long caption that keeps going " * 12]


@pytest.fixture(scope="module")
def siglip_checkpoint(tmp_path_factory):
    return build_siglip2(tmp_path_factory.mktemp("checkpoints") / "siglip2-tiny", size="tiny", seed=0)


@pytest.fixture(scope="module")
def siglip_repository(model_repository, siglip_checkpoint, tmp_path_factory):
    """The test repository (BLIP included) with its embedding towers exported from SigLIP 2."""
    return reexported(model_repository, tmp_path_factory.mktemp("siglip"), siglip_checkpoint)


@pytest.fixture(scope="module")
def reference(siglip_checkpoint):
    """PyTorch's SigLIP as its model card runs it: lowercased texts padded to max_length 64, no mask."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer, SiglipModel

    model = SiglipModel.from_pretrained(siglip_checkpoint).eval()
    tokenizer, processor = AutoTokenizer.from_pretrained(siglip_checkpoint), AutoImageProcessor.from_pretrained(siglip_checkpoint)

    def texts(batch: list[str]) -> np.ndarray:
        ids = tokenizer([t.lower() for t in batch], padding="max_length", max_length=64, truncation=True,
                        return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            return torch.nn.functional.normalize(model.text_model(input_ids=ids).pooler_output, dim=-1).numpy()

    def image(name: str) -> np.ndarray:
        import io

        pixels = processor(images=[Image.open(io.BytesIO(PHOTO_JPEGS[name]))], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            return torch.nn.functional.normalize(model.vision_model(pixel_values=pixels).pooler_output, dim=-1).numpy()[0]

    return texts, image, tokenizer


def test_the_export_knows_the_family_and_records_what_its_scores_mean(siglip_repository, model_repository):
    for tower in ("clip_image", "clip_text"):
        manifest = json.loads((siglip_repository / tower / "export.json").read_text())
        assert manifest["family"] == "siglip" and manifest["parity"]["min_cosine"] >= 0.99999
        assert manifest["match_logit"] == pytest.approx([10.0, -10.0])
    assert TextSpec.load(siglip_repository / "clip_text") == TextSpec(64, "<pad>", "fixed", lowercase=True)
    info = read_model_info(siglip_repository, captions=True)
    assert info.family == "siglip" and info.embedding_dim == 16
    assert info.scores() == ("siglip: scores are cosines; a text matches an image with probability"
                             " sigmoid(10 * cosine - 10) (even odds at cosine 1.000)")
    assert read_model_info(model_repository, captions=False).scores() == "clip: scores are cosines"


def test_the_gateway_tokenizes_as_transformers_lowercased_and_padded_to_64(siglip_repository, reference):
    _, _, tokenizer = reference
    ours = TextTokenizer.from_folder(siglip_repository / "clip_text")
    ids, mask = ours(TEXTS)
    expected = tokenizer([t.lower() for t in TEXTS], padding="max_length", max_length=64, truncation=True)["input_ids"]
    np.testing.assert_array_equal(ids, np.array(expected))
    assert ids.shape == (len(TEXTS), 64) and mask.all()  # SigLIP attends to its padding: every position
    assert ids[-1, -1] == tokenizer.eos_token_id  # a long text is cut before its end-of-text token, which stays
    assert ours.count(["a"]) < 64


def test_a_broken_tower_is_refused_and_nothing_is_installed(siglip_checkpoint, tmp_path, monkeypatch):
    from transformers import SiglipModel

    other = SiglipModel.from_pretrained(build_siglip2(tmp_path / "other", size="tiny", seed=7)).eval()
    towers = clip_export._towers
    monkeypatch.setattr(clip_export, "_towers", lambda model, spec, family: towers(other, spec, family))
    repository = tmp_path / "repository"
    with pytest.raises(ParityError, match="clip_image"):
        export_clip(str(siglip_checkpoint), repository, TEST_TRITON_OPTIONS)
    assert not [p for p in repository.iterdir() if not p.name.startswith(".")]


def test_naflex_checkpoints_are_refused_with_the_way_forward(tmp_path, capsys):
    from transformers import Siglip2Config

    with pytest.raises(UnsupportedCheckpoint, match="google/siglip2-base-patch16-224"):
        family_of(Siglip2Config())
    Siglip2Config().save_pretrained(tmp_path / "naflex")
    assert export_cli.main(["clip", "--model", str(tmp_path / "naflex"), "--repository", str(tmp_path / "repo"),
                            "--cpu", "--flavour", "python"]) == 1
    assert "NaFlex" in capsys.readouterr().err and not (tmp_path / "repo" / "clip_image").exists()


def test_a_collection_of_clip_vectors_is_refused_to_a_siglip_gateway(model_repository, siglip_repository, tmp_path):
    """Same dimension (16), two embedding spaces: refused for the model, naming both and the way forward."""
    uri = str(tmp_path / "images.db")
    clip, siglip = (read_model_info(r, captions=False) for r in (model_repository, siglip_repository))
    assert clip.embedding_dim == siglip.embedding_dim

    async def start(info) -> None:
        store = build_store(settings_for(model_repository, uri), info.embedding_dim, info.embedding_model)
        try:
            await store.start()
        finally:
            await store.close()

    asyncio.run(start(clip))
    with pytest.raises(ServiceError) as refused:
        asyncio.run(start(siglip))
    assert refused.value.kind is ErrorKind.MISCONFIGURED and "GATEWAY_COLLECTION" in refused.value.message
    assert clip.embedding_model.source in refused.value.message and siglip.embedding_model.source in refused.value.message


@pytest.mark.parametrize("mode", ["local", "triton"])
def test_siglip2_is_served_and_searched_end_to_end(siglip_repository, reference, tmp_path, mode):
    texts, image, _ = reference
    names = ["astronaut", "coffee", "rocket", "chelsea"]
    with TritonServer(siglip_repository, tmp_path / "triton") if mode == "triton" else nullcontext() as triton:
        overrides = {"inference_mode": "triton", "triton_url": triton.grpc_url} if triton else {}
        with http_and_grpc(siglip_repository, str(tmp_path / "images.db"), captions=False, **overrides) as (url, _):
            assert "siglip: scores are cosines" in httpx.get(f"{url}/readyz").json()["features"]["scores"]
            files = [("files", (f"{n}.jpg", PHOTO_JPEGS[n], "image/jpeg")) for n in names]
            stored = {n: r["id"] for n, r in zip(names, httpx.post(f"{url}/v1/images", files=files, timeout=120)
                                                 .json()["images"])}
            images = {stored[n]: image(n) for n in names}

            # texts (multilingual, uppercase, longer than 64 tokens; the service refuses an empty one)
            check_text_side(url, [t for t in TEXTS if t], texts, images, tolerance=2e-3)
            hits = httpx.post(f"{url}/v1/search/image", files={"file": ("q.jpg", PHOTO_JPEGS["coffee"], "image/jpeg")},
                              data={"k": 2}, timeout=60).json()["results"]
            assert hits[0]["id"] == stored["coffee"] and hits[0]["score"] > 0.9999


def test_siglip2_takes_the_int8_tier_through_the_same_gate(siglip_checkpoint, tmp_path):
    import dataclasses

    export_clip(str(siglip_checkpoint), tmp_path / "repository", dataclasses.replace(TEST_TRITON_OPTIONS, int8=True))
    for tower in ("clip_image", "clip_text"):
        manifest = json.loads((tmp_path / "repository" / tower / "export.json").read_text())
        gate = manifest["int8"]
        assert manifest["precision"] == "int8" and manifest["family"] == "siglip"
        assert gate["mean_cosine"] >= 0.99 and gate["min_cosine"] >= 0.98 and gate["top10_agreement"] >= 0.9, gate
