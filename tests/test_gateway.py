"""The gateway over real HTTP (uvicorn), in both inference modes (in-process ONNX Runtime and the real
Triton), against a real Milvus Lite and a real Milvus server. Search results are checked against
exact brute force."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import time
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import requests

from gateway.backends.repository import read_model_info
from gateway.core.errors import ErrorKind, ServiceError
from gateway.server.http.app import create_app
from gateway.settings import Settings
from gateway.wiring import build_store
from local_servers.processes import free_ports
from local_servers.uvicorn_server import LiveServer
from tests.support.gateways import wait_until_captioned
from tests.support.images import PHOTO_JPEGS as PHOTOS
from tests.support.images import png_header_only, unique_image
from tests.support.references import expected_caption, expected_embedding, settings_for, text_embedding

pytestmark = pytest.mark.integration


@dataclass
class Gateway:
    url: str
    settings: Settings

    def count(self) -> int:
        return httpx.get(f"{self.url}/v1/images", params={"limit": 1}).json()["total"]


@pytest.fixture(scope="module", params=[("local", "lite"), ("triton", "lite"), ("local", "server"), ("triton", "server")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def gateway(request, model_repository, tmp_path_factory):
    mode, store = request.param
    triton_url = request.getfixturevalue("triton").grpc_url if mode == "triton" else "127.0.0.1:1"
    if store == "server":  # one real server for the session, a fresh collection per combination
        uri, collection = request.getfixturevalue("milvus_server").uri, f"images_{mode}"
    else:
        uri, collection = str(tmp_path_factory.mktemp(f"milvus-{mode}") / "images.db"), "images"
    # Both read consistencies against the server: Session (the default) with local inference, Strong with Triton.
    consistency = "Strong" if (mode, store) == ("triton", "server") else "Session"
    settings = settings_for(model_repository, uri, inference_mode=mode, triton_url=triton_url, collection=collection,
                            read_consistency=consistency)
    with LiveServer(create_app(settings)) as server:
        yield Gateway(server.url, settings)


def index(gateway: Gateway, files: dict[str, bytes], metadata: dict | None = None) -> list[dict]:
    response = httpx.post(f"{gateway.url}/v1/images", files=[("files", (n, d, "image/jpeg")) for n, d in files.items()],
                          data={"metadata": json.dumps(metadata)} if metadata is not None else None, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["images"]


# --- the original service's endpoint ---------------------------------------------------------------

def test_embed_image_contract_with_the_original_curl_and_requests_calls(gateway, model_repository, tmp_path):
    path = tmp_path / "image.jpg"
    path.write_bytes(PHOTOS["astronaut"])
    by_curl = json.loads(subprocess.run(["curl", "-s", "-X", "POST", "-F", f"file=@{path}", f"{gateway.url}/embed-image/"],
                                        check=True, capture_output=True, timeout=120).stdout)
    with open(path, "rb") as fh:
        by_requests = requests.post(f"{gateway.url}/embed-image/", files={"file": fh}, timeout=120).json()
    for body in (by_curl, by_requests):
        assert set(body) == {"description", "embedding_vector"}
        assert isinstance(body["description"], str) and isinstance(body["embedding_vector"], list)
        np.testing.assert_allclose(body["embedding_vector"], expected_embedding(model_repository, PHOTOS["astronaut"]),
                                   atol=1e-5)
        assert body["description"] == expected_caption(model_repository, PHOTOS["astronaut"])


def test_embedding_as_base64_float32(gateway):
    plain = httpx.post(f"{gateway.url}/embed-image/", files={"file": ("a.jpg", PHOTOS["coffee"], "image/jpeg")}, timeout=60)
    packed = httpx.post(f"{gateway.url}/embed-image/", params={"embedding_format": "base64"},
                        files={"file": ("a.jpg", PHOTOS["coffee"], "image/jpeg")}, timeout=60)
    decoded = np.frombuffer(base64.b64decode(packed.json()["embedding_vector"]), np.float32)
    np.testing.assert_array_equal(decoded, np.array(plain.json()["embedding_vector"], np.float32))


# --- indexing ----------------------------------------------------------------------------------------

def captioned(gateway: Gateway, image_id: str, timeout: float = 60) -> dict:
    """The record once the gateway's caption worker has written its caption."""
    deadline = time.monotonic() + timeout
    while (record := httpx.get(f"{gateway.url}/v1/images/{image_id}", timeout=30).json())["caption_state"] == "pending":
        assert time.monotonic() < deadline, f"{image_id} not captioned within {timeout} s"
        time.sleep(0.25)
    return record


