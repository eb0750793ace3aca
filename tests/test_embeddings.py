"""POST /v1/embeddings through a real server, with the official openai client (its default request
asks for base64) and with plain HTTP: texts equal text search's embeddings, images equal
/embed-image/'s, in input order; bad input, keys and rate limits in OpenAI's error shape."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from gateway.server.access import hash_key
from gateway.server.http.app import create_app
from local_servers.uvicorn_server import LiveServer
from tests.support.images import PHOTO_JPEGS as PHOTOS
from tests.support.images import png_header_only
from tests.support.references import settings_for, text_embedding

pytestmark = pytest.mark.integration
KEY = "isk_embeddings-test-key"


def data_uri(data: bytes, media_type: str = "image/jpeg") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def server(model_repository, tmp_path_factory):
    keys = [{"name": "embedder", "sha256": hash_key(KEY), "scopes": ["search"], "rate_per_s": 0.01, "burst": 40}]
    settings = settings_for(model_repository, str(tmp_path_factory.mktemp("embeddings") / "images.db"), api_keys=keys,
                            max_embedding_inputs=4)
    with LiveServer(create_app(settings)) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def embed_image(server, data: bytes) -> np.ndarray:
    response = httpx.post(f"{server.url}/embed-image/", files={"file": ("a.jpg", data, "image/jpeg")},
                          headers={"X-API-Key": KEY}, timeout=60)
    return np.array(response.json()["embedding_vector"], np.float32)


def test_the_openai_client_gets_text_and_image_embeddings_in_order(client, server, model_repository):
    inputs = ["a man in a red jacket", data_uri(PHOTOS["rocket"]), "  stars and galaxies ", data_uri(PHOTOS["coffee"])]
    reply = client.embeddings.create(input=inputs, model="clip-vit")
    assert reply.object == "list" and reply.model == "clip-vit" and [d.index for d in reply.data] == [0, 1, 2, 3]
    vectors = [np.array(d.embedding, np.float32) for d in reply.data]
    np.testing.assert_array_equal(vectors[1], embed_image(server, PHOTOS["rocket"]))
    np.testing.assert_array_equal(vectors[3], embed_image(server, PHOTOS["coffee"]))
    for vector, text in ((vectors[0], "a man in a red jacket"), (vectors[2], "stars and galaxies")):  # stripped, as search does
        np.testing.assert_allclose(vector, text_embedding(model_repository, text), atol=1e-5)
    # CLIP BPE: one token per word here, plus start and end markers per text; images count none
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == (6 + 2) + (3 + 2)
    one = client.embeddings.create(input="a man in a red jacket", model="clip-vit", encoding_format="float")
    np.testing.assert_array_equal(np.array(one.data[0].embedding, np.float32), vectors[0])


def test_plain_http_float_and_base64(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    plain = httpx.post(f"{server.url}/v1/embeddings", json={"input": "a red bicycle"}, headers=headers).json()
    packed = httpx.post(f"{server.url}/v1/embeddings", json={"input": ["a red bicycle"], "encoding_format": "base64"},
                        headers=headers).json()
    assert set(plain) == {"object", "data", "model", "usage"} and plain["data"][0]["object"] == "embedding"
    assert plain["model"] == "clip-tiny" or plain["model"].endswith("clip-tiny")  # the served checkpoint when none is named
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), "<f4")
    np.testing.assert_array_equal(decoded, np.array(plain["data"][0]["embedding"], np.float32))


@pytest.mark.parametrize("body, status, code", [
    ({"input": []}, 400, "bad_request"),
    ({"input": ""}, 400, "bad_request"),
    ({"input": ["a", "b", "c", "d", "e"]}, 413, "payload_too_large"),
    ({"input": "data:image/png;base64,!!not base64!!"}, 400, "invalid_data_uri"),
    ({"input": data_uri(b"not an image at all")}, 400, "invalid_image"),
    ({"input": data_uri(png_header_only(60_000, 60_000), "image/png")}, 413, "image_too_large"),
    ({"input": data_uri(b"\0" * 2_100_000)}, 413, "payload_too_large"),
    ({"input": "a dog", "dimensions": 7}, 400, "bad_request"),  # the tiny CLIP gives 16
    ({"input": "a dog", "encoding_format": "int8"}, 422, "invalid_request"),
    ({"input": [[1, 2, 3]]}, 422, "invalid_request"),
])
def test_bad_input_is_a_4xx_in_openais_error_shape(server, body, status, code):
    response = httpx.post(f"{server.url}/v1/embeddings", json=body, headers={"X-API-Key": KEY}, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"] == "invalid_request_error"


def test_the_openai_client_raises_its_own_errors(client, server):
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(input=["data:image/png;base64,@@@"], model="clip")
    assert bad.value.code == "invalid_data_uri"
    anonymous = openai.OpenAI(base_url=f"{server.url}/v1", api_key="isk_not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.embeddings.create(input="a dog", model="clip")
    with pytest.raises(openai.RateLimitError) as limited:  # the key's burst of 40 runs out
        for _ in range(60):
            client.embeddings.create(input="a dog", model="clip")
    assert limited.value.response.headers["retry-after"] and limited.value.body["type"] == "rate_limit_error"
