"""Milvus failing under a running gateway, on the session's real Milvus server: a server SIGKILLed and
restarted on its data loses no acknowledged write, and while it reloads the gateway is not ready and
answers 503, never 404, and once ready reads every acknowledged write back at once; a hung server gives
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


def test_acknowledged_writes_are_read_back_at_once_after_the_server_is_killed_and_restarted(model_repository,
                                                                                          milvus_server):
    settings = settings_for(model_repository, milvus_server.uri, collection="images_restart", captions=False)
    with LiveServer(create_app(settings)) as gateway:
        images = {upload(gateway.url, f"{seed}.png", unique_image(seed)).json()["images"][0]["id"]: unique_image(seed)
                  for seed in range(3000, 3040)}  # 40 acknowledged uploads, the last one just before the crash
        assert len(images) == 40

        milvus_server.kill()
        milvus_server.restart()  # answers again on the same address; the collection is still reloading
        answers: list[int] = []
        deadline = time.monotonic() + 240
        while (ready := httpx.get(f"{gateway.url}/readyz", timeout=30)).status_code != 200:
            assert time.monotonic() < deadline, f"not ready 240 s after the restart: {ready.text}"
            answers.append(httpx.get(f"{gateway.url}/v1/images/{next(iter(images))}", timeout=30).status_code)
            time.sleep(0.5)
        # reloading: 503, or 504 where a call outlived its deadline (a loaded machine); never 404 for a stored record
        assert set(answers) <= {200, 503, 504}, answers

        # ready means readable: every acknowledged write, at once, by id and by image
        found = [httpx.get(f"{gateway.url}/v1/images/{image_id}", timeout=30).status_code for image_id in images]
        assert found == [200] * 40
        for image_id, data in list(images.items())[-5:]:
            hits = httpx.post(f"{gateway.url}/v1/search/image", files={"file": ("q.png", data, "image/png")},
                              data={"k": "1"}, timeout=30).json()["results"]
            assert [hit["id"] for hit in hits] == [image_id]
        assert httpx.get(f"{gateway.url}/v1/images", params={"limit": 100}, timeout=30).json()["total"] == 40


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
        try:
            start = time.monotonic()
            dead = upload(gateway.url, "c.png", unique_image(901))
            assert dead.status_code == 503 and dead.headers["retry-after"] == "5"
            assert time.monotonic() - start < 20
            search = httpx.get(f"{gateway.url}/v1/search/text", params={"q": "rocket"}, timeout=60)
            assert search.status_code == 503 and search.json()["error"]["code"] == "dependency_unavailable"
            assert httpx.get(f"{gateway.url}/readyz", timeout=30).status_code == 503
        finally:
            milvus_server.restart()  # the session's server, for the tests that come after this one