@pytest.fixture(scope="module")
def indexed(gateway):
    """PHOTOS indexed, as they are once captioned (the upload answers before: caption_state pending)."""
    images = index(gateway, PHOTOS, {"album": "photos"})
    assert {(i["caption_state"], i["caption"]) for i in images} == {("pending", "")}
    return {image["source"]: captioned(gateway, image["id"]) for image in images}


def test_index_returns_ids_captions_and_metadata(gateway, indexed, model_repository):
    assert len({i["id"] for i in indexed.values()}) == len(PHOTOS)
    assert {i["caption_state"] for i in indexed.values()} == {"done"}  # by the worker inside the gateway (Milvus Lite)
    assert indexed["astronaut"]["caption"] == expected_caption(model_repository, PHOTOS["astronaut"], "index")
    stored = httpx.get(f"{gateway.url}/v1/images/{indexed['coffee']['id']}", params={"include_embedding": True}).json()
    assert stored["metadata"] == {"album": "photos"} and stored["source"] == "coffee" and len(stored["phash"]) == 16
    np.testing.assert_allclose(stored["embedding"], expected_embedding(model_repository, PHOTOS["coffee"], "index"), atol=1e-5)


def test_indexing_is_idempotent(gateway):
    data = unique_image(1)
    first = index(gateway, {"one.png": data})[0]
    before = gateway.count()
    again = index(gateway, {"renamed.png": data}, {"ignored": True})[0]
    assert first["created"] and not again["created"] and again["id"] == first["id"]
    assert again["source"] == "one.png" and gateway.count() == before


def test_concurrent_uploads_of_one_image_make_one_record(gateway):
    data, before = unique_image(2), gateway.count()

    async def upload_many():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(client.post(f"{gateway.url}/v1/images",
                                                      files=[("files", ("same.png", data, "image/png"))])
                                          for _ in range(8)))

    responses = asyncio.run(upload_many())
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["images"][0]["id"] for r in responses}) == 1
    assert gateway.count() == before + 1


def test_get_list_and_delete(gateway):
    images = index(gateway, {f"u{i}.png": unique_image(100 + i) for i in range(5)})
    ids = {i["id"] for i in images}
    seen, offset = [], 0
    while True:
        page = httpx.get(f"{gateway.url}/v1/images", params={"limit": 3, "offset": offset}).json()
        seen += [i["id"] for i in page["images"]]
        if len(page["images"]) < 3:
            break
        offset += 3
    assert len(seen) == len(set(seen)) == page["total"] and ids <= set(seen)
    victim = images[0]["id"]
    assert httpx.delete(f"{gateway.url}/v1/images/{victim}").status_code == 204
    missing = httpx.get(f"{gateway.url}/v1/images/{victim}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert httpx.delete(f"{gateway.url}/v1/images/{victim}").status_code == 404


def test_reads_see_every_write_at_once(gateway):
    """Read-your-writes with the default Session consistency: every read right after an index or a delete
    (a Milvus 2.3 server answers deletes without a timestamp, which left deleted rows readable)."""
    def search(data: bytes) -> list[str]:
        response = httpx.post(f"{gateway.url}/v1/search/image", data={"k": "3"}, files={"file": ("q.png", data, "image/png")})
        return [hit["id"] for hit in response.json()["results"]]

    for seed in range(200, 206):
        data = unique_image(seed)
        before = gateway.count()
        image_id = index(gateway, {"fresh.png": data})[0]["id"]
        stored = httpx.get(f"{gateway.url}/v1/images/{image_id}", params={"include_embedding": True})
        assert stored.status_code == 200 and len(stored.json()["embedding"]) > 0
        assert search(data)[0] == image_id and gateway.count() == before + 1
        assert httpx.delete(f"{gateway.url}/v1/images/{image_id}").status_code == 204
        assert httpx.get(f"{gateway.url}/v1/images/{image_id}").status_code == 404
        assert httpx.get(f"{gateway.url}/v1/images/{image_id}/thumbnail").status_code == 404
        assert image_id not in search(data) and gateway.count() == before


# --- search against exact brute force ------------------------------------------------------------------

def stored_vectors(gateway) -> dict[str, np.ndarray]:
    vectors, offset = {}, 0
    while True:
        page = httpx.get(f"{gateway.url}/v1/images", params={"limit": 100, "offset": offset}).json()
        for image in page["images"]:
            full = httpx.get(f"{gateway.url}/v1/images/{image['id']}", params={"include_embedding": True}).json()
            vectors[image["id"]] = (np.array(full["embedding"], np.float32), full)
        if len(page["images"]) < 100:
            return vectors
        offset += 100


def brute_force(query: np.ndarray, vectors: dict, k: int, keep=lambda record: True) -> list[tuple[str, float]]:
    scored = [(i, float(v @ query)) for i, (v, record) in vectors.items() if keep(record)]
    return sorted(scored, key=lambda s: s[1], reverse=True)[:k]


def test_image_search_equals_brute_force(gateway, indexed, model_repository):
    vectors = stored_vectors(gateway)
    for name in ("astronaut", "rocket"):
        response = httpx.post(f"{gateway.url}/v1/search/image", data={"k": "5"},
                              files={"file": ("q.jpg", PHOTOS[name], "image/jpeg")}, timeout=60).json()
        got = [(h["id"], h["score"]) for h in response["results"]]
        want = brute_force(expected_embedding(model_repository, PHOTOS[name], "search"), vectors, 5)
        assert [g[0] for g in got] == [w[0] for w in want] and got[0][0] == indexed[name]["id"]
        np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=1e-4)


