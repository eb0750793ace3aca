"""The error table of docs/api.md is what every transport answers: each row's mistake is made over HTTP,
over gRPC and through the CLI (over both of its remote transports), and each answers with the row's
status, gRPC code and error code; every code the server can give has a row. One real gateway (uvicorn's
HTTP and the grpc.aio server beside it, in this process) over the fakes of tests/support/fakes.py."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.api import image_search_pb2 as pb
from gateway.api import image_search_pb2_grpc as pb_grpc
from gateway.cli.main import main as cli
from gateway.core.errors import ErrorKind, ServiceError
from gateway.server.access import hash_key
from gateway.server.grpc.errors import STATUS as GRPC_STATUS
from gateway.server.http.app import create_app
from gateway.server.http.errors import STATUS as HTTP_STATUS
from gateway.settings import Settings
from local_servers.processes import free_ports
from local_servers.uvicorn_server import LiveServer
from tests.support.fakes import fake_service
from tests.support.images import png_header_only, unique_image

DOC = Path(__file__).parents[2] / "docs" / "api.md"
READER, VIEWER, WRITER = "isk_table_reader_0123456789", "isk_table_viewer_0123456789", "isk_table_writer_0123456789"
OPERATOR = "isk_table_operator_0123456789"  # acts for the tenant a request names: none named is invalid_tenant
LIMIT = 10_000  # GATEWAY_MAX_UPLOAD_BYTES here
NOT_AN_IMAGE, OVERSIZED, BOMB = b"not an image", b"\xff" * (LIMIT + 1), png_header_only(60_000, 60_000)
MISSING = "0" * 32


def documented() -> list[tuple[int, str, str]]:
    """(status, code, gRPC code) of each row of the error table."""
    return [(int(s), c, g) for s, c, g in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \| `([A-Z_]+|-)` \|", DOC.read_text(), re.M)]


@dataclass
class Row:
    """How to make one row's mistake on each transport (None: the transport cannot express it)."""

    code: str
    http: Callable[[httpx.Client], httpx.Response]
    grpc: Callable[[pb_grpc.ImageSearchStub], object] | None
    cli: list[str] | None  # arguments after --url; files are written to the test's folder


def index_request(data: bytes, key: str | None = None) -> Callable:
    metadata = (("x-api-key", key),) if key else ()
    return lambda stub: stub.IndexImages(iter([pb.IndexImagesRequest(image=data, name="a.png")]), metadata=metadata)


def search_request(**fields) -> pb.SearchTextRequest:
    return pb.SearchTextRequest(**{"query": "dog", **fields})


def upload(image: bytes, content_type: str = "image/png", key: str = WRITER):
    return lambda http: http.post("/v1/images", files=[("files", ("a.png", image, content_type))], headers={"X-API-Key": key})


