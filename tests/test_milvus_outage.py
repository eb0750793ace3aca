"""Milvus failing under a running gateway, on the session's real Milvus server: a hung server gives
504s within the store deadline and a red /readyz, and the gateway recovers by itself when it
answers again, with nothing half-written; a dead server gives fast 503s with Retry-After. The
server is killed at the end: this module is its last user."""

from __future__ import annotations

import time

import httpx
import pytest

from gateway.server.http.app import create_app
from local_servers.uvicorn_server import LiveServer
from tests.support.images import PHOTO_JPEGS as PHOTOS
from tests.support.images import unique_image
from tests.support.references import settings_for

pytestmark = [pytest.mark.integration, pytest.mark.milvus_server]


def upload(url: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/images", files=[("files", (name, data, "image/png"))], timeout=60)


def test_hung_then_dead_milvus(model_repository, milvus_server):
    settings = settings_for(model_repository, milvus_server.uri, collection="images_outage", store_timeout_s=3)
    with LiveServer(create_app(settings)) as gateway:
        first = upload(gateway.url, "a.jpg", PHOTOS["rocket"])
        assert first.status_code == 200

        milvus_server.freeze()
        try:
            start = time.monotonic()
            hung = upload(gateway.url, "b.png", unique_image(900))
            assert hung.status_code == 504 and hung.json()["error"]["code"] == "dependency_timeout"
            assert time.monotonic() - start < 20
            assert httpx.get(f"{gateway.url}/readyz", timeout=30).status_code == 503
        finally:
            milvus_server.thaw()
        deadline = time.monotonic() + 60
        while httpx.get(f"{gateway.url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the gateway did not recover after Milvus answered again"
            time.sleep(1)
        listing = httpx.get(f"{gateway.url}/v1/images", timeout=30).json()
        assert [i["id"] for i in listing["images"]] == [first.json()["images"][0]["id"]]  # nothing half-written
        assert upload(gateway.url, "b.png", unique_image(900)).json()["images"][0]["created"]

        milvus_server.stop()
        start = time.monotonic()
        dead = upload(gateway.url, "c.png", unique_image(901))
        assert dead.status_code == 503 and dead.headers["retry-after"] == "5"
        assert time.monotonic() - start < 20
        search = httpx.get(f"{gateway.url}/v1/search/text", params={"q": "rocket"}, timeout=60)
        assert search.status_code == 503 and search.json()["error"]["code"] == "dependency_unavailable"
        assert httpx.get(f"{gateway.url}/readyz", timeout=30).status_code == 503
