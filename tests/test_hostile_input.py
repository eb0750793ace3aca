"""Hostile and odd input against the real gateway (embedded mode, Milvus Lite), generated here.

Hostile input gets a clear 4xx (JSON error shape) on every route that takes it and leaves the
collection exactly as it was (ids, captions, metadata). Odd but valid images are accepted and
embedded as what a viewer shows: the EXIF-rotated copy, the first frame, the colours after the ICC
profile. The decode path is fuzzed with hypothesis for a bounded number of examples."""

from __future__ import annotations

import io
import json

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from gateway.api import image_search_pb2 as pb
from gateway.api import image_search_pb2_grpc as pb_grpc
from gateway.runtime.preprocess import ImageError, decode_image
from tests.support.gateways import http_and_grpc, wait_until_captioned
from tests.support.images import HOSTILE_FILES, STORED_AS, adobe_rgb_profile, encode, photo_array, photo_bytes
from tests.support.images import PHOTO_JPEGS as PHOTOS
from tests.support.references import cosine, expected_embedding

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(model_repository, tmp_path_factory):
    """(HTTP URL, gRPC target) of one gateway."""
    with http_and_grpc(model_repository, str(tmp_path_factory.mktemp("hostile") / "images.db")) as (url, target):
        seed = [("files", (f"{n}.jpg", PHOTOS[n], "image/jpeg")) for n in ("astronaut", "coffee", "rocket")]
        response = httpx.post(f"{url}/v1/images", files=seed, data={"metadata": '{"album": "seed"}'}, timeout=120)
        assert response.status_code == 200
        wait_until_captioned(url)  # the snapshots compare captions: let the worker write them first
        yield url, target


@pytest.fixture(scope="module")
def gateway(served):
    return served[0]


@pytest.fixture(scope="module")
def stub(served):
    with grpc.insecure_channel(served[1]) as channel:
        yield pb_grpc.ImageSearchStub(channel)


def snapshot(url: str) -> list[tuple]:
    images = httpx.get(f"{url}/v1/images", params={"limit": 1000}).json()["images"]
    return sorted((i["id"], i["caption"], i["source"], json.dumps(i["metadata"], sort_keys=True)) for i in images)


def post_image(url: str, route: str, name: str, data: bytes, content_type: str, form: dict | None = None):
    field = "files" if route == "/v1/images" else "file"
    return httpx.post(f"{url}{route}", files=[(field, (name, data, content_type))], data=form, timeout=60)


@pytest.mark.parametrize("case", HOSTILE_FILES)
def test_hostile_files_are_4xx_on_every_route_and_change_nothing(gateway, case):
    data, content_type, status = HOSTILE_FILES[case]
    before = snapshot(gateway)
    for route in ("/v1/images", "/embed-image/", "/v1/search/image"):
        response = post_image(gateway, route, f"{case}.jpg", data, content_type)
        assert response.status_code == status, (route, response.text)
        assert set(response.json()) == {"error"} and response.json()["error"]["request_id"]
    assert snapshot(gateway) == before


GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 413: grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.mark.parametrize("case", [c for c in HOSTILE_FILES if c != "executable-type"])  # (gRPC has no content type)
def test_hostile_files_over_grpc_get_the_same_code_on_every_method_and_change_nothing(gateway, stub, case):
    data, _, status = HOSTILE_FILES[case]
    before = snapshot(gateway)
    calls = [(stub.IndexImages, iter([pb.IndexImagesRequest(image=data, name=case)])),
             (stub.EmbedImage, pb.EmbedImageRequest(image=data)), (stub.SearchImage, pb.SearchImageRequest(image=data))]
    for call, request in calls:
        with pytest.raises(grpc.RpcError) as refused:
            call(request, timeout=60)
        assert refused.value.code() == GRPC_CODES[status], refused.value.details()
        assert dict(refused.value.trailing_metadata())["x-request-id"]
    assert snapshot(gateway) == before


@pytest.mark.parametrize("metadata", [
    "{not json", "[1, 2]", '"a string"', "null", '{"a": NaN}', '{"a": Infinity}', '{"a": 1e999}',
    '{"big": 123456789012345678901234567890}', "[" * 50_000 + "]" * 50_000, '{"a": ' + "[" * 20 + "]" * 20 + "}",
    json.dumps({"long": "x" * 20_000}), '{"a": 1} trailing',
], ids=lambda m: m[:24])
def test_malformed_metadata_is_400_and_changes_nothing(gateway, metadata):
    before = snapshot(gateway)
    response = post_image(gateway, "/v1/images", "new.png", photo_bytes("horse", "PNG"), "image/png", {"metadata": metadata})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"
    assert snapshot(gateway) == before