ROWS = [
    Row("invalid_image", upload(NOT_AN_IMAGE), index_request(NOT_AN_IMAGE, WRITER), ["query", "--image", "bad.png"]),
    Row("bad_request", lambda http: http.get("/v1/search/text", params={"q": "dog", "k": 0}),
        lambda stub: stub.SearchText(search_request(k=0)), ["query", "dog", "--k", "0"]),
    Row("missing_api_key", upload(unique_image(1), key=""), index_request(unique_image(1)), ["index", "photos"]),
    Row("invalid_api_key", lambda http: http.get("/v1/images", headers={"X-API-Key": "isk_unknown"}),
        lambda stub: stub.ListImages(pb.ListImagesRequest(), metadata=(("x-api-key", "isk_unknown"),)),
        ["--api-key", "isk_unknown", "query", "dog"]),
    Row("forbidden", upload(unique_image(2), key=VIEWER), index_request(unique_image(2), VIEWER),
        ["--api-key", VIEWER, "index", "photos"]),
    Row("not_found", lambda http: http.get(f"/v1/images/{MISSING}"), lambda stub: stub.GetImage(pb.GetImageRequest(id=MISSING)),
        ["query", "--similar-to", MISSING]),
    Row("payload_too_large", upload(OVERSIZED), index_request(OVERSIZED, WRITER), ["query", "--image", "oversized.png"]),
    Row("image_too_large", upload(BOMB), index_request(BOMB, WRITER), ["query", "--image", "bomb.png"]),
    Row("unsupported_media_type", upload(b"hello", "text/plain"), None, None),  # gRPC and the CLI send no content type
    Row("invalid_filter", lambda http: http.get("/v1/search/text", params={"q": "dog", "filter": "[1]"}),
        lambda stub: stub.SearchText(search_request(filters=[pb.Condition(field="vector")])),
        ["query", "dog", "--filter", "[1]"]),
    Row("invalid_request", lambda http: http.get("/v1/images/not-an-id"),
        lambda stub: stub.GetImage(pb.GetImageRequest(id="not-an-id")), ["query", "--similar-to", "not-an-id"]),
    Row("invalid_tenant", lambda http: http.get("/v1/images", headers={"X-API-Key": OPERATOR}),
        lambda stub: stub.ListImages(pb.ListImagesRequest(), metadata=(("x-api-key", OPERATOR),)),
        ["--api-key", OPERATOR, "query", "dog"]),
    # the reader key's bucket holds one request, which the test takes before the first row
    Row("rate_limited", lambda http: http.get("/v1/images", headers={"X-API-Key": READER}),
        lambda stub: stub.ListImages(pb.ListImagesRequest(), metadata=(("x-api-key", READER),)),
        ["--api-key", READER, "query", "dog"]),
    Row("dependency_unavailable", lambda http: http.get("/v1/search/text", params={"q": "dog"}),
        lambda stub: stub.SearchText(search_request()), ["query", "dog"]),
    Row("dependency_timeout", lambda http: http.get("/v1/search/text", params={"q": "dog"}),
        lambda stub: stub.SearchText(search_request()), ["query", "dog"]),
]
FAILURES = {"dependency_unavailable": ServiceError(ErrorKind.UNAVAILABLE, "Triton is down"),
            "dependency_timeout": ServiceError(ErrorKind.TIMEOUT, "Triton is slow")}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    keys = [{"name": "reader", "sha256": hash_key(READER), "scopes": ["search"], "rate_per_s": 0.0001, "burst": 1},
            {"name": "viewer", "sha256": hash_key(VIEWER), "scopes": ["search"]},
            {"name": "writer", "sha256": hash_key(WRITER), "scopes": ["search", "write"]},
            {"name": "operator", "sha256": hash_key(OPERATOR), "scopes": ["search"], "operator": True}]
    (grpc_port,) = free_ports(1)
    settings = Settings(_env_file=None, host="127.0.0.1", grpc_port=grpc_port, api_keys=keys, anonymous_scopes=["search"],
                        max_upload_bytes=LIMIT)
    core = fake_service(max_upload_bytes=LIMIT)
    folder = tmp_path_factory.mktemp("cli")
    for name, data in {"bad.png": NOT_AN_IMAGE, "oversized.png": OVERSIZED, "bomb.png": BOMB}.items():
        (folder / name).write_bytes(data)
    (folder / "photos").mkdir()
    (folder / "photos" / "a.png").write_bytes(unique_image(3))
    with LiveServer(create_app(settings, core)) as server, grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        yield server, f"127.0.0.1:{grpc_port}", pb_grpc.ImageSearchStub(channel), core, folder


def run_cli(args: list[str], folder: Path, capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.chdir(folder)
    capsys.readouterr()
    status = cli(args)
    return status, capsys.readouterr().err


def test_every_row_is_what_http_grpc_and_the_cli_answer(gateway, capsys, monkeypatch):
    server, target, stub, core, folder = gateway
    table = {code: (status, grpc_code) for status, code, grpc_code in documented()}
    assert [row.code for row in ROWS] == list(table), "one row here per row of the table, in its order"
    with httpx.Client(base_url=server.url) as http:
        http.get("/v1/images", headers={"X-API-Key": READER})  # takes the reader's one token
        for row in ROWS:
            status, grpc_code = table[row.code]
            core.inference.fail = FAILURES.get(row.code)
            answer = row.http(http)
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, row.code), answer.text
            if row.grpc is None:
                assert grpc_code == "-"
            else:
                with pytest.raises(grpc.RpcError) as refused:
                    row.grpc(stub)
                trailing = dict(refused.value.trailing_metadata() or ())
                assert (refused.value.code().name, trailing.get("error-code")) == (grpc_code, row.code), refused.value
            for address in (server.url, f"grpc://{target}"):
                if row.cli is not None:
                    exit_status, err = run_cli(["--url", address, *row.cli], folder, capsys, monkeypatch)
                    assert exit_status == 2 and f"error [{row.code}]: " in err, (address, row.code, err)
    core.inference.fail = None


