"""Locust scenarios for the gateway: one user class per route family, and a realistic mix.

    locust -f bench/locustfile.py --host http://localhost:8000 --headless -u 8 -r 8 -t 60s TextSearch
    locust -f bench/locustfile.py --host http://localhost:8000 Mix        # the web UI on :8089

Users are closed-loop (no think time): N users = N requests in flight, as the sweep needs. Set
BENCH_API_KEY when the gateway requires keys (the key needs search, write, and admin for Mix's
deletes). The baseline service (bench/baseline_service.py) serves the same routes for EmbedImage,
ImageSearch and TextSearch.
"""

from __future__ import annotations

import os

import numpy as np
from locust import FastHttpUser, constant, task
from urllib3 import encode_multipart_formdata

from bench.payloads import QUERIES, query_jpeg, upload_jpeg


class GatewayUser(FastHttpUser):
    abstract = True
    wait_time = constant(0)
    network_timeout = connection_timeout = 600.0

    def on_start(self) -> None:
        self.rng = np.random.default_rng()
        key = os.environ.get("BENCH_API_KEY")
        self.headers = {"X-API-Key": key} if key else {}
        self.indexed: list[str] = []

    def upload(self, url: str, field: str, data: bytes, name: str, form: dict | None = None):
        # FastHttpUser has no multipart helper: urllib3's encoder (a dependency of locust's requests)
        body, content_type = encode_multipart_formdata({**(form or {}), field: (name, data, "image/jpeg")})
        headers = {**self.headers, "Content-Type": content_type}
        return self.client.post(url, data=body, headers=headers, name=url)

    def embed_image(self):
        return self.upload("/embed-image/", "file", query_jpeg(self.rng), "photo.jpg")

    def search_image(self):
        return self.upload("/v1/search/image", "file", query_jpeg(self.rng), "query.jpg", {"k": "10"})

    def search_text(self):
        query = QUERIES[int(self.rng.integers(len(QUERIES)))]
        return self.client.get(f"/v1/search/text?q={query}&k=10", headers=self.headers, name="/v1/search/text")

    def index_image(self):
        with self.upload("/v1/images", "files", upload_jpeg(self.rng), "new.jpg") as response:
            if response.status_code == 200:
                self.indexed.append(response.json()["images"][0]["id"])
        return response


class EmbedImage(GatewayUser):
    @task
    def one(self):
        self.embed_image()


class ImageSearch(GatewayUser):
    @task
    def one(self):
        self.search_image()


class TextSearch(GatewayUser):
    @task
    def one(self):
        self.search_text()


class IndexImages(GatewayUser):
    @task
    def one(self):
        self.index_image()


class Mix(GatewayUser):
    """What a search product sees: mostly searches, some uploads, reads, and a few deletes."""

    @task(6)
    def text(self):
        self.search_text()

    @task(3)
    def image(self):
        self.search_image()

    @task(1)
    def embed(self):
        self.embed_image()

    @task(2)
    def index(self):
        self.index_image()

    @task(2)
    def read(self):
        if self.indexed:
            image_id = self.indexed[int(self.rng.integers(len(self.indexed)))]
            self.client.get(f"/v1/images/{image_id}", headers=self.headers, name="/v1/images/{id}")
            self.client.get(f"/v1/images/{image_id}/thumbnail", headers=self.headers, name="/v1/images/{id}/thumbnail")
        self.client.get("/v1/images?limit=20", headers=self.headers, name="/v1/images?limit")

    @task(1)
    def delete(self):
        if len(self.indexed) > 5:
            image_id = self.indexed.pop(0)
            self.client.delete(f"/v1/images/{image_id}", headers=self.headers, name="/v1/images/{id}")


USERS = {cls.__name__: cls for cls in (EmbedImage, ImageSearch, TextSearch, IndexImages, Mix)}
