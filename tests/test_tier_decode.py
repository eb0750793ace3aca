"""Decoding on the inference tier (GATEWAY_DECODE=inference) through the real tritonserver: image_decode
runs nvImageCodec's CPU decoders here, clip_image_bytes feeds clip_image from it.

Two gateways over one Triton and the same models, one decoding uploads itself (the default), one
sending JPEGs to Triton: what a client sees is the same (status codes, error codes, bodies, ids,
search results; scores within the reduced-scale decode's difference), hostile files are refused
the same way, and what the tier does not decode (PNG, WebP, colour-managed JPEGs) is decoded by the
gateway exactly as before."""

from __future__ import annotations

import asyncio
import io
import json

import grpc
import httpx
import pytest
from PIL import Image

from export.decode import gate_jpegs, psnr
from gateway.api import image_search_pb2 as pb
from gateway.api import image_search_pb2_grpc as pb_grpc
from gateway.backends.triton import TritonInference
from gateway.runtime.blip_decode import GenerationSettings
from local_servers.tritonserver import TritonServer
from tests.support.gateways import http_and_grpc, wait_until_captioned
from tests.support.images import HOSTILE_FILES, adobe_rgb_profile, encode, mosaic
from tests.support.references import cosine, model_inputs, triton_inference_counts

pytestmark = pytest.mark.integration
MIN_COSINE = 0.999  # the export's gate, and the issue's


@pytest.fixture(scope="module")
def tier_triton(decode_repository, tmp_path_factory):
    with TritonServer(decode_repository, tmp_path_factory.mktemp("triton-decode")) as server:
        yield server


@pytest.fixture(scope="module")
def gateways(decode_repository, tier_triton, tmp_path_factory):
    """{"gateway": (HTTP URL, gRPC target), "inference": ...}: the two decode settings, one Triton."""
    found = {}
    with http_and_grpc(decode_repository, str(tmp_path_factory.mktemp("gw") / "images.db"), inference_mode="triton",
                       triton_url=tier_triton.grpc_url, max_upload_bytes=20_000_000) as here, \
            http_and_grpc(decode_repository, str(tmp_path_factory.mktemp("tier") / "images.db"), inference_mode="triton",
                          triton_url=tier_triton.grpc_url, max_upload_bytes=20_000_000, decode="inference") as tier:
        found["gateway"], found["inference"] = here, tier
        yield found


def decode_calls(triton) -> int:
    return triton_inference_counts(triton.metrics(), "image_decode")[0]


GATE = gate_jpegs()  # 12 MP and 2 MP: baseline, progressive, EXIF-rotated, CMYK, greyscale


def test_readiness_says_where_uploads_are_decoded(gateways):
    features = {mode: httpx.get(f"{url}/readyz").json()["features"]["decode"] for mode, (url, _) in gateways.items()}
    assert features["gateway"] == "gateway"
    assert features["inference"].startswith("inference tier")


@pytest.mark.parametrize("name", list(GATE))
def test_tier_pixels_and_embeddings_are_the_gateways(decode_repository, tier_triton, gateways, name):
    """The tier's CLIP, BLIP and record pixels against the gateway's own decode of the same JPEG (PSNR),
    and the embeddings /embed-image/ returns in both modes (cosine, gated at 0.999)."""
    data = GATE[name]

    async def decode():
        inference = TritonInference(tier_triton.grpc_url, decode_repository, True, GenerationSettings(), timeout_s=60,
                                    retries=0, tier_decode=True)
        try:
            return await inference.decode_encoded(data, blip=True, record=True)
        finally:
            await inference.close()

    decoded = asyncio.run(decode())
    # against the gateway's pixels decoded for that product alone (the gateway decodes at the scale its
    # largest product needs; the tier makes each product from its own reduction)
    assert psnr(decoded.clip_pixels, model_inputs(decode_repository, data, "search").clip_pixels) > 28, name
    assert decoded.blip_pixels is not None
    assert psnr(decoded.blip_pixels, model_inputs(decode_repository, data, "embed").blip_pixels) > 25, name
    upright = Image.open(io.BytesIO(data))
    landscape = upright.width > upright.height and "exif" not in name
    assert decoded.record_pixels is not None and (decoded.record_pixels.shape[1] > decoded.record_pixels.shape[0]) == landscape
    vectors = {mode: httpx.post(f"{url}/embed-image/", files={"file": (f"{name}.jpg", data, "image/jpeg")},
                                timeout=120).json()["embedding_vector"] for mode, (url, _) in gateways.items()}
    assert cosine(vectors["gateway"], vectors["inference"]) >= MIN_COSINE, name


def test_a_search_embeds_an_upload_as_its_index_did(gateways):
    """On the tier, an upload's CLIP pixels do not depend on what else is made from it: searching with the
    bytes of an indexed photo finds it at cosine 1."""
    url, _ = gateways["inference"]
    data = GATE["2mp-baseline"]
    stored = httpx.post(f"{url}/v1/images", files=[("files", ("a.jpg", data, "image/jpeg"))], timeout=120).json()["images"][0]
    hits = httpx.post(f"{url}/v1/search/image", files={"file": ("a.jpg", data, "image/jpeg")}, data={"k": 1},
                      timeout=120).json()["results"]
    assert hits[0]["id"] == stored["id"] and hits[0]["score"] > 0.99999
    assert httpx.delete(f"{url}/v1/images/{stored['id']}").status_code == 204  # the gateways hold the same records