def test_the_grpc_column_is_the_grpc_transports_table():
    """Each row's gRPC code is what gateway.server.grpc.errors gives the row's kind; every kind has one."""
    kinds = {status: kind for kind, status in HTTP_STATUS.items() if kind not in (ErrorKind.MISCONFIGURED, ErrorKind.INTERNAL)}
    for status, code, grpc_code in documented():
        assert grpc_code in ("-", GRPC_STATUS[kinds[status]].name), (status, code)
    assert set(GRPC_STATUS) == set(ErrorKind)


LONG = "x" * 1001  # GATEWAY_MAX_QUERY_CHARS is 1000
STATUS_OF = {"bad_request": 400, "invalid_filter": 422, "invalid_request": 422}
LIKE = {"field": "id", "op": "like", "value": "a"}
SAME_MISTAKES = {  # mistake -> (code, its HTTP spellings, its gRPC call, the CLI's arguments)
    "an overlong query": ("bad_request", [lambda http: http.get("/v1/search/text", params={"q": LONG}),
                                          lambda http: http.post("/v1/search/text", json={"query": LONG})],
                          lambda stub: stub.SearchText(search_request(query=LONG)), ["query", LONG]),
    "an unknown filter operator": ("invalid_filter", [
        lambda http: http.get("/v1/search/text", params={"q": "dog", "filter": json.dumps([LIKE])}),
        lambda http: http.post("/v1/search/text", json={"query": "dog", "filters": [LIKE]})],
        lambda stub: stub.SearchText(search_request(filters=[pb.Condition(field="id", op="like")])),
        ["query", "dog", "--filter", json.dumps([LIKE])]),
    "a page over the list limit": ("invalid_request", [lambda http: http.get("/v1/images", params={"limit": 1001})],
                                   lambda stub: stub.ListImages(pb.ListImagesRequest(page_size=1001)), None),
    "a field the operation does not take": ("invalid_request", [
        lambda http: http.get("/v1/search/text", params={"q": "dog", "filters": "[]"}),
        lambda http: http.post("/v1/search/text", json={"query": "dog", "filter": []})],
        lambda stub: stub.SearchText(with_unknown_field(search_request())), None),
    "a streamed message with a field the operation does not take": ("invalid_request", [
        lambda http: http.post("/v1/images", data={"meta": "{}"}, files=[("files", ("a.png", unique_image(7), "image/png"))],
                               headers={"X-API-Key": WRITER})],
        lambda stub: stub.IndexImages(iter([with_unknown_field(pb.IndexImagesRequest(image=unique_image(7), name="a.png"))]),
                                      metadata=(("x-api-key", WRITER),)), None),
}


def with_unknown_field(message):
    """The message as a client built from another .proto sends it: with a field number this one lacks."""
    field_99 = bytes([0x9A, 0x06, 3]) + b"abc"  # tag (99 << 3 | 2) as a varint, then 3 bytes
    return type(message).FromString(message.SerializeToString() + field_99)


@pytest.mark.parametrize("mistake", list(SAME_MISTAKES))
def test_the_same_mistake_gets_the_same_code_on_every_transport(gateway, capsys, monkeypatch, mistake):
    server, target, stub, core, folder = gateway
    code, spellings, grpc_call, cli_args = SAME_MISTAKES[mistake]
    with httpx.Client(base_url=server.url) as http:
        assert {(r.status_code, r.json()["error"]["code"]) for r in (s(http) for s in spellings)} == {(STATUS_OF[code], code)}
    with pytest.raises(grpc.RpcError) as refused:
        grpc_call(stub)
    assert dict(refused.value.trailing_metadata() or ())["error-code"] == code
    for address in ([] if cli_args is None else [server.url, f"grpc://{target}"]):
        exit_status, err = run_cli(["--url", address, *cli_args], folder, capsys, monkeypatch)
        assert exit_status == 2 and f"error [{code}]: " in err, (address, err)
