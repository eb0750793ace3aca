"""The HTTP routes through the ASGI app (Starlette's TestClient) over the core with fakes: request
parsing, status codes, the error shape, the k limit and the access middleware."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from gateway.core.errors import ErrorKind, ServiceError
from gateway.core.filters import Condition
from gateway.core.service import ImageSearchService
from gateway.server.access import hash_key
from gateway.server.http.app import create_app
from gateway.settings import Settings
from tests.support.fakes import fake_service
from tests.support.images import PHOTO_JPEGS, unique_image

KEY = "isk_routes_0123456789abcdef"


@pytest.fixture
def core() -> ImageSearchService:
    return fake_service(max_upload_bytes=500_000)


def client_for(core: ImageSearchService, **settings) -> TestClient:
    return TestClient(create_app(Settings(_env_file=None, grpc_port=0, **settings), core))


@pytest.fixture
def client(core):
    with client_for(core) as client:
        yield client


def upload(client: TestClient, files: dict[str, bytes], **form) -> dict:
    response = client.post("/v1/images", files=[("files", (n, d, "image/png")) for n, d in files.items()], data=form)
    assert response.status_code == 200, response.text
    return response.json()


def error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["request_id"]
    return body["error"]["message"]


def test_the_lifespan_starts_and_closes_the_service(core):
    with client_for(core):
        assert core.store.started
    assert core.store.closed and core.inference.closed


def test_embed_image_contract(client, core):
    body = client.post("/embed-image/", files={"file": ("a.jpg", PHOTO_JPEGS["coffee"], "image/jpeg")}).json()
    assert set(body) == {"description", "embedding_vector"} and body["description"].startswith("a picture of")
    packed = client.post("/embed-image/", params={"embedding_format": "base64"},
                         files={"file": ("a.jpg", PHOTO_JPEGS["coffee"], "image/jpeg")}).json()
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(packed["embedding_vector"]), np.float32),
                                  np.array(body["embedding_vector"], np.float32))


def test_index_get_thumbnail_list_delete(client):
    (image,) = upload(client, {"a.png": unique_image(1)}, metadata=json.dumps({"album": "x"}))["images"]
    assert image["created"] and image["metadata"] == {"album": "x"} and image["source"] == "a.png"
    assert not upload(client, {"b.png": unique_image(1)})["images"][0]["created"]
    stored = client.get(f"/v1/images/{image['id']}", params={"include_embedding": True}).json()
    assert len(stored["embedding"]) == 8
    thumbnail = client.get(f"/v1/images/{image['id']}/thumbnail")
    assert thumbnail.headers["content-type"] == "image/jpeg" and thumbnail.content[:2] == b"\xff\xd8"
    assert client.get("/v1/images", params={"limit": 10}).json()["total"] == 1
    assert client.delete(f"/v1/images/{image['id']}").status_code == 204
    error(client.get(f"/v1/images/{image['id']}"), 404, "not_found")
    error(client.delete(f"/v1/images/{image['id']}"), 404, "not_found")


def test_captions_form_field(client):
    (image,) = upload(client, {"a.png": unique_image(2)}, captions="false")["images"]
    assert image["caption"] == ""


@pytest.mark.parametrize("k", [0, 1001])
def test_k_out_of_range_is_400_on_every_search_route(client, k):
    for response in (client.get("/v1/search/text", params={"q": "dog", "k": k}),
                     client.post("/v1/search/text", json={"query": "dog", "k": k}),
                     client.post("/v1/search/image", data={"k": str(k)},
                                 files={"file": ("q.png", unique_image(3), "image/png")})):
        assert error(response, 400, "bad_request") == "k must be in 1..1000"


def test_text_search_get_and_post_agree_and_filters_reach_the_store(client, core):
    upload(client, {f"{i}.png": unique_image(10 + i) for i in range(4)}, metadata='{"album": "x"}')
    upload(client, {"other.png": unique_image(15)}, metadata='{"album": "y"}')
    conditions = [{"field": "metadata.album", "op": "eq", "value": "x"}]
    got = client.get("/v1/search/text", params={"q": "dog", "k": 3, "filter": json.dumps(conditions)}).json()
    posted = client.post("/v1/search/text", json={"query": "dog", "k": 3, "filters": conditions}).json()
    assert [h["id"] for h in got["results"]] == [h["id"] for h in posted["results"]] and len(got["results"]) == 3
    assert set(got["results"][0]) >= {"id", "score", "clip_score", "caption_match", "caption", "source", "metadata"}
    assert core.store.searched[-2:] == [[Condition("metadata.album", "eq", ("x",))]] * 2
    assert {h["metadata"]["album"] for h in got["results"]} == {"x"}


def test_an_empty_query_is_400_on_both_text_routes(client):
    for response in (client.get("/v1/search/text", params={"q": ""}), client.post("/v1/search/text", json={"query": " "})):
        assert error(response, 400, "bad_request") == "the query is empty"


def test_bad_filters_are_422_with_a_readable_message(client):
    bad = '[{"field": "source", "op": "like", "value": 1}]'
    message = error(client.get("/v1/search/text", params={"q": "dog", "filter": bad}), 422, "invalid_filter")
    assert "filter[0].op" in message and "pydantic" not in message


def test_bad_uploads(client, core):
    error(client.post("/v1/images", files=[("files", ("a.txt", b"hello", "text/plain"))]), 415, "unsupported_media_type")
    error(client.post("/v1/images", files=[("files", ("a.jpg", b"not an image", "image/jpeg"))]), 400, "invalid_image")
    error(client.post("/v1/images", files=[("files", ("a.jpg", b"\xff" * 500_001, "image/jpeg"))]), 413, "payload_too_large")
    error(client.post("/v1/images", files=[("files", ("a.png", unique_image(4), "image/png"))], data={"metadata": "[1]"}),
          400, "bad_request")
    assert core.store.records == {}


def test_dependency_failures_are_503_with_retry_after_and_504(client, core):
    core.inference.fail = ServiceError(ErrorKind.UNAVAILABLE, "Triton cannot serve clip_text")
    response = client.get("/v1/search/text", params={"q": "dog"})
    assert error(response, 503, "dependency_unavailable") == "Triton cannot serve clip_text"
    assert response.headers["retry-after"] == "5"
    core.inference.fail = ServiceError(ErrorKind.TIMEOUT, "Triton did not answer")
    error(client.get("/v1/search/text", params={"q": "dog"}), 504, "dependency_timeout")


def test_readyz_is_red_with_the_reason(client, core):
    assert client.get("/readyz").json() == {"status": "ready", "checks": {"inference": "ok", "milvus": "ok"},
                                            "features": {"keyword_search": "off: the in-memory store was made without it",
                                                             "vector_search": "exact (numpy brute force)",
                                                             "decode": "gateway", "precision": "fp32",
                                                             "scores": "clip: scores are cosines",
                                                             "tenants": "filtered per tenant",
                                                             "filter_fields": "none declared",
                                                             "captions": "queued: 0 pending, 0 failed; no worker here"
                                                                         " (python -m gateway.captioner)"}}
    core.store.fail = ServiceError(ErrorKind.UNAVAILABLE, "Milvus ready failed: connection refused")
    assert "milvus: Milvus ready failed" in error(client.get("/readyz"), 503, "dependency_unavailable")


def test_keys_are_checked_before_routes_and_public_routes_stay_open(core):
    keys = [{"name": "reader", "sha256": hash_key(KEY), "scopes": ["search"]}]
    with client_for(core, api_keys=keys) as client:
        refused = client.get("/v1/images")
        error(refused, 401, "missing_api_key")
        assert refused.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/images", headers={"X-API-Key": KEY}).status_code == 200
        error(client.post("/v1/images", headers={"Authorization": f"Bearer {KEY}"},
                          files=[("files", ("a.png", unique_image(5), "image/png"))]), 403, "forbidden")
        for path in ("/healthz", "/readyz", "/metrics", "/", "/openapi.json"):
            assert client.get(path).status_code == 200, path
    assert core.store.records == {}


def test_request_ids_are_echoed_and_unknown_routes_get_the_error_shape(client):
    assert client.get("/healthz", headers={"x-request-id": "abc"}).headers["x-request-id"] == "abc"
    error(client.get("/nowhere"), 404, "not_found")
    error(client.get("/v1/images/not-an-id"), 422, "invalid_request")


def test_min_score_on_every_search_route_and_nan_is_400(client):
    upload(client, {f"{i}.png": unique_image(30 + i) for i in range(5)})
    every = client.get("/v1/search/text", params={"q": "dog", "k": 5}).json()["results"]
    cut = every[1]["score"]
    for response in (client.get("/v1/search/text", params={"q": "dog", "k": 5, "min_score": cut}),
                     client.post("/v1/search/text", json={"query": "dog", "k": 5, "min_score": cut})):
        assert [h["id"] for h in response.json()["results"]] == [h["id"] for h in every if h["score"] >= cut]
    image = client.post("/v1/search/image", data={"k": "5", "min_score": "0.999999"},
                        files={"file": ("q.png", unique_image(30), "image/png")}).json()["results"]
    assert all(h["score"] >= 0.999999 for h in image)
    assert error(client.get("/v1/search/text", params={"q": "dog", "min_score": "nan"}), 400, "bad_request") == \
        "min_score must be a finite number"
    error(client.get("/v1/search/text", params={"q": "dog", "min_score": "high"}), 422, "invalid_request")


def test_similar_excludes_the_image_itself_and_runs_no_model(client, core):
    ids = [i["id"] for i in upload(client, {f"{n}.png": unique_image(900 + n) for n in range(4)})["images"]]
    calls = list(core.inference.calls)
    hits = client.get(f"/v1/images/{ids[0]}/similar", params={"k": 10}).json()["results"]
    assert sorted(h["id"] for h in hits) == sorted(ids[1:]) and core.inference.calls == calls
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len(client.get(f"/v1/images/{ids[0]}/similar", params={"k": 2}).json()["results"]) == 2
    error(client.get(f"/v1/images/{'a' * 32}/similar"), 404, "not_found")
    error(client.get(f"/v1/images/{ids[0]}/similar", params={"min_score": "nan"}), 400, "bad_request")


def test_embeddings_keep_input_order_and_mix_texts_and_images(client, core):
    image = "data:image/png;base64," + base64.b64encode(unique_image(950)).decode()
    body = client.post("/v1/embeddings", json={"input": ["a dog", image, "a cat"], "model": "m"}).json()
    assert body["object"] == "list" and body["model"] == "m" and [d["index"] for d in body["data"]] == [0, 1, 2]
    vectors = np.array([d["embedding"] for d in body["data"]], np.float32)
    np.testing.assert_allclose(vectors[0], core.inference.text_vector("a dog"), atol=1e-6)
    np.testing.assert_allclose(vectors[2], core.inference.text_vector("a cat"), atol=1e-6)
    embedded = client.post("/embed-image/", files={"file": ("a.png", unique_image(950), "image/png")}).json()
    np.testing.assert_allclose(vectors[1], embedded["embedding_vector"], atol=1e-6)
    assert body["usage"] == {"prompt_tokens": 4 + 4, "total_tokens": 8}  # the fake counts words + 2 a text
    assert client.post("/v1/embeddings", json={"input": "x"}).json()["model"] == "fake-clip"


def test_every_error_carries_openais_type(client):
    assert client.get("/v1/search/text", params={"q": " "}).json()["error"]["type"] == "invalid_request_error"
    response = client.post("/v1/embeddings", json={"input": "data:image/png;base64,%%%"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_data_uri"


@pytest.mark.parametrize("call,message", [
    (lambda c: c.get("/v1/search/text", params={"q": "dog", "filters": "[]"}),
     "unknown query parameter 'filters': GET /v1/search/text takes filter, k, min_score, q"),
    (lambda c: c.post("/v1/search/text", json={"query": "dog", "filter": []}),
     "unknown body field 'filter': POST /v1/search/text takes filters, k, min_score, query"),
    (lambda c: c.post("/v1/search/image", data={"filters": "[]"}, files={"file": ("q.png", unique_image(5), "image/png")}),
     "unknown form field 'filters': POST /v1/search/image takes file, filter, k, min_score"),
    (lambda c: c.post("/v1/images", data={"meta": "{}"}, files=[("files", ("a.png", unique_image(6), "image/png"))]),
     "unknown form field 'meta': POST /v1/images takes captions, files, metadata, wait_for_caption"),
    (lambda c: c.get("/v1/images", params={"page": 2}), "unknown query parameter 'page': GET /v1/images takes limit, offset"),
])
def test_a_field_a_route_does_not_take_is_refused_naming_those_it_does(client, core, call, message):
    assert error(call(client), 422, "invalid_request") == message
    assert core.store.records == {} and core.inference.calls == []  # refused before anything ran
