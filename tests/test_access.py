"""API keys, scopes, rate limits, body limits and CORS on a real gateway over HTTP: every refusal is
the right status with the JSON error shape, happens before the body is read, and changes nothing."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time

import httpx
import pytest

from gateway.server.access import hash_key
from gateway.server.http.app import create_app
from local_servers.uvicorn_server import LiveServer
from tests.support.images import PHOTO_JPEGS as PHOTOS
from tests.support.images import unique_image
from tests.support.references import settings_for

pytestmark = pytest.mark.integration

KEYS = {"reader": "isk_reader_0123456789abcdef0123456789abcdef", "writer": "isk_writer_0123456789abcdef0123456789abcdef",
        "admin": "isk_admin_0123456789abcdef0123456789abcdef0", "limited": "isk_limited_0123456789abcdef0123456789abcdef"}
SCOPES = {"reader": ["search"], "writer": ["search", "write"], "admin": ["admin"], "limited": ["search"]}
ORIGIN = "https://photos.example.com"


def auth(name: str, style: str = "x-api-key") -> dict[str, str]:
    return {"X-API-Key": KEYS[name]} if style == "x-api-key" else {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def secured(model_repository, tmp_path_factory):
    folder = tmp_path_factory.mktemp("access")
    entries = [{"name": n, "sha256": hash_key(k), "scopes": SCOPES[n]} for n, k in KEYS.items()]
    entries[-1].update(rate_per_s=1, burst=2)
    (folder / "keys.json").write_text(json.dumps(entries))
    settings = settings_for(model_repository, str(folder / "images.db"), api_keys_file=folder / "keys.json",
                            max_request_bytes=3_000_000, cors_origins=[ORIGIN])
    with LiveServer(create_app(settings)) as server:
        yield server.url


def count(url: str) -> int:
    return httpx.get(f"{url}/v1/images", params={"limit": 1}, headers=auth("reader")).json()["total"]


def upload(url: str, data: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v1/images", files=[("files", ("a.png", data, "image/png"))], headers=headers, timeout=60)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code and response.json()["error"]["request_id"]


def test_anonymous_callers_get_401_when_keys_are_configured_and_public_routes_stay_open(secured):
    for method, path in (("GET", "/v1/search/text?q=dog"), ("GET", "/v1/images"), ("DELETE", "/v1/images/" + "0" * 32)):
        response = httpx.request(method, f"{secured}{path}")
        assert_error(response, 401, "missing_api_key")
        assert response.headers["www-authenticate"] == "Bearer"
    assert_error(upload(secured, PHOTOS["coins"]), 401, "missing_api_key")
    for path in ("/healthz", "/readyz", "/metrics", "/", "/openapi.json"):
        assert httpx.get(f"{secured}{path}").status_code == 200, path


@pytest.mark.parametrize("style", ["x-api-key", "bearer"])
def test_unknown_keys_are_401_and_scopes_decide_403(secured, style):
    wrong = {"X-API-Key": "isk_nope"} if style == "x-api-key" else {"Authorization": "Bearer isk_nope"}
    assert_error(httpx.get(f"{secured}/v1/images", headers=wrong), 401, "invalid_api_key")
    before = count(secured)
    assert_error(upload(secured, unique_image(300), auth("reader", style)), 403, "forbidden")
    assert count(secured) == before
    created = upload(secured, unique_image(301 if style == "bearer" else 302), auth("writer", style))
    assert created.status_code == 200, created.text
    image_id = created.json()["images"][0]["id"]
    assert httpx.get(f"{secured}/v1/images/{image_id}", headers=auth("reader", style)).status_code == 200
    assert_error(httpx.delete(f"{secured}/v1/images/{image_id}", headers=auth("writer", style)), 403, "forbidden")
    assert count(secured) == before + 1
    assert httpx.delete(f"{secured}/v1/images/{image_id}", headers=auth("admin", style)).status_code == 204
    assert httpx.get(f"{secured}/v1/search/text", params={"q": "dog"}, headers=auth("admin", style)).status_code == 200
    assert count(secured) == before


def test_refusals_happen_before_the_body_is_read(secured):
    """Headers announcing 10 MB and no body at all: the 401 and the 413 come back at once."""
    host, port = secured.removeprefix("http://").split(":")
    for headers, status in (("", 401), (f"X-API-Key: {KEYS['writer']}\r\n", 413)):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall((f"POST /v1/images HTTP/1.1\r\nHost: x\r\n{headers}Content-Type: multipart/form-data; "
                          "boundary=b\r\nContent-Length: 10000000\r\n\r\n").encode())
            reply = sock.recv(65536).decode("latin-1")
        assert reply.startswith(f"HTTP/1.1 {status} "), reply[:200]


def test_streamed_bodies_over_the_limit_are_413_and_write_nothing(secured):
    before = count(secured)

    def chunks():  # no Content-Length: chunked transfer encoding
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 100_000

    response = httpx.post(f"{secured}/v1/images", content=chunks(), timeout=60,
                          headers={**auth("writer"), "Content-Type": "multipart/form-data; boundary=b"})
    assert_error(response, 413, "payload_too_large")
    assert count(secured) == before


def test_rate_limit_gives_429_with_retry_after_and_refills(secured):
    time.sleep(2.1)  # a full bucket
    codes = [httpx.get(f"{secured}/v1/images", headers=auth("limited")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = httpx.get(f"{secured}/v1/images", headers=auth("limited"))
    assert_error(refused, 429, "rate_limited")
    assert refused.headers["retry-after"] == "1"
    assert httpx.get(f"{secured}/v1/images", headers=auth("reader")).status_code == 200  # other keys are not affected
    time.sleep(1.1)
    assert httpx.get(f"{secured}/v1/images", headers=auth("limited")).status_code == 200


def test_keys_never_reach_the_logs_but_key_names_do(secured, caplog):
    with caplog.at_level(logging.INFO, logger="gateway"):
        httpx.get(f"{secured}/v1/search/text", params={"q": "cat"}, headers=auth("reader", "bearer"))
        httpx.get(f"{secured}/v1/images", headers={"X-API-Key": KEYS["reader"] + "x"})
        time.sleep(0.2)
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "'principal': 'reader'" in logged
    assert not any(key[4:] in logged for key in KEYS.values())


def test_cors_preflight_and_refusals_carry_the_allowed_origin_only(secured):
    preflight = httpx.options(f"{secured}/v1/images", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
    refused = httpx.get(f"{secured}/v1/images", headers={"Origin": ORIGIN})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.get(f"{secured}/v1/images", headers={"Origin": "https://evil.example", **auth("reader")})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


def test_anonymous_scopes_can_be_granted_explicitly(model_repository, tmp_path):
    key = "isk_only_writer_0123456789abcdef0123456789ab"
    settings = settings_for(model_repository, str(tmp_path / "images.db"), anonymous_scopes=["search"],
                            anonymous_rate_limit_per_s=1, rate_limit_burst=1,
                            api_keys=[{"name": "w", "sha256": hash_key(key), "scopes": ["write"]}])
    with LiveServer(create_app(settings)) as server:
        assert httpx.get(f"{server.url}/v1/images").status_code == 200
        assert_error(httpx.get(f"{server.url}/v1/images"), 429, "rate_limited")  # burst 1, per address
        assert_error(upload(server.url, PHOTOS["coins"]), 401, "missing_api_key")
        assert upload(server.url, PHOTOS["coins"], {"X-API-Key": key}).status_code == 200


def test_new_key_command_prints_a_working_entry():
    done = subprocess.run([sys.executable, "-m", "gateway.server.access", "new-key", "--name", "ci", "--scopes", "search,write"],
                          capture_output=True, text=True, check=True)
    key = done.stderr.split(": ")[-1].strip()
    entry = json.loads(done.stdout)
    assert key.startswith("isk_") and len(key) > 40
    assert entry == {"name": "ci", "sha256": hash_key(key), "scopes": ["search", "write"]}