def test_text_search_equals_brute_force_plus_the_documented_fusion(gateway, indexed, model_repository):
    """CLIP by brute force, the caption bonus, and where Milvus has BM25 (Lite; not the 2.3 server)
    the reciprocal rank fusion with the keyword hits, checked on every stored image (k = all). Captions
    still queued from earlier tests' uploads would be written between the snapshot and the search."""
    wait_until_captioned(gateway.url)
    vectors = stored_vectors(gateway)
    query = indexed["horse"]["caption"].split()[1] + " red jacket"  # shares one word with a caption
    keywords = httpx.get(f"{gateway.url}/readyz").json()["features"]["keyword_search"]
    assert (keywords == "on") == (gateway.settings.milvus_uri.endswith(".db")), keywords
    k = len(vectors) if keywords == "on" else 4
    body = httpx.post(f"{gateway.url}/v1/search/text", json={"query": query, "k": k}, timeout=60).json()
    clip = dict(brute_force(text_embedding(model_repository, query), vectors, len(vectors)))
    wanted = {w for w in query.lower().split() if w.isalnum()}
    for hit in body["results"]:
        assert hit["clip_score"] == pytest.approx(clip[hit["id"]], abs=1e-4)
        overlap = len(wanted & set(vectors[hit["id"]][1]["caption"].lower().split())) / len(wanted)
        assert hit["caption_match"] == pytest.approx(overlap) and hit["score"] == pytest.approx(hit["clip_score"] + 0.1 * overlap)
    fused = sorted(((i, c + 0.1 * len(wanted & set(vectors[i][1]["caption"].lower().split())) / len(wanted))
                    for i, c in clip.items()), key=lambda s: s[1], reverse=True)
    if keywords != "on":
        assert [h["id"] for h in body["results"]] == [i for i, _ in fused[:4]]
        assert all(h["keyword_score"] == 0 and h["rank_score"] == h["score"] for h in body["results"])
    else:
        hits = body["results"]
        assert sorted(h["id"] for h in hits) == sorted(vectors)
        assert [h["rank_score"] for h in hits] == sorted((h["rank_score"] for h in hits), reverse=True)
        clip_rank = {i: rank for rank, (i, _) in enumerate(fused, 1)}
        keyword_part = {h["id"]: h["rank_score"] - 1 / (60 + clip_rank[h["id"]]) for h in hits}
        matched = [h for h in hits if h["keyword_score"] > 0]
        assert indexed["horse"]["id"] in {h["id"] for h in matched}
        for h in hits:  # a keyword hit's caption shares a word with the query; the rest get CLIP's part only
            shares = bool({w.lower() for w in query.split()} & set(re.findall(r"\w+", vectors[h["id"]][1]["caption"].lower())))
            assert (h["keyword_score"] > 0) <= shares and (keyword_part[h["id"]] > 1e-9) == (h["keyword_score"] > 0)
        # the keyword parts are 1 / (60 + rank) for ranks 1..n, in keyword_score order (ties either way)
        parts = sorted((keyword_part[h["id"]] for h in matched), reverse=True)
        assert parts == pytest.approx([1 / (60 + r) for r in range(1, len(matched) + 1)], abs=1e-9)
        by_score = sorted(matched, key=lambda h: h["keyword_score"], reverse=True)
        for better, worse in zip(by_score, by_score[1:]):
            if better["keyword_score"] > worse["keyword_score"] + 1e-6:
                assert keyword_part[better["id"]] > keyword_part[worse["id"]]
    same = httpx.get(f"{gateway.url}/v1/search/text", params={"q": query, "k": k}).json()
    assert [h["id"] for h in same["results"]] == [h["id"] for h in body["results"]]


