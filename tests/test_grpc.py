"""The gRPC API over a real grpc.aio server (the gateway's own process, beside uvicorn's HTTP), checked
against the HTTP API of the same gateway on the same stored images: every method, the status codes of
the error kinds, keys and scopes, limits, deadlines (propagated to a stalled real Triton), hostile
uploads, concurrent streams, reflection and health as generic clients use them."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import descriptor_pool, struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from gateway.api import image_search_pb2 as pb
from gateway.api import image_search_pb2_grpc as pb_grpc
from gateway.api.structs import to_python
from gateway.server.access import hash_key
from gateway.server.http.app import create_app
from local_servers.processes import free_ports
from local_servers.uvicorn_server import LiveServer
from tests.support.images import PHOTO_JPEGS as PHOTOS
from tests.support.images import png_header_only, unique_image
from tests.support.references import expected_embedding, settings_for

pytestmark = pytest.mark.integration
READER, WRITER = "isk_reader-key-for-grpc-tests", "isk_writer-key-for-grpc-tests"


class Gateway:
    """One gateway process-in-thread: HTTP at ``url``, gRPC at ``target``."""

    def __init__(self, server: LiveServer, target: str, key: str | None = None):
        self.server, self.url, self.target = server, server.url, target
        self.headers = {"X-API-Key": key} if key else {}
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
        self.stub = pb_grpc.ImageSearchStub(self.channel)

    def count(self) -> int:
        return httpx.get(f"{self.url}/v1/images", params={"limit": 1}, headers=self.headers).json()["total"]


def start_gateway(model_repository, uri: str, **overrides):
    (grpc_port,) = free_ports(1)
    settings = settings_for(model_repository, uri, grpc_port=grpc_port, host="127.0.0.1", **overrides)
    return LiveServer(create_app(settings)), f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="module")
def gateway(model_repository, tmp_path_factory):
    # no caption worker: records stay as indexed (pending), so that reads at different moments compare equal
    server, target = start_gateway(model_repository, str(tmp_path_factory.mktemp("grpc") / "images.db"), caption_worker=False)
    with server:
        gw = Gateway(server, target)
        yield gw
        gw.channel.close()


def messages(files: dict[str, bytes], **fields) -> list[pb.IndexImagesRequest]:
    return [pb.IndexImagesRequest(image=data, name=name, **fields) for name, data in files.items()]


def refused(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call(*args, **kwargs)
    return error.value


def trailing(error: grpc.RpcError) -> dict:
    return {k: v for k, v in error.trailing_metadata() or ()}


def http_record(gateway: Gateway, image_id: str) -> dict:
    return httpx.get(f"{gateway.url}/v1/images/{image_id}", params={"include_embedding": True}).json()


def as_http(image: pb.Image) -> dict:
    """An Image message in the HTTP API's shape (Struct numbers as JSON gives them)."""
    return {"id": image.id, "caption": image.caption, "caption_state": image.caption_state, "caption_error": image.caption_error,
            "source": image.source, "created_at": image.created_at, "phash": image.phash, "metadata": to_python(image.metadata)}


@pytest.fixture(scope="module")
def indexed(gateway):
    reply = gateway.stub.IndexImages(iter(messages(PHOTOS, metadata_json=json.dumps({"album": "photos", "year": 2024}))),
                                     timeout=300)
    return {i.image.source: i for i in reply.images}


# --- generic clients: reflection and health --------------------------------------------------------

def test_reflection_lists_the_services_and_describes_the_api(gateway):
    database = ProtoReflectionDescriptorDatabase(gateway.channel)
    assert {"grpc.health.v1.Health", "imagesearch.v1.ImageSearch"} <= set(database.get_services())
    service = descriptor_pool.DescriptorPool(database).FindServiceByName("imagesearch.v1.ImageSearch")
    assert {m.name for m in service.methods} == {"EmbedImage", "IndexImages", "SearchImage", "SearchSimilar", "SearchText",
                                                 "GetImage", "GetThumbnail", "DeleteImage", "ListImages", "ListTenants",
                                                 "GetTenant", "DeleteTenant"}
    assert service.methods_by_name["IndexImages"].client_streaming