ODD_QUERIES = ["👨‍👩‍👧‍👦" * 100, "\u202eretsnom\u202c a", "e\u0301" * 400, "ℌ𝔢𝔩𝔩𝔬 ＷＯＲＬＤ", "\u200b\u200c\u200d dog",
               "cat\x00dog", "a" * 1000, "\U0010fffd" * 500, "SELECT * FROM images; --", 'id != "" or true']


@pytest.mark.parametrize("query", ODD_QUERIES, ids=range(len(ODD_QUERIES)))
def test_odd_unicode_queries_are_searched_as_text(gateway, query):
    """Valid text, however odd, is a query like any other: 200 with ranked results, nothing changes."""
    before = snapshot(gateway)
    for response in (httpx.get(f"{gateway}/v1/search/text", params={"q": query, "k": 3}, timeout=60),
                     httpx.post(f"{gateway}/v1/search/text", json={"query": query, "k": 3}, timeout=60)):
        assert response.status_code == 200, response.text
        assert len(response.json()["results"]) == 3
    assert snapshot(gateway) == before


@pytest.mark.parametrize("params", [
    {"q": "a" * 1001}, {"q": "dog", "k": "1e3"}, {"q": "dog", "k": "-1"}, {"q": "dog", "filter": "[" * 20_000},
], ids=["too-long", "k-float", "k-negative", "deep-filter"])
def test_out_of_range_queries_are_4xx(gateway, params):
    response = httpx.get(f"{gateway}/v1/search/text", params=params, timeout=60)
    assert 400 <= response.status_code < 500 and set(response.json()) == {"error"}, response.text


def test_deeply_nested_json_bodies_are_4xx(gateway):
    body = '{"query": "dog", "filters": ' + "[" * 50_000 + "]" * 50_000 + "}"
    response = httpx.post(f"{gateway}/v1/search/text", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500 and set(response.json()) == {"error"}, response.text


ESCAPES = [  # (field, op, value): attempts to leave the literal or the field name and write Milvus syntax
    ("source", "eq", 'x" or source != "'), ("source", "eq", "x\\\" or true or \\\""), ("id", "in", ['") or (id != "']),
    ("metadata.album", "eq", 'seed"] or metadata["album'), ("source", "eq", "\\"),
    ("metadata.a\"] or true or metadata[\"b", "eq", 1), ("source) or (1 == 1", "eq", "x"), ("metadata.", "eq", 1),
    ("metadata.album", "eq", "seed\n"), ("created_at", "gte", "0 or true"), ("created_at", "in", [1, "2) or (true"]),
]


@pytest.mark.parametrize("field,op,value", ESCAPES, ids=range(len(ESCAPES)))
def test_filter_injection_is_a_literal_or_a_422(gateway, field, op, value):
    """Either refused (422), or the value is compared as the literal string it is: no image has it,
    so no results. Never all images, never a 5xx."""
    before = snapshot(gateway)
    conditions = [{"field": field, "op": op, "value": value}]
    for response in (httpx.get(f"{gateway}/v1/search/text", params={"q": "dog", "filter": json.dumps(conditions)}),
                     httpx.post(f"{gateway}/v1/search/text", json={"query": "dog", "filters": conditions}),
                     post_image(gateway, "/v1/search/image", "q.jpg", PHOTOS["rocket"], "image/jpeg",
                                {"filter": json.dumps(conditions)})):
        assert response.status_code in (200, 422), response.text
        if response.status_code == 200:
            assert response.json()["results"] == []
        else:
            assert response.json()["error"]["code"] in ("invalid_filter", "invalid_request")
    assert snapshot(gateway) == before


# --- odd but valid images: accepted, and embedded as a viewer shows them ------------------------------

def embed(url: str, name: str, data: bytes) -> list[float]:
    response = post_image(url, "/embed-image/", name, data, "application/octet-stream")
    assert response.status_code == 200, response.text
    return response.json()["embedding_vector"]


def _wide_gamut_copy(image: Image.Image, fmt: str) -> bytes:
    profile = adobe_rgb_profile()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    wide = ImageCms.profileToProfile(image, srgb, ImageCms.ImageCmsProfile(io.BytesIO(profile)), outputMode="RGB")
    return encode(wide, fmt, icc_profile=profile, **({"quality": 95} if fmt == "JPEG" else {}))


def _odd_valid_images() -> dict[str, tuple[bytes, bytes]]:
    """name -> (the upload, an equivalent plain image: what the upload should be seen as)."""
    photo = Image.fromarray(photo_array("chelsea")).resize((160, 120))
    rng = np.random.default_rng(5)
    strip = Image.fromarray(rng.integers(0, 256, (10, 20000, 3), dtype=np.uint8))
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(160, dtype=np.uint8), (120, 1))))
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    frames = [photo, photo.transpose(Image.Transpose.ROTATE_180)]
    gray16 = Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257)
    cases = {
        "one-pixel": (encode(Image.new("RGB", (1, 1), (10, 200, 30))), encode(Image.new("RGB", (1, 1), (10, 200, 30)))),
        "strip-20000x10": (encode(strip), encode(strip)),
        "cmyk-jpeg": (encode(photo.convert("CMYK"), "JPEG", quality=95), encode(photo.convert("CMYK"), "JPEG", quality=95)),
        "sixteen-bit-png": (encode(gray16), encode(photo.convert("L"))),
        "grayscale": (encode(photo.convert("L"), "JPEG"), encode(photo.convert("L"), "JPEG")),
        "rgba": (encode(rgba), encode(rgba)),
        "palette-transparency": (encode(palette, transparency=0), encode(palette, transparency=0)),
        "animated-gif": (encode(frames[0].convert("P"), "GIF", save_all=True, append_images=[frames[1].convert("P")]),
                         encode(frames[0].convert("P"), "GIF")),
        "animated-webp": (encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True),
                          encode(frames[0], "PNG")),
        "icc-adobe-rgb-png": (_wide_gamut_copy(photo, "PNG"), encode(photo)),
        "icc-adobe-rgb-jpeg": (_wide_gamut_copy(photo, "JPEG"), encode(photo)),
        "png-named-jpg": (encode(photo), encode(photo)),
        "webp-named-png": (encode(photo, "WEBP", lossless=True), encode(photo)),
        "tiff": (encode(photo, "TIFF"), encode(photo)),
        "bmp": (encode(photo, "BMP"), encode(photo)),
    }
    for orientation, transpose in STORED_AS.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = photo if transpose is None else photo.transpose(transpose)
        cases[f"exif-orientation-{orientation}"] = (encode(stored, "PNG", exif=exif.tobytes()), encode(photo))
    cases["exif-orientation-6-jpeg"] = (encode(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95,
                                               exif=_orientation(6)), encode(photo, "JPEG", quality=95))
    return cases