def test_filtered_search_equals_brute_force_over_the_matching_subset(gateway, indexed, model_repository):
    index(gateway, {"tagged-a.png": unique_image(200)}, {"album": "other", "rank": 3, "name": 'say "hi"'})
    index(gateway, {"tagged-b.png": unique_image(201)}, {"album": "other", "rank": 7})
    vectors = stored_vectors(gateway)
    query = expected_embedding(model_repository, PHOTOS["chelsea"], "search")
    cases = [
        ([{"field": "metadata.album", "op": "eq", "value": "other"}], lambda r: r["metadata"].get("album") == "other"),
        ([{"field": "metadata.rank", "op": "gt", "value": 5}], lambda r: r["metadata"].get("rank", 0) > 5),
        ([{"field": "source", "op": "in", "value": ["coffee", "horse"]}], lambda r: r["source"] in ("coffee", "horse")),
        ([{"field": "metadata.name", "op": "eq", "value": 'say "hi"'}], lambda r: r["metadata"].get("name") == 'say "hi"'),
        ([{"field": "metadata.album", "op": "eq", "value": 'photos" or id != "'}], lambda r: False),  # stays a literal
        ([{"field": "metadata.album", "op": "eq", "value": "photos"},
          {"field": "source", "op": "ne", "value": "chelsea"}],
         lambda r: r["metadata"].get("album") == "photos" and r["source"] != "chelsea"),
    ]
    for conditions, keep in cases:
        response = httpx.post(f"{gateway.url}/v1/search/image", files={"file": ("q.jpg", PHOTOS["chelsea"], "image/jpeg")},
                              data={"k": "4", "filter": json.dumps(conditions)}, timeout=60)
        assert response.status_code == 200, response.text
        assert [h["id"] for h in response.json()["results"]] == [i for i, _ in brute_force(query, vectors, 4, keep)]


# --- bad input: a clear 4xx, nothing changes ---------------------------------------------------------

