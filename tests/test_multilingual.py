"""A multilingual text tower in CLIP's space (`python -m export clip --text-model`, export/sentence_text.py):
exported from a sentence-transformers checkpoint (DistilBERT -> mean pooling -> Dense), gated on
sentence-transformers' own embeddings (a broken tower refused, nothing installed; a tower of another
dimension refused), and served in both inference modes over a collection a plain CLIP gateway indexed:
the image tower is CLIP's, so the vectors stay and queries in other languages search them."""

from __future__ import annotations

import json
from contextlib import nullcontext

import httpx
import numpy as np
import pytest

import export.__main__ as export_cli
import export.clip as clip_export
import export.random_checkpoints as checkpoints
from export.clip import PARITY_TEXTS, export_clip
from export.families import UnsupportedCheckpoint
from export.parity import ParityError
from export.random_checkpoints import build_multilingual_text
from export.sentence_text import sentence_transformer_side
from gateway.backends.repository import read_model_info
from gateway.runtime.text import TextSpec
from local_servers.tritonserver import TritonServer
from tests.support.gateways import check_text_side, http_and_grpc
from tests.support.images import PHOTO_JPEGS
from tests.support.references import TEST_TRITON_OPTIONS, cosine, expected_embedding, reexported, text_embedding

pytestmark = pytest.mark.integration
QUERIES = ["eine Katze schläft auf dem Sofa", "un chat noir sur le canapé", "猫がソファで寝ている", "a red rocket",
           "Ünïcödé 🚲 " + "une très longue légende " * 30]  # the last longer than 128 tokens: truncated


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory):
    return build_multilingual_text(tmp_path_factory.mktemp("checkpoints") / "multilingual-text", size="tiny", seed=0)


@pytest.fixture(scope="module")
def multilingual_repository(model_repository, clip_checkpoint, text_checkpoint, tmp_path_factory):
    """The test repository (BLIP included) with CLIP's text tower replaced by the multilingual one."""
    return reexported(model_repository, tmp_path_factory.mktemp("multilingual"), clip_checkpoint,
                      text_source=str(text_checkpoint))


@pytest.fixture(scope="module")
def reference(text_checkpoint):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(text_checkpoint), device="cpu")
    return lambda texts: model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)


def test_the_text_tower_is_the_multilingual_one_and_the_image_tower_stays(multilingual_repository, model_repository,
                                                                          text_checkpoint, clip_checkpoint, reference):
    text = json.loads((multilingual_repository / "clip_text" / "export.json").read_text())
    assert text["request"]["source"] == str(text_checkpoint) and text["request"]["image_source"] == str(clip_checkpoint)
    # alignment: its mean cosine to the CLIP's own text tower on the English parity texts
    english = [t for t in PARITY_TEXTS if t.isascii() and t]
    own = [text_embedding(model_repository, t) for t in english]
    assert text["text_tower"] == "sentence-transformers"
    assert text["alignment"] == pytest.approx(np.mean([cosine(a, b) for a, b in zip(reference(english), own)]), abs=1e-4)
    assert text["parity"]["min_cosine"] >= 0.99999
    assert TextSpec.load(multilingual_repository / "clip_text") == TextSpec(128, "[PAD]", "bucketed", lowercase=False)
    ours, plain = (read_model_info(r, captions=False) for r in (multilingual_repository, model_repository))
    assert ours.embedding_model == plain.embedding_model  # one embedding space: a CLIP collection is served
    assert ours.mismatched_sources(str(clip_checkpoint), "x", str(text_checkpoint)) == []
    assert ours.mismatched_sources(str(clip_checkpoint), "x") == [
        f"clip_text was exported from {text_checkpoint}, not {clip_checkpoint}"]
    # exported again with the same checkpoints: up to date
    assert export_clip(str(clip_checkpoint), multilingual_repository, TEST_TRITON_OPTIONS,
                       text_source=str(text_checkpoint)) == {}


def test_a_broken_text_tower_is_refused_and_nothing_is_installed(clip_checkpoint, text_checkpoint, tmp_path,
                                                                 monkeypatch):
    stranger = sentence_transformer_side(str(build_multilingual_text(tmp_path / "other", size="tiny", seed=7)))
    honest = sentence_transformer_side(str(text_checkpoint))
    honest.module = stranger.module  # exports another tower than the reference it is checked against
    monkeypatch.setattr(clip_export, "sentence_transformer_side", lambda source: honest)
    repository = tmp_path / "repository"
    with pytest.raises(ParityError, match="clip_text"):
        export_clip(str(clip_checkpoint), repository, TEST_TRITON_OPTIONS, text_source=str(text_checkpoint))
    assert not (repository / "clip_text").exists()


def test_a_text_tower_of_another_dimension_is_refused(clip_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(checkpoints.MULTILINGUAL_TEXT_SIZES, "tiny",
                        {**checkpoints.MULTILINGUAL_TEXT_SIZES["tiny"], "out": 24})
    wide = build_multilingual_text(tmp_path / "wide", size="tiny")
    with pytest.raises(UnsupportedCheckpoint, match="24-d embeddings.*16-d"):
        export_clip(str(clip_checkpoint), tmp_path / "repository", TEST_TRITON_OPTIONS, text_source=str(wide))
    with pytest.raises(SystemExit):
        export_cli.parse_args(["blip", "--text-model", str(wide)])


@pytest.mark.parametrize("mode", ["local", "triton"])
def test_queries_in_other_languages_search_a_collection_clip_indexed(multilingual_repository, model_repository,
                                                                    reference, tmp_path, mode):
    names = ["astronaut", "coffee", "rocket", "chelsea"]
    database = str(tmp_path / "images.db")
    with http_and_grpc(model_repository, database, captions=False) as (url, _):  # indexed by plain CLIP
        files = [("files", (f"{n}.jpg", PHOTO_JPEGS[n], "image/jpeg")) for n in names]
        stored = [r["id"] for r in httpx.post(f"{url}/v1/images", files=files, timeout=120).json()["images"]]
    images = {i: expected_embedding(model_repository, PHOTO_JPEGS[n], "index without captions") for i, n in zip(stored, names)}
    with TritonServer(multilingual_repository, tmp_path / "triton") if mode == "triton" else nullcontext() as triton:
        overrides = {"inference_mode": "triton", "triton_url": triton.grpc_url} if triton else {}
        with http_and_grpc(multilingual_repository, database, captions=False, **overrides) as (url, _):
            check_text_side(url, QUERIES, reference, images, tolerance=1e-3)
            hits = httpx.post(f"{url}/v1/search/image", files={"file": ("q.jpg", PHOTO_JPEGS["coffee"], "image/jpeg")},
                              data={"k": 1}, timeout=60).json()["results"]
            assert hits[0]["id"] == stored[1] and hits[0]["score"] > 0.9999