def test_formats_the_tier_does_not_take_are_decoded_by_the_gateway_as_before(tier_triton, gateways):
    photo = mosaic(900, 600)
    files = {"png": encode(photo, "PNG"), "webp": encode(photo, "WEBP", quality=90),
             "icc-jpeg": encode(photo, "JPEG", icc_profile=adobe_rgb_profile())}
    before = decode_calls(tier_triton)
    for name, data in files.items():
        vectors = [httpx.post(f"{url}/embed-image/", files={"file": (name, data, "application/octet-stream")},
                              timeout=120).json()["embedding_vector"] for url, _ in gateways.values()]
        assert cosine(*vectors) > 0.99999, name  # the same decoder made both
    assert decode_calls(tier_triton) == before


def snapshot(url: str) -> list[tuple]:
    images = httpx.get(f"{url}/v1/images", params={"limit": 1000}).json()["images"]
    return sorted((i["id"], i["caption"], json.dumps(i["metadata"], sort_keys=True)) for i in images)


@pytest.mark.parametrize("case", HOSTILE_FILES)
def test_hostile_files_get_the_same_answer_in_both_modes_and_change_nothing(tier_triton, gateways, case):
    data, content_type, status = HOSTILE_FILES[case]
    before = {mode: snapshot(url) for mode, (url, _) in gateways.items()}
    decodes = decode_calls(tier_triton)
    for route in ("/v1/images", "/embed-image/", "/v1/search/image"):
        field = "files" if route == "/v1/images" else "file"
        answers = {}
        for mode, (url, _) in gateways.items():
            response = httpx.post(f"{url}{route}", files=[(field, (f"{case}.jpg", data, content_type))], timeout=60)
            assert response.status_code == status, (mode, route, response.text)
            answers[mode] = response.json()["error"]["code"]
        assert answers["gateway"] == answers["inference"], (route, answers)
    assert {mode: snapshot(url) for mode, (url, _) in gateways.items()} == before
    if case != "truncated-jpeg":  # refused from the header, before any model ran; a truncated JPEG is the decoder's to find
        assert decode_calls(tier_triton) == decodes, case


@pytest.mark.parametrize("case", ["truncated-jpeg", "jpeg-bomb", "text-named-jpg"])
def test_hostile_files_over_grpc_get_the_same_status_in_both_modes(gateways, case):
    data, _, _ = HOSTILE_FILES[case]
    codes = {}
    for mode, (_, target) in gateways.items():
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.ImageSearchStub(channel)
            for call, request in ((stub.SearchImage, pb.SearchImageRequest(image=data)),
                                  (stub.EmbedImage, pb.EmbedImageRequest(image=data))):
                with pytest.raises(grpc.RpcError) as refused:
                    call(request, timeout=60)
                codes.setdefault(mode, []).append(refused.value.code())
    assert codes["gateway"] == codes["inference"], codes


def test_a_client_cannot_tell_the_modes_apart(gateways):
    """The same calls against both gateways (fresh bytes: new records in each): the same statuses, ids,
    fields and hits; scores and hashes as close as the two decodes."""
    uploads = {"phone.jpg": GATE["12mp-exif-rotated"], "web.jpg": GATE["2mp-progressive"], "cmyk.jpg": GATE["2mp-cmyk"],
               "grey.jpg": GATE["12mp-grey"], "drawing.png": encode(mosaic(640, 480), "PNG")}
    seen = {}
    for mode, (url, _) in gateways.items():
        files = [("files", (n, d, "application/octet-stream")) for n, d in uploads.items()]
        indexed = httpx.post(f"{url}/v1/images", files=files, data={"metadata": '{"album": "trip"}'}, timeout=300)
        assert indexed.status_code == 200, indexed.text
        wait_until_captioned(url)
        records = {i["source"]: i for i in indexed.json()["images"]}
        one = records["phone.jpg"]["id"]
        got = httpx.get(f"{url}/v1/images/{one}").json()
        thumb = httpx.get(f"{url}/v1/images/{one}/thumbnail")
        search = httpx.post(f"{url}/v1/search/image", files={"file": ("q.jpg", GATE["12mp-baseline"], "image/jpeg")},
                            data={"k": 5}, timeout=120).json()["results"]
        similar = httpx.get(f"{url}/v1/images/{one}/similar", params={"k": 3}).json()["results"]
        seen[mode] = {"records": records, "got": got, "thumb": thumb, "search": search, "similar": similar}
    here, tier = seen["gateway"], seen["inference"]
    assert {n: r["id"] for n, r in here["records"].items()} == {n: r["id"] for n, r in tier["records"].items()}
    assert set(here["got"]) == set(tier["got"]) and here["got"]["metadata"] == tier["got"]["metadata"]
    assert tier["thumb"].status_code == 200 and tier["thumb"].headers["content-type"] == here["thumb"].headers["content-type"]
    assert Image.open(io.BytesIO(tier["thumb"].content)).size == \
        Image.open(io.BytesIO(here["thumb"].content)).size
    for name in uploads:
        a, b = int(here["records"][name]["phash"], 16), int(tier["records"][name]["phash"], 16)
        assert bin(a ^ b).count("1") <= 6, name  # near-duplicates stay near (64 bits)
    for results in ("search", "similar"):  # the same hits; near-equal scores may swap places
        scores = [{h["id"]: h["score"] for h in seen[mode][results]} for mode in ("gateway", "inference")]
        assert set(scores[0]) == set(scores[1]), results
        # within the two decodes' difference (the tiny test CLIP sees 32 px: each pixel is a wide average)
        assert all(abs(scores[0][i] - scores[1][i]) < 1e-2 for i in scores[0]), (results, scores)