@pytest.mark.parametrize("case,status,code", [
    ("undecodable", 400, "invalid_image"), ("truncated", 400, "invalid_image"), ("bomb", 413, "image_too_large"),
    ("oversized-upload", 413, "payload_too_large"), ("text-content-type", 415, "unsupported_media_type"),
    ("bad-metadata", 400, "bad_request"), ("metadata-not-object", 400, "bad_request"),
])
def test_bad_uploads_are_refused_and_change_nothing(gateway, case, status, code):
    data, content_type, form = PHOTOS["coins"], "image/jpeg", {}
    if case == "undecodable":
        data = b"this is not an image"
    elif case == "truncated":
        data = PHOTOS["coins"][: len(PHOTOS["coins"]) // 3]
    elif case == "bomb":
        data = png_header_only(60_000, 60_000)
    elif case == "oversized-upload":
        data = b"\xff" * (gateway.settings.max_upload_bytes + 1)
    elif case == "text-content-type":
        content_type = "text/plain"
    elif case == "bad-metadata":
        form = {"metadata": "{not json"}
    elif case == "metadata-not-object":
        form = {"metadata": "[1, 2]"}
    before = gateway.count()
    for route in ("/v1/images", "/embed-image/"):
        if route == "/embed-image/" and form:
            continue
        field = "files" if route == "/v1/images" else "file"
        response = httpx.post(f"{gateway.url}{route}", files=[(field, ("x.jpg", data, content_type))], data=form, timeout=60)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code and response.json()["error"]["request_id"]
    assert gateway.count() == before


@pytest.mark.parametrize("params,status", [({"q": "", "k": 5}, 400), ({"q": "dog", "k": 0}, 400),
                                           ({"q": "dog", "k": 1001}, 400), ({"q": "   ", "k": 3}, 400),
                                           ({"q": "dog", "filter": '[{"field": "vector", "value": 1}]'}, 422),
                                           ({"q": "dog", "filter": "not json"}, 422),
                                           ({"q": "dog", "filter": '[{"field": "created_at", "op": "in", "value": 5}]'}, 422)])
def test_bad_search_parameters(gateway, params, status):
    response = httpx.get(f"{gateway.url}/v1/search/text", params=params)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize("path,params", [
    ("/v1/images/not-an-id", {}), ("/v1/images/%22%29%20or%20id%20!%3D%20%28%22", {}),  # '") or id != ("'
    ("/v1/images/" + "A" * 32, {}), ("/v1/images", {"offset": 16000, "limit": 1000}), ("/v1/images", {"offset": 20000}),
])
def test_malformed_ids_and_listing_windows_are_422(gateway, path, params):
    """Found by schemathesis: pymilvus pastes ids into an expression, and Milvus caps offset + limit."""
    for method in ("GET", "DELETE") if path != "/v1/images" else ("GET",):
        response = httpx.request(method, f"{gateway.url}{path}", params=params)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_request"


# --- operations ----------------------------------------------------------------------------------------

def test_health_readiness_metrics_and_request_ids(gateway):
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"inference": "ok", "milvus": "ok"}
    echoed = httpx.get(f"{gateway.url}/healthz", headers={"x-request-id": "abc123"})
    assert echoed.headers["x-request-id"] == "abc123"
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'gateway_request_seconds_count{method="POST",route="/v1/images",status="200"}' in metrics
    assert "gateway_inference_batch_size_bucket" in metrics and "gateway_store_seconds_bucket" in metrics
    assert 'gateway_errors_total{code="invalid_image"}' in metrics


def test_openapi_documents_errors_and_examples(gateway):
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    embed = spec["paths"]["/embed-image/"]["post"]
    assert {"200", "400", "413", "415", "503", "504"} <= set(embed["responses"])
    assert "ErrorBody" in json.dumps(embed["responses"]["503"])
    assert {"/v1/images", "/v1/images/{image_id}", "/v1/search/image", "/v1/search/text", "/readyz"} <= set(spec["paths"])


# --- failing dependencies --------------------------------------------------------------------------

def test_triton_down_gives_503_with_retry_after_and_writes_nothing(model_repository, tmp_path):
    (closed,) = free_ports(1)
    settings = settings_for(model_repository, str(tmp_path / "images.db"), inference_mode="triton",
                            triton_url=f"127.0.0.1:{closed}", triton_retries=1, triton_timeout_s=5)
    with LiveServer(create_app(settings)) as server:
        for route, field in (("/embed-image/", "file"), ("/v1/images", "files")):
            response = httpx.post(f"{server.url}{route}", files=[(field, ("a.jpg", PHOTOS["coins"], "image/jpeg"))], timeout=60)
            assert response.status_code == 503 and response.headers["retry-after"] == "5"
            assert response.json()["error"]["code"] == "dependency_unavailable"
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 503 and "inference" in ready.json()["error"]["message"]
        assert httpx.get(f"{server.url}/v1/images").json()["total"] == 0


def test_collection_with_another_dimension_is_a_clear_startup_error(model_repository, tmp_path):
    settings = settings_for(model_repository, str(tmp_path / "images.db"))

    async def start(dim):
        store = build_store(settings, dim)
        try:
            await store.start()
        finally:
            await store.close()

    asyncio.run(start(8))
    with pytest.raises(ServiceError, match="holds 8-d vectors but the models give 16-d") as refused:
        asyncio.run(start(16))
    assert refused.value.kind is ErrorKind.MISCONFIGURED


