"""The README's error table is what the server does: every row is triggered through the ASGI app
and answers with its status and code, and every code the server can give has a row."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from gateway.core.errors import ErrorKind, ServiceError
from gateway.core.service import ImageSearchService, Limits
from gateway.server.access import hash_key
from gateway.server.http.app import create_app
from gateway.settings import Settings
from tests.support.fakes import FakeInference, FakeStore
from tests.support.images import png_header_only, unique_image

README = Path(__file__).parents[2] / "README.md"
KEY = "isk_table_0123456789abcdef"


def documented() -> set[tuple[int, str]]:
    return {(int(status), code) for status, code in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", README.read_text(), re.M)}


def upload(client: TestClient, image: bytes, content_type: str = "image/png", **extra):
    return client.post("/v1/images", files=[("files", ("a.png", image, content_type))], **extra)


def test_every_row_of_the_readme_error_table_is_what_the_server_answers():
    core = ImageSearchService(FakeInference(), FakeStore(), Limits(max_upload_bytes=10_000))
    keys = [{"name": "reader", "sha256": hash_key(KEY), "scopes": ["search"], "rate_per_s": 0.001, "burst": 1}]
    auth = {"X-API-Key": KEY}
    settings = Settings(_env_file=None, grpc_port=0, api_keys=keys, anonymous_scopes=["search", "write"])
    with TestClient(create_app(settings, core)) as client:
        seen = [
            upload(client, b"not an image"),
            upload(client, unique_image(1), data={"metadata": "[1]"}),
            client.get("/v1/images", headers={"X-API-Key": "isk_unknown"}),
            client.delete("/v1/images/" + "0" * 32),  # anonymous callers may search and write, not delete
            upload(client, unique_image(2), headers=auth),  # the reader key lacks write
            client.get("/v1/images/" + "0" * 32),
            upload(client, b"\xff" * 10_001),
            upload(client, png_header_only(60_000, 60_000)),
            upload(client, b"hello", "text/plain"),
            client.get("/v1/search/text", params={"q": "dog", "filter": "[1]"}),
            client.get("/v1/images/not-an-id"),
        ]
        client.get("/v1/images", headers=auth)
        seen.append(client.get("/v1/images", headers=auth))  # the second request within the burst
        core.inference.fail = ServiceError(ErrorKind.UNAVAILABLE, "down")
        seen.append(client.get("/v1/search/text", params={"q": "dog"}))
        core.inference.fail = ServiceError(ErrorKind.TIMEOUT, "slow")
        seen.append(client.get("/v1/search/text", params={"q": "dog"}))
        answered = {(r.status_code, r.json()["error"]["code"]) for r in seen}
    assert answered == documented()


def test_the_grpc_column_is_the_grpc_transports_table():
    """Each row's gRPC code is what gateway.server.grpc.errors gives the row's kind; every kind has one."""
    from gateway.server.grpc.errors import STATUS as GRPC_STATUS
    from gateway.server.http.errors import STATUS as HTTP_STATUS

    rows = re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \| `([A-Z_]+)` \|", README.read_text(), re.M)
    assert len(rows) == len(documented())
    kinds = {status: kind for kind, status in HTTP_STATUS.items() if kind not in (ErrorKind.MISCONFIGURED, ErrorKind.INTERNAL)}
    assert [(status, code, GRPC_STATUS[kinds[int(status)]].name) for status, code, _ in rows] == rows
    assert set(GRPC_STATUS) == set(ErrorKind)