def _orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


ODD_VALID = _odd_valid_images()
LOSSY = {"icc-adobe-rgb-jpeg": 0.999, "exif-orientation-6-jpeg": 0.999, "icc-adobe-rgb-png": 0.9999}


@pytest.mark.parametrize("name", ODD_VALID)
def test_odd_valid_images_are_embedded_as_a_viewer_shows_them(gateway, model_repository, name):
    upload, equivalent = ODD_VALID[name]
    vector = embed(gateway, name, upload)
    want = expected_embedding(model_repository, equivalent)
    assert cosine(vector, want) >= LOSSY.get(name, 0.99999), name


def test_icc_profiles_change_the_pixels_as_they_should():
    """Decoding applies the profile: the wide-gamut copy decodes to the sRGB original within rounding,
    while its raw values (the profile ignored) are several levels off."""
    photo = Image.fromarray(photo_array("coffee")).resize((200, 150))
    data = _wide_gamut_copy(photo, "PNG")
    original = np.asarray(photo, np.float64)
    decoded = np.asarray(decode_image(data), np.float64)
    raw = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64)
    assert np.abs(decoded - original).mean() < 0.5 and np.abs(decoded - original).max() <= 3
    assert np.abs(raw - original).mean() > 3
    broken = encode(photo, "PNG", icc_profile=b"not a profile at all")
    np.testing.assert_array_equal(np.asarray(decode_image(broken)), np.asarray(photo))  # ignored, still decoded


# --- fuzzing the decode path ----------------------------------------------------------------------

SEEDS = [photo_bytes("coffee", fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")] + [
    ODD_VALID["animated-gif"][0], ODD_VALID["icc-adobe-rgb-jpeg"][0], ODD_VALID["exif-orientation-6-jpeg"][0]]


def _decodes_or_refuses(data: bytes) -> None:
    try:
        image = decode_image(data, max_pixels=4_000_000)
    except ImageError:
        return
    assert image.mode == "RGB" and image.width * image.height >= 1


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(seed=st.sampled_from(SEEDS), flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                                                   max_size=12), keep=st.floats(0.02, 1))
def test_fuzzed_images_decode_or_get_an_image_error(seed, flips, keep):
    """Real images with bytes overwritten and tails cut: a clean RGB image or an ImageError
    (a 4xx), never another exception (a 5xx) or a hang."""
    data = bytearray(seed[: max(1, int(len(seed) * keep))])
    for where, value in flips:
        data[int(where * len(data))] = value
    _decodes_or_refuses(bytes(data))


MAGIC_NUMBERS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\0\0\0\0WEBP", b"BM", b"II*\0", b"MM\0*"]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@settings(max_examples=200, deadline=None, database=None)
@given(data=st.binary(max_size=2048) | st.builds(lambda magic, rest: magic + rest, st.sampled_from(MAGIC_NUMBERS),
                                                 st.binary(max_size=2048)))
def test_random_bytes_decode_or_get_an_image_error(data):
    _decodes_or_refuses(data)