@pytest.mark.parametrize("where", ["lite", "server"])
def test_a_collection_of_another_model_is_refused_with_the_way_forward(request, model_repository, tmp_path, where):
    """A collection records the checkpoint whose vectors it holds; a gateway with another CLIP of the same
    dimension is refused at start (two embedding spaces in one collection rank nonsense), the same one is
    served, and a collection made before collections recorded it is served as it is."""
    from gateway.core.protocols import EmbeddingModel

    uri = str(tmp_path / "images.db") if where == "lite" else request.getfixturevalue("milvus_server").uri
    ours = read_model_info(model_repository, captions=False).embedding_model
    other = EmbeddingModel("folder:0123456789abcdef", "/checkpoints/clip-other")

    def start(collection: str, model) -> None:
        async def run():
            store = build_store(settings_for(model_repository, uri, collection=collection), ours_dim, model)
            try:
                await store.start()
            finally:
                await store.close()
        asyncio.run(run())

    ours_dim = read_model_info(model_repository, captions=False).embedding_dim
    start("recorded", ours)  # created: records ours
    start("recorded", ours)
    with pytest.raises(ServiceError) as refused:
        start("recorded", other)
    assert refused.value.kind is ErrorKind.MISCONFIGURED
    assert ours.source in refused.value.message and other.source in refused.value.message
    assert "GATEWAY_COLLECTION" in refused.value.message
    start("unrecorded", None)  # as an older gateway made it
    start("unrecorded", other)


def test_repository_sources_are_checked_against_clip_model_and_blip_model(model_repository, clip_checkpoint,
                                                                         blip_checkpoint):
    info = read_model_info(model_repository, captions=True)
    assert info.mismatched_sources(str(clip_checkpoint), str(blip_checkpoint)) == []
    assert info.mismatched_sources("openai/clip-vit-large-patch14", str(blip_checkpoint)) == [
        f"clip_image was exported from {clip_checkpoint}, not openai/clip-vit-large-patch14",
        f"clip_text was exported from {clip_checkpoint}, not openai/clip-vit-large-patch14"]
    assert Settings(_env_file=None).clip_model == "openai/clip-vit-base-patch32"


def test_min_score_returns_exactly_the_brute_force_hits_at_or_above_it(gateway, indexed, model_repository):
    vectors = stored_vectors(gateway)
    want = brute_force(expected_embedding(model_repository, PHOTOS["rocket"], "search"), vectors, 5)
    cut = want[2][1] - 1e-5  # the third score (the store's float32 cosine may differ in the last digits)
    response = httpx.post(f"{gateway.url}/v1/search/image", data={"k": "5", "min_score": repr(cut)},
                          files={"file": ("q.jpg", PHOTOS["rocket"], "image/jpeg")}, timeout=60).json()
    assert [h["id"] for h in response["results"]] == [i for i, s in want if s >= cut]
    bad = httpx.get(f"{gateway.url}/v1/search/text", params={"q": "rocket", "min_score": "nan"})
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "min_score must be a finite number"


def test_similar_equals_brute_force_over_the_other_stored_vectors(gateway, indexed):
    vectors = stored_vectors(gateway)
    own = indexed["coffee"]["id"]
    others = {i: v for i, v in vectors.items() if i != own}
    response = httpx.get(f"{gateway.url}/v1/images/{own}/similar", params={"k": 5}).json()["results"]
    want = brute_force(vectors[own][0], others, 5)
    assert [h["id"] for h in response] == [i for i, _ in want] and own not in [h["id"] for h in response]
    np.testing.assert_allclose([h["score"] for h in response], [s for _, s in want], atol=1e-4)
    # with a filter, a cutoff, and more k than there are matches
    conditions = [{"field": "metadata.album", "op": "eq", "value": "photos"}]
    photos = {i: v for i, v in others.items() if v[1]["metadata"].get("album") == "photos"}
    cut = brute_force(vectors[own][0], photos, 3)[2][1] - 1e-5
    filtered = httpx.get(f"{gateway.url}/v1/images/{own}/similar",
                         params={"k": 1000, "filter": json.dumps(conditions)}).json()["results"]
    assert [h["id"] for h in filtered] == [i for i, _ in brute_force(vectors[own][0], photos, 1000)]
    cutoff = httpx.get(f"{gateway.url}/v1/images/{own}/similar", params={"k": 5, "min_score": repr(cut),
                                                                           "filter": json.dumps(conditions)}).json()["results"]
    assert len(cutoff) == 3
    missing = httpx.get(f"{gateway.url}/v1/images/{'0' * 32}/similar")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{gateway.url}/v1/images/{own}/similar", params={"k": 0}).status_code == 400