def test_health_is_serving_when_ready(gateway):
    health = health_pb2_grpc.HealthStub(gateway.channel)
    for name in ("", "imagesearch.v1.ImageSearch"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- every method, equal to HTTP ---------------------------------------------------------------------

def test_embed_image_equals_the_http_endpoint(gateway, model_repository):
    reply = gateway.stub.EmbedImage(pb.EmbedImageRequest(image=PHOTOS["astronaut"]), timeout=120)
    http = httpx.post(f"{gateway.url}/embed-image/", files={"file": ("a.jpg", PHOTOS["astronaut"], "image/jpeg")},
                      timeout=120).json()
    assert reply.description == http["description"]
    np.testing.assert_array_equal(np.array(reply.embedding, np.float32), np.array(http["embedding_vector"], np.float32))
    np.testing.assert_allclose(reply.embedding, expected_embedding(model_repository, PHOTOS["astronaut"]), atol=1e-5)


def test_indexed_images_read_the_same_over_both_transports(gateway, indexed, model_repository):
    assert len(indexed) == len(PHOTOS) and all(i.created for i in indexed.values())
    coffee = indexed["coffee"].image
    got = gateway.stub.GetImage(pb.GetImageRequest(id=coffee.id, include_embedding=True), timeout=30)
    http = http_record(gateway, coffee.id)
    assert as_http(got) == {k: v for k, v in http.items() if k != "embedding"} == as_http(coffee)
    assert http["metadata"] == {"album": "photos", "year": 2024}
    np.testing.assert_array_equal(np.array(got.embedding, np.float32), np.array(http["embedding"], np.float32))
    np.testing.assert_allclose(got.embedding, expected_embedding(model_repository, PHOTOS["coffee"], "index"), atol=1e-5)
    assert not gateway.stub.GetImage(pb.GetImageRequest(id=coffee.id), timeout=30).embedding


def test_thumbnails_are_the_http_routes_bytes(gateway, indexed):
    image_id = indexed["rocket"].image.id
    jpeg = gateway.stub.GetThumbnail(pb.GetThumbnailRequest(id=image_id), timeout=30).jpeg
    assert jpeg[:2] == b"\xff\xd8" and jpeg == httpx.get(f"{gateway.url}/v1/images/{image_id}/thumbnail").content


def test_metadata_as_a_struct_is_stored_as_json_would_be(gateway):
    struct = struct_pb2.Struct()
    struct.update({"album": "struct", "year": 2023, "rating": 4.5, "tags": ["a", "b"], "nested": {"n": 1}})
    (done,) = gateway.stub.IndexImages(iter(messages({"s.png": unique_image(300)}, metadata_struct=struct)), timeout=60).images
    assert http_record(gateway, done.image.id)["metadata"] == {"album": "struct", "year": 2023, "rating": 4.5,
                                                               "tags": ["a", "b"], "nested": {"n": 1}}


def test_indexing_is_idempotent_and_all_or_nothing(gateway):
    data = unique_image(301)
    (first,) = gateway.stub.IndexImages(iter(messages({"one.png": data})), timeout=60).images
    before = gateway.count()
    (again,) = gateway.stub.IndexImages(iter(messages({"renamed.png": data})), timeout=60).images
    assert first.created and not again.created and again.image.id == first.image.id and again.image.source == "one.png"
    bad = refused(gateway.stub.IndexImages, iter(messages({"new.png": unique_image(302), "bad.jpg": b"not an image"})),
                  timeout=60)
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and trailing(bad)["error-code"] == "invalid_image"
    assert gateway.count() == before


def test_captions_can_be_skipped_per_stream(gateway):
    (done,) = gateway.stub.IndexImages(iter(messages({"plain.png": unique_image(303)}, captions=False)), timeout=60).images
    assert done.created and done.image.caption == ""


def test_searches_equal_the_http_routes(gateway, indexed):
    query = {"field": "metadata.album", "op": "eq", "value": "photos"}
    condition = pb.Condition(field="metadata.album", op="eq", value=struct_pb2.Value(string_value="photos"))
    for k, min_score in ((5, None), (9, 0.2)):
        request = pb.SearchImageRequest(image=PHOTOS["chelsea"], k=k, filters=[condition],
                                        **({} if min_score is None else {"min_score": min_score}))
        grpc_hits = gateway.stub.SearchImage(request, timeout=60).results
        form = {"k": str(k), "filter": json.dumps([query]), **({} if min_score is None else {"min_score": str(min_score)})}
        http_hits = httpx.post(f"{gateway.url}/v1/search/image", files={"file": ("q.jpg", PHOTOS["chelsea"], "image/jpeg")},
                               data=form, timeout=60).json()["results"]
        assert [(h.image.id, h.score) for h in grpc_hits] == [(h["id"], h["score"]) for h in http_hits]
        assert [as_http(h.image) for h in grpc_hits] == [{k: h[k] for k in as_http(grpc_hits[0].image)} for h in http_hits]
    text = gateway.stub.SearchText(pb.SearchTextRequest(query="a cat on a sofa", k=6, filters=[condition]), timeout=60).results
    http_text = httpx.post(f"{gateway.url}/v1/search/text", json={"query": "a cat on a sofa", "k": 6, "filters": [query]},
                           timeout=60).json()["results"]
    assert [(h.image.id, h.score, h.clip_score, h.caption_match, h.keyword_score, h.rank_score) for h in text] == \
        [(h["id"], h["score"], h["clip_score"], h["caption_match"], h["keyword_score"], h["rank_score"]) for h in http_text]
    assert len(text) == 6 and all(h.image.source in PHOTOS for h in text)


def test_similar_equals_the_http_route(gateway, indexed):
    own = indexed["horse"].image.id
    condition = pb.Condition(field="metadata.year", op="gte", value=struct_pb2.Value(number_value=2024))
    for request, params in ((pb.SearchSimilarRequest(id=own, k=4), {"k": 4}),
                            (pb.SearchSimilarRequest(id=own, k=20, filters=[condition], min_score=-0.5),
                             {"k": 20, "min_score": "-0.5", "filter": json.dumps([{"field": "metadata.year", "op": "gte",
                                                                                   "value": 2024}])})):
        hits = gateway.stub.SearchSimilar(request, timeout=30).results
        http = httpx.get(f"{gateway.url}/v1/images/{own}/similar", params=params).json()["results"]
        assert [(h.image.id, h.score) for h in hits] == [(h["id"], h["score"]) for h in http] and hits
    error = refused(gateway.stub.SearchSimilar, pb.SearchSimilarRequest(id="0" * 32), timeout=30)
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_k_defaults_to_ten_as_over_http(gateway, indexed):
    assert len(gateway.stub.SearchText(pb.SearchTextRequest(query="photo"), timeout=60).results) == min(10, gateway.count())


def test_list_pages_cover_what_http_lists(gateway, indexed):
    seen, token = [], ""
    while True:
        page = gateway.stub.ListImages(pb.ListImagesRequest(page_size=4, page_token=token), timeout=30)
        seen += [i.id for i in page.images]
        token = page.next_page_token
        if not token:
            break
    http = httpx.get(f"{gateway.url}/v1/images", params={"limit": 1000}).json()
    assert seen == [i["id"] for i in http["images"]] and page.total_size == http["total"] == len(seen)


def test_delete_then_not_found(gateway):
    (done,) = gateway.stub.IndexImages(iter(messages({"doomed.png": unique_image(304)})), timeout=60).images
    gateway.stub.DeleteImage(pb.DeleteImageRequest(id=done.image.id), timeout=30)
    assert httpx.get(f"{gateway.url}/v1/images/{done.image.id}").status_code == 404
    for call, request in ((gateway.stub.GetImage, pb.GetImageRequest(id=done.image.id)),
                          (gateway.stub.DeleteImage, pb.DeleteImageRequest(id=done.image.id))):
        error = refused(call, request, timeout=30)
        assert error.code() == grpc.StatusCode.NOT_FOUND and trailing(error)["error-code"] == "not_found"


# --- status codes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, request_, code, error_code", [
    ("SearchText", pb.SearchTextRequest(query="dog", k=-1), "INVALID_ARGUMENT", "bad_request"),
    ("SearchText", pb.SearchTextRequest(query="dog", k=0), "INVALID_ARGUMENT", "bad_request"),
    ("SearchText", pb.SearchTextRequest(query="dog", k=1001), "INVALID_ARGUMENT", "bad_request"),
    ("SearchText", pb.SearchTextRequest(query="   "), "INVALID_ARGUMENT", "bad_request"),
    ("SearchText", pb.SearchTextRequest(query="dog", filters=[pb.Condition(field="metadata.a b",
                                                                          value=struct_pb2.Value(number_value=1))]),
     "INVALID_ARGUMENT", "invalid_filter"),
    ("SearchText", pb.SearchTextRequest(query="dog", filters=[pb.Condition(field="created_at", op="gte",
                                                                          value=struct_pb2.Value(string_value="x"))]),
     "INVALID_ARGUMENT", "invalid_filter"),
    ("SearchText", pb.SearchTextRequest(query="dog", min_score=float("nan")), "INVALID_ARGUMENT", "bad_request"),
    ("SearchImage", pb.SearchImageRequest(image=b"\xff\xd8\xff truncated"), "INVALID_ARGUMENT", "invalid_image"),
    ("SearchImage", pb.SearchImageRequest(image=png_header_only(60_000, 60_000)), "RESOURCE_EXHAUSTED", "image_too_large"),
    ("SearchImage", pb.SearchImageRequest(image=b"\0" * 2_000_001), "RESOURCE_EXHAUSTED", "payload_too_large"),
    ("GetImage", pb.GetImageRequest(id="not-an-id"), "INVALID_ARGUMENT", "invalid_request"),
    ("ListImages", pb.ListImagesRequest(page_size=1001), "INVALID_ARGUMENT", "invalid_request"),
    ("ListImages", pb.ListImagesRequest(page_token="abc"), "INVALID_ARGUMENT", "invalid_page_token"),
    ("EmbedImage", pb.EmbedImageRequest(image=b""), "INVALID_ARGUMENT", "invalid_image"),
])
def test_bad_requests_get_their_status_code_a_safe_message_and_the_request_id(gateway, call, request_, code, error_code):
    error = refused(getattr(gateway.stub, call), request_, timeout=30, metadata=[("x-request-id", "req-42")])
    assert error.code() == getattr(grpc.StatusCode, code), error.details()
    assert trailing(error)["error-code"] == error_code and trailing(error)["x-request-id"] == "req-42"
    assert error.details() and "Traceback" not in error.details()
    status = rpc_status.from_call(error)  # the standard rich status: ErrorInfo names the same code
    info = error_details_pb2.ErrorInfo()
    assert status.code == error.code().value[0] and status.details[0].Unpack(info) and info.reason == error_code


