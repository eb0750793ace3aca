"""A test gateway in this process: HTTP under a real uvicorn and the gRPC API beside it, on free ports;
waiting for a gateway's caption worker; checking its text side against a reference text tower."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from gateway.server.http.app import create_app
from local_servers.processes import free_ports
from local_servers.uvicorn_server import LiveServer
from tests.support.references import cosine, settings_for


@contextmanager
def http_and_grpc(repository: Path, milvus_uri: str, **overrides) -> Iterator[tuple[str, str]]:
    """(HTTP URL, gRPC target) of a gateway over the repository's models and a Milvus URI."""
    (grpc_port,) = free_ports(1)
    settings = settings_for(repository, milvus_uri, grpc_port=grpc_port, host="127.0.0.1", **overrides)
    with LiveServer(create_app(settings)) as server:
        yield server.url, f"127.0.0.1:{grpc_port}"


def wait_until_captioned(url: str, timeout: float = 120) -> None:
    """Until no record of the gateway at ``url`` (at most 1000 of them) has its caption pending."""
    deadline = time.monotonic() + timeout
    while any(i["caption_state"] == "pending" for i in httpx.get(f"{url}/v1/images", params={"limit": 1000}).json()["images"]):
        assert time.monotonic() < deadline, f"captions still pending at {url} after {timeout} s"
        time.sleep(0.25)


def check_text_side(url: str, texts: list[str], reference: Callable[[list[str]], np.ndarray],
                    images: dict[str, np.ndarray], tolerance: float) -> None:
    """The gateway at ``url`` embeds each text as ``reference`` does (/v1/embeddings), and its text search
    for each ranks every stored image (``images``: id -> reference vector) at the reference's cosine, best first."""
    got = httpx.post(f"{url}/v1/embeddings", json={"input": texts, "model": "clip"}, timeout=60).json()
    assert len(got["data"]) == len(texts), got
    for row, expected in zip(got["data"], reference(texts)):
        assert cosine(row["embedding"], expected) >= 0.9999
    for text, want in zip(texts, reference(texts)):
        hits = httpx.get(f"{url}/v1/search/text", params={"q": text, "k": len(images)}, timeout=60).json()["results"]
        assert sorted(h["id"] for h in hits) == sorted(images)
        for hit in hits:
            assert abs(hit["clip_score"] - cosine(want, images[hit["id"]])) <= tolerance, (text, hit)
        assert [h["clip_score"] for h in hits] == sorted((h["clip_score"] for h in hits), reverse=True)
