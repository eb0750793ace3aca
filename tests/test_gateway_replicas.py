"""Two gateway processes on one Milvus server, as behind a Kubernetes Service with round robin: a write
through one is read at once through the other with the consistency token the write returned (GET, image
search, over HTTP and gRPC); a GET without the token still finds a record just written elsewhere (the
strong re-read before a 404); a malformed token is refused; an unloaded collection (a restarted server
reloading) is not ready and answers 503, never 404. (Named to run before test_milvus_outage, which ends
the session's Milvus server.)"""

from __future__ import annotations

import grpc
import httpx
import pytest

from gateway.api import image_search_pb2 as pb
from gateway.api import image_search_pb2_grpc as pb_grpc
from local_servers.service_process import gateway_process
from tests.support.images import unique_image

pytestmark = [pytest.mark.integration, pytest.mark.milvus_server]
TOKEN = "X-Consistency-Token"


def upload(url: str, data: bytes) -> httpx.Response:
    response = httpx.post(f"{url}/v1/images", files=[("files", ("a.png", data, "image/png"))], timeout=60)
    assert response.status_code == 200, response.text
    return response


@pytest.fixture(scope="module")
def replicas(model_repository, milvus_server, tmp_path_factory):
    shared = {"milvus_uri": milvus_server.uri, "collection": "replicas", "captions": "false"}
    with gateway_process(model_repository, tmp_path_factory.mktemp("a"), **shared) as a, \
            gateway_process(model_repository, tmp_path_factory.mktemp("b"), **shared) as b:
        yield a, b


def test_a_write_through_one_replica_is_read_at_once_through_the_other_with_its_token(replicas):
    a, b = replicas
    for seed in range(2000, 2020):
        image = unique_image(seed)
        written = upload(a.url, image)
        token, image_id = written.headers[TOKEN], written.json()["images"][0]["id"]
        assert token.isdigit()
        got = httpx.get(f"{b.url}/v1/images/{image_id}", headers={TOKEN: token}, timeout=30)
        assert got.status_code == 200, got.text
        hits = httpx.post(f"{b.url}/v1/search/image", files={"file": ("q.png", image, "image/png")}, data={"k": "1"},
                          headers={TOKEN: token}, timeout=30).json()["results"]
        assert [h["id"] for h in hits] == [image_id]


def test_a_get_without_the_token_re_reads_strongly_before_it_answers_404(replicas):
    a, b = replicas
    misses = 0
    for seed in range(2100, 2110):
        image_id = upload(a.url, unique_image(seed)).json()["images"][0]["id"]
        misses += httpx.get(f"{b.url}/v1/images/{image_id}", timeout=30).status_code != 200
    assert misses == 0
    assert httpx.get(f"{b.url}/v1/images/{'0' * 32}", timeout=30).status_code == 404


def test_grpc_writes_return_the_token_in_trailing_metadata_and_reads_take_it(replicas):
    a, b = replicas
    with grpc.insecure_channel(a.grpc_url) as to_a, grpc.insecure_channel(b.grpc_url) as to_b:
        image = unique_image(2200)
        reply, call = pb_grpc.ImageSearchStub(to_a).IndexImages.with_call(
            iter([pb.IndexImagesRequest(image=image, name="a.png")]), timeout=60)
        token = dict(call.trailing_metadata())["x-consistency-token"]
        hits = pb_grpc.ImageSearchStub(to_b).SearchImage(pb.SearchImageRequest(image=image, k=1), timeout=30,
                                                         metadata=(("x-consistency-token", token),)).results
        assert [h.image.id for h in hits] == [reply.images[0].image.id]


def test_a_malformed_token_is_refused(replicas):
    a, _ = replicas
    refused = httpx.get(f"{a.url}/v1/images", headers={TOKEN: "yesterday"}, timeout=30)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"


def test_while_the_collection_is_not_loaded_the_gateway_is_not_ready_and_absent_is_503_not_404(replicas, milvus_server):
    """What a restarted Milvus server looks like until it has reloaded the collection: reads would miss
    stored records without an error, so readiness is red and no GET answers 404."""
    from pymilvus import MilvusClient

    a, _ = replicas
    stored = upload(a.url, unique_image(2300)).json()["images"][0]["id"]
    client = MilvusClient(milvus_server.uri)
    client.release_collection("replicas")
    try:
        ready = httpx.get(f"{a.url}/readyz", timeout=30)
        assert ready.status_code == 503 and "is not loaded" in ready.json()["error"]["message"]
        absent = httpx.get(f"{a.url}/v1/images/{'0' * 32}", timeout=30)
        assert absent.status_code == 503 and absent.headers["retry-after"] == "5"
    finally:
        client.load_collection("replicas")
        client.close()
    assert httpx.get(f"{a.url}/readyz", timeout=30).status_code == 200
    assert httpx.get(f"{a.url}/v1/images/{stored}", timeout=30).status_code == 200
