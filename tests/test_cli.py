"""The CLI on a generated folder of real photos, altered copies and corrupt files, embedded and
through a running gateway."""

from __future__ import annotations

import re
from contextlib import contextmanager

import httpx
import pytest
from PIL import Image

from gateway.cli.main import main
from gateway.server.http.app import create_app
from local_servers.processes import free_ports
from local_servers.uvicorn_server import LiveServer
from tests.support.images import encode, photo_array
from tests.support.references import settings_for

pytestmark = pytest.mark.integration

ORIGINALS = ["astronaut", "coffee", "chelsea", "rocket", "horse", "hubble_deep_field"]


@pytest.fixture
def folders(tmp_path):
    """photos/ (originals in nested folders, three corrupt files) and variants/ (altered copies)."""
    photos, variants = tmp_path / "photos", tmp_path / "variants"
    for i, name in enumerate(ORIGINALS):
        folder = photos / "a" if i % 2 else photos / "b" / "deep"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.jpg").write_bytes(encode(Image.fromarray(photo_array(name)).convert("RGB"), "JPEG", quality=92))
    (photos / "truncated.jpg").write_bytes((photos / "a" / "coffee.jpg").read_bytes()[:1500])
    (photos / "notes.jpg").write_bytes(b"a text file with an image extension\n")
    (photos / "empty.png").write_bytes(b"")
    variants.mkdir()
    for name in ORIGINALS[:3]:
        image = Image.fromarray(photo_array(name)).convert("RGB")
        w, h = image.size
        (variants / f"{name}-small.png").write_bytes(encode(image.resize((w // 2, h // 2))))
        (variants / f"{name}-q30.jpg").write_bytes(encode(image, "JPEG", quality=30))
        (variants / f"{name}-crop.webp").write_bytes(encode(image.crop((w // 50, h // 50, w - w // 50, h - h // 50)), "WEBP"))
    return photos, variants


@pytest.fixture
def embedded(monkeypatch, model_repository, tmp_path):
    settings = settings_for(model_repository, str(tmp_path / "images.db"))
    for name in ("model_repository", "milvus_uri", "caption_beams", "caption_max_new_tokens"):
        monkeypatch.setenv(f"GATEWAY_{name.upper()}", str(getattr(settings, name)))
    return settings


def counts(output: str) -> dict[str, int]:
    match = re.search(r"indexed (\d+), already indexed (\d+), near-duplicates (\d+), failed (\d+)", output)
    return dict(zip(("indexed", "skipped", "near", "failed"), map(int, match.groups())))


def test_index_query_resume_and_near_duplicates_embedded(embedded, folders, tmp_path, capsys):
    photos, variants = folders
    assert main(["index", str(photos), "--with_captions"]) == 0
    out = capsys.readouterr()
    assert counts(out.out) == {"indexed": 6, "skipped": 0, "near": 0, "failed": 3}
    for bad in ("truncated.jpg", "notes.jpg", "empty.png"):
        assert re.search(rf"failed: .*{bad}: ", out.err)

    assert main(["index", "--images_dir", str(photos)]) == 0  # starter-kit flag; nothing new
    assert counts(capsys.readouterr().out) == {"indexed": 0, "skipped": 6, "near": 0, "failed": 3}

    # resized and recompressed copies find their original first, by CLIP
    for variant in sorted(v for v in variants.iterdir() if "crop" not in v.name):
        out_file = tmp_path / f"{variant.stem}.html"
        assert main(["query", "--image", str(variant), "--k", "3", "--out", str(out_file)]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[1].endswith(f"{variant.stem.rsplit('-', 1)[0]}.jpg"), table
        assert out_file.read_text().count('<img src="data:image/jpeg;base64,') == 3

    # every altered copy, cropped ones too, is recognised as a near-duplicate of its original, and
    # skipped on request (the tests' random CLIP cannot tell crops apart; the perceptual hash can)
    assert main(["index", str(variants), "--near-duplicates", "skip"]) == 0
    out = capsys.readouterr()
    assert counts(out.out) == {"indexed": 0, "skipped": 0, "near": 9, "failed": 0}
    # (sources are paths relative to the folder indexed)
    found = dict(re.findall(r"near-duplicate: ([\w-]+)\.\w+ ~ (?:[\w/]+/)?(\w+)\.jpg \(\d+ bits apart\), skipped", out.err))
    assert found == {v.stem: v.stem.rsplit("-", 1)[0] for v in variants.iterdir()}
    assert main(["index", str(variants), "--near-duplicates", "report", "--phash-distance", "0"]) == 0
    # report mode indexes them all; at 0 bits only the resized and recompressed copies count as near-duplicates
    assert counts(capsys.readouterr().out) == {"indexed": 9, "skipped": 0, "near": 6, "failed": 0}

    assert main(["query", "--query", "man in red jacket", "--k", "4", "--out", str(tmp_path / "results.html")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 4 + 1  # header, 4 rows, "wrote ..."
    assert (tmp_path / "results.html").read_text().count("<figure>") == 4

    # the starter kit's artefacts: a FAISS index whose row i is described by meta.json[i]
    import json

    import faiss
    import numpy as np

    index_out, meta_out = tmp_path / "index.faiss", tmp_path / "meta.json"
    assert main(["export-faiss", "--index_out", str(index_out), "--meta_out", str(meta_out)]) == 0
    assert "wrote 15 vectors" in capsys.readouterr().out  # 6 photos + 9 variants indexed in report mode
    index, meta = faiss.read_index(str(index_out)), json.loads(meta_out.read_text())
    assert index.ntotal == len(meta) == 15 and [m["row"] for m in meta] == list(range(15))
    vectors = index.reconstruct_n(0, index.ntotal)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    scores, _ = index.search(vectors, 1)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)  # inner product of unit vectors: cosine
    assert len({m["id"] for m in meta}) == 15
    assert main(["--url", "http://127.0.0.1:1", "export-faiss"]) == 2


@contextmanager
def running_gateway(model_repository, tmp_path):
    """A gateway with HTTP and gRPC; yields the --url of each transport."""
    (grpc_port,) = free_ports(1)
    settings = settings_for(model_repository, str(tmp_path / "gw.db"), grpc_port=grpc_port, host="127.0.0.1")
    with LiveServer(create_app(settings)) as server:
        yield {"http": server.url, "grpc": f"grpc://127.0.0.1:{grpc_port}"}


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_index_and_query_through_a_running_gateway(model_repository, folders, tmp_path, capsys, transport):
    photos, variants = folders
    with running_gateway(model_repository, tmp_path) as urls:
        url = urls[transport]
        # small batches, several in flight (gRPC: one stream each): the same outcome as one at a time
        assert main(["--url", url, "index", str(photos), "--batch-size", "2", "--concurrency", "3",
                     "--metadata", '{"album": "cli"}']) == 0
        assert counts(capsys.readouterr().out) == {"indexed": 6, "skipped": 0, "near": 0, "failed": 3}
        assert main(["--url", url, "index", str(photos)]) == 0
        assert counts(capsys.readouterr().out)["indexed"] == 0
        variant = variants / "chelsea-q30.jpg"
        assert main(["--url", url, "query", "--image", str(variant), "--k", "2", "--out", str(tmp_path / "r.html"),
                     "--filter", '[{"field": "metadata.album", "value": "cli"}]']) == 0
        assert capsys.readouterr().out.splitlines()[1].endswith("chelsea.jpg")
        stored = httpx.get(f"{urls['http']}/v1/images", params={"limit": 100}).json()["images"]
        chelsea = next(i["id"] for i in stored if i["source"].endswith("chelsea.jpg"))
        want = httpx.get(f"{urls['http']}/v1/images/{chelsea}/similar", params={"k": 3}).json()["results"]
        assert main(["--url", url, "query", "--similar-to", chelsea, "--k", "3", "--out", str(tmp_path / "s.html")]) == 0
        rows = capsys.readouterr().out.splitlines()[1:4]
        assert [row.split()[-1] for row in rows] == [h["source"] for h in want]
        assert main(["--url", url, "query", "--k", "0", "x"]) == 2
        assert "error [bad_request]: k must be in 1..1000" in capsys.readouterr().err  # the gateway's 400 / INVALID_ARGUMENT


def test_the_embedded_cli_refuses_a_lite_file_a_running_gateway_holds(model_repository, folders, tmp_path, capsys,
                                                                      monkeypatch):
    """Two processes must never write one Milvus Lite file: the CLI stops with what to do instead,
    writes nothing, and the same folder indexes fine through the gateway."""
    from local_servers.service_process import gateway_process

    photos, _ = folders
    with gateway_process(model_repository, tmp_path / "gw", caption_beams=1, caption_max_new_tokens=4) as gateway:
        database = gateway.env["GATEWAY_MILVUS_URI"]
        monkeypatch.setenv("GATEWAY_MODEL_REPOSITORY", str(model_repository))
        monkeypatch.setenv("GATEWAY_MILVUS_URI", database)
        assert main(["index", str(photos)]) == 2
        err = capsys.readouterr().err
        assert f"the Milvus Lite file {database} is in use by another process" in err and "--url" in err
        assert httpx.get(f"{gateway.url}/v1/images").json()["total"] == 0
        assert main(["--url", gateway.url, "index", str(photos), "--no-captions"]) == 0
        assert counts(capsys.readouterr().out)["indexed"] == 6
        assert httpx.get(f"{gateway.url}/v1/images").json()["total"] == 6


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_results_html_shows_stored_thumbnails_for_images_indexed_through_the_api(model_repository, tmp_path, capsys,
                                                                                 transport):
    with running_gateway(model_repository, tmp_path) as urls:
        files = [("files", (f"{n}.jpg", encode(Image.fromarray(photo_array(n)).convert("RGB"), "JPEG"), "image/jpeg"))
                 for n in ORIGINALS[:3]]
        assert httpx.post(f"{urls['http']}/v1/images", files=files, timeout=120).status_code == 200
        out = tmp_path / "results.html"
        assert main(["--url", urls[transport], "query", "photo", "--k", "3", "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count('<img src="data:image/jpeg;base64,') == 3 and "no thumbnail" not in page


def test_the_embedded_cli_outside_the_checkout_names_the_missing_repository_and_the_setting(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    done = subprocess.run([str(Path(sys.executable).parent / "image-search"), "query", "dog"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"the model repository {tmp_path / 'model_repository'} has no clip_image" in done.stderr
    assert "GATEWAY_MODEL_REPOSITORY" in done.stderr