def test_messages_over_the_upload_limit_are_refused_by_grpc_itself(gateway):
    error = refused(gateway.stub.EmbedImage, pb.EmbedImageRequest(image=b"\0" * 3_000_000), timeout=30)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_hostile_uploads_change_nothing(gateway, indexed):
    before = gateway.count()
    for payload in (b"", b"GIF89a", b"\xff\xd8\xff\xe0" + b"\0" * 100, png_header_only(60_000, 60_000), b"<svg></svg>"):
        error = refused(gateway.stub.IndexImages, iter(messages({"hostile": payload})), timeout=60)
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    error = refused(gateway.stub.IndexImages, iter(messages({"bad-meta.png": unique_image(305)}, metadata_json="[1, 2]")),
                    timeout=60)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "metadata" in error.details()
    assert refused(gateway.stub.IndexImages, iter([]), timeout=60).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert gateway.count() == before


def test_a_stream_over_the_files_limit_is_refused_whole(gateway):
    before = gateway.count()
    error = refused(gateway.stub.IndexImages, iter(messages({f"{i}.png": unique_image(400 + i) for i in range(65)})),
                    timeout=120)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 64 files" in error.details()
    assert gateway.count() == before


def test_concurrent_streams_each_index_their_batch_and_one_image_once(gateway):
    before, shared = gateway.count(), unique_image(500)

    def stream(n: int):
        return gateway.stub.IndexImages(iter(messages({f"c{n}.png": unique_image(501 + n), "shared.png": shared})),
                                        timeout=120).images

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(stream, range(8)))
    assert all(len(r) == 2 for r in replies) and len({r[1].image.id for r in replies}) == 1
    assert sum(r[1].created for r in replies) == 1 and gateway.count() == before + 9


# --- keys, scopes, rate limits -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed(model_repository, tmp_path_factory):
    keys = [{"name": "reader", "sha256": hash_key(READER), "scopes": ["search"], "rate_per_s": 0.01, "burst": 3},
            {"name": "writer", "sha256": hash_key(WRITER), "scopes": ["search", "write"]}]
    server, target = start_gateway(model_repository, str(tmp_path_factory.mktemp("grpc-keys") / "images.db"), api_keys=keys)
    with server:
        gw = Gateway(server, target, key=WRITER)
        yield gw
        gw.channel.close()


def test_keys_and_scopes_as_over_http(keyed):
    query = pb.SearchTextRequest(query="dog")
    anonymous = refused(keyed.stub.SearchText, query, timeout=30)
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    unknown = refused(keyed.stub.SearchText, query, timeout=30, metadata=[("x-api-key", "isk_nobody")])
    assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED and trailing(unknown)["error-code"] == "invalid_api_key"
    keyed.stub.SearchText(query, timeout=30, metadata=[("authorization", f"Bearer {WRITER}")])
    denied = refused(keyed.stub.IndexImages, iter(messages({"x.png": unique_image(600)})), timeout=30,
                     metadata=[("x-api-key", READER)])
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED and keyed.count() == 0
    (done,) = keyed.stub.IndexImages(iter(messages({"x.png": unique_image(600)})), timeout=60,
                                     metadata=[("x-api-key", WRITER)]).images
    assert refused(keyed.stub.DeleteImage, pb.DeleteImageRequest(id=done.image.id), timeout=30,
                   metadata=[("x-api-key", WRITER)]).code() == grpc.StatusCode.PERMISSION_DENIED
    # health and reflection stay public
    assert health_pb2_grpc.HealthStub(keyed.channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
        health_pb2.HealthCheckResponse.SERVING


def test_one_rate_limit_per_key_across_both_transports(keyed):
    """The reader's burst of 3, shared by HTTP and gRPC: the fourth call is refused with a retry delay."""
    metadata = [("x-api-key", READER)]
    keyed.stub.SearchText(pb.SearchTextRequest(query="dog"), timeout=30, metadata=metadata)
    assert httpx.get(f"{keyed.url}/v1/search/text", params={"q": "dog"}, headers={"X-API-Key": READER}).status_code == 200
    keyed.stub.SearchText(pb.SearchTextRequest(query="dog"), timeout=30, metadata=metadata)
    limited = refused(keyed.stub.SearchText, pb.SearchTextRequest(query="dog"), timeout=30, metadata=metadata)
    assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and trailing(limited)["error-code"] == "rate_limited"
    retry = error_details_pb2.RetryInfo()
    assert int(trailing(limited)["retry-after"]) >= 1
    assert any(d.Unpack(retry) for d in rpc_status.from_call(limited).details) and retry.retry_delay.seconds >= 1


# --- deadlines ---------------------------------------------------------------------------------------------

@pytest.mark.triton
def test_client_deadlines_reach_a_stalled_triton(model_repository, triton, tmp_path):
    """Triton stopped (SIGSTOP): a call with a 1.5 s deadline gets the gateway's own DEADLINE_EXCEEDED just
    before that deadline (the gateway's Triton timeout is 30 s: the Triton call was given the caller's
    deadline); the gateway answers the next call once Triton runs again."""
    server, target = start_gateway(model_repository, str(tmp_path / "images.db"), inference_mode="triton",
                                   triton_url=triton.grpc_url, triton_timeout_s=30)
    with server:
        gw = Gateway(server, target)
        gw.stub.SearchText(pb.SearchTextRequest(query="warm up"), timeout=60)
        os.kill(triton.process.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            error = refused(gw.stub.SearchText, pb.SearchTextRequest(query="a stalled call"), timeout=1.5)
            # the gateway's own answer: its Triton call was given what was left of the caller's 1.5 s (the
            # budget is in the message), not its own 30 s
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and trailing(error)["error-code"] == "dependency_timeout"
            given = re.search(r"Triton did not answer \w+ within ([0-9.e-]+)s", error.details())
            assert given and float(given.group(1)) < 1.5, error.details()
            ended = 'gateway_grpc_seconds_count{code="DEADLINE_EXCEEDED",method="SearchText"} 1.0'
            while ended not in httpx.get(f"{gw.url}/metrics").text:  # (recorded just after the reply is sent)
                assert time.monotonic() - start < 5
                time.sleep(0.05)
        finally:
            os.kill(triton.process.pid, signal.SIGCONT)
        assert len(gw.stub.SearchText(pb.SearchTextRequest(query="after"), timeout=60).results) == 0
        gw.channel.close()


def test_an_unreachable_triton_is_unavailable_with_a_retry_delay_and_health_not_serving(model_repository, tmp_path):
    (nowhere,) = free_ports(1)
    server, target = start_gateway(model_repository, str(tmp_path / "images.db"), inference_mode="triton",
                                   triton_url=f"127.0.0.1:{nowhere}", triton_retries=0)
    with server:
        gw = Gateway(server, target)
        health = health_pb2_grpc.HealthStub(gw.channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        error = refused(gw.stub.IndexImages, iter(messages({"a.png": unique_image(700)})), timeout=30)
        assert error.code() == grpc.StatusCode.UNAVAILABLE and trailing(error)["error-code"] == "dependency_unavailable"
        assert trailing(error)["retry-after"] == "5" and gw.count() == 0
        gw.channel.close()
