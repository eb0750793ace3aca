"""Decoding on the inference tier, without Triton: the GPU's resize (gateway.runtime.array_resize, run
here with numpy as its array module) against Pillow's, nvImageCodec's CPU decode (what the test Triton
runs) against the gateway's own, the export's fidelity gate, and the header that routes an upload."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from export.decode import check_fidelity, gate_jpegs, gateway_pixels, psnr
from export.parity import ParityError
from gateway.backends.repository import check_tier_decode
from gateway.core.errors import ErrorKind, ServiceError
from gateway.runtime import array_resize
from gateway.runtime.preprocess import PixelSpec, read_header, to_pixels
from gateway.runtime.tier_decode import ProductSpecs, TierDecoder, array_products, pillow_products
from tests.support.images import adobe_rgb_profile, encode, mosaic

CLIP = PixelSpec(224, 224, 224, 3, (0.5,) * 3, (0.5,) * 3)
BLIP = PixelSpec(384, 384, None, 3, (0.5,) * 3, (0.5,) * 3)
SPECS = ProductSpecs(CLIP, BLIP)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(mosaic(1008, 756))


@pytest.mark.parametrize("spec", [CLIP, BLIP, PixelSpec(224, 224, 224, 2, (0.5,) * 3, (0.5,) * 3)],
                         ids=["clip-bicubic-crop", "blip-bicubic-square", "bilinear"])
def test_array_resize_is_pillows_within_its_rounding(photo, spec):
    """Pillow's weights, its 8-bit image between the passes: at most one level apart (rounding)."""
    ours, pillow = array_resize.to_pixels(np, photo, spec), to_pixels(Image.fromarray(photo), spec)
    assert ours.shape == pillow.shape and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - pillow)
    assert diff.max() <= 1 and diff.mean() < 1e-2


def test_box_reduce_is_pillows_reduce(photo):
    ours = array_resize.box_reduce(np, photo, 4)
    pillow = np.asarray(Image.fromarray(photo).reduce(4))
    assert ours.shape == pillow.shape
    assert np.abs(ours.astype(int) - pillow).max() <= 1


def test_the_gpu_products_match_the_cpu_products(photo):
    wanted = ("clip_pixels", "blip_pixels", "record_pixels")
    on_arrays, on_pillow = array_products(np, photo, SPECS, wanted), pillow_products(photo, SPECS, wanted)
    for product in wanted:
        assert on_arrays[product].shape == on_pillow[product].shape, product
        assert psnr(on_arrays[product], on_pillow[product]) > 40, product


@pytest.fixture(scope="module")
def decoder() -> TierDecoder:
    return TierDecoder(SPECS)


@pytest.mark.integration  # phone-size decodes, CLIP runs: seconds
def test_nvimagecodec_decodes_what_the_gateway_decodes(decoder):
    """Phone- and web-size JPEGs in every variant the gate uses: the tier's CLIP pixels are the gateway's
    within the reduced-scale decode's difference (DCT scaling there, a box filter here)."""
    files = gate_jpegs()
    results = decoder.decode(list(files.values()), [("clip_pixels", "record_pixels")] * len(files))
    for (name, data), result in zip(files.items(), results):
        assert isinstance(result, dict), (name, result)
        assert psnr(result["clip_pixels"], gateway_pixels(data, CLIP)) > 28, name
        upright = Image.open(io.BytesIO(data))
        width, height = (upright.height, upright.width) if "exif" in name else upright.size
        record = result["record_pixels"]
        assert min(record.shape[:2]) >= 64 and max(record.shape[:2]) >= 384, name
        assert (record.shape[1] > record.shape[0]) == (width > height), name  # the orientation was applied


def test_a_file_the_decoder_cannot_read_is_an_answer_not_a_failure(decoder):
    good = encode(mosaic(640, 480), "JPEG")
    results = decoder.decode([good[: len(good) // 3], good, b"not an image"], [("clip_pixels",)] * 3)
    assert isinstance(results[0], str) and results[0].startswith("undecodable image:")
    assert isinstance(results[1], dict)
    assert isinstance(results[2], str)


@pytest.mark.integration  # phone-size decodes, CLIP runs: seconds
def test_the_export_gate_refuses_a_decoder_that_gets_colours_wrong(model_repository, monkeypatch):
    files = dict(list(gate_jpegs().items())[:3])
    specs = ProductSpecs(PixelSpec.load(model_repository / "clip_image" / "preprocess.json"), None)
    report = check_fidelity(model_repository, TierDecoder(specs), files)
    assert report.passed and report.min_cosine >= 0.999

    import gateway.runtime.tier_decode as tier_decode

    swapped = tier_decode.pillow_products
    monkeypatch.setattr(tier_decode, "pillow_products",
                        lambda pixels, specs, wanted: swapped(np.ascontiguousarray(pixels[:, :, ::-1]), specs, wanted))
    broken = check_fidelity(model_repository, TierDecoder(specs), files)
    assert not broken.passed, broken


@pytest.mark.integration  # phone-size decodes, CLIP runs: seconds
def test_the_export_installs_nothing_when_the_gate_refuses(model_repository, tmp_path, monkeypatch):
    import shutil

    from export.decode import export_decode
    from tests.support.references import TEST_TRITON_OPTIONS

    repository = tmp_path / "repo"
    shutil.copytree(model_repository / "clip_image", repository / "clip_image")
    import gateway.runtime.tier_decode as tier_decode

    monkeypatch.setattr(tier_decode, "pillow_products", lambda pixels, specs, wanted: {
        name: np.zeros_like(value) for name, value in array_products(np, pixels, specs, wanted).items()})
    files = dict(list(gate_jpegs().items())[:2])
    with pytest.raises(ParityError, match="decode gate refused"):
        export_decode(repository, TEST_TRITON_OPTIONS, files)
    assert sorted(p.name for p in repository.iterdir()) == ["clip_image"]


def test_the_header_routes_only_plain_jpegs_to_the_tier():
    photo = mosaic(320, 240)
    assert read_header(encode(photo, "JPEG")).plain_jpeg
    assert read_header(encode(photo.convert("CMYK"), "JPEG")).plain_jpeg
    assert read_header(encode(photo.convert("L"), "JPEG")).plain_jpeg
    assert not read_header(encode(photo, "JPEG", icc_profile=adobe_rgb_profile())).plain_jpeg  # colour managed here
    assert not read_header(encode(photo, "PNG")).plain_jpeg
    assert not read_header(encode(photo, "WEBP")).plain_jpeg


def test_a_gateway_refuses_a_repository_without_the_decode_models(tmp_path):
    with pytest.raises(ServiceError) as refused:
        check_tier_decode(tmp_path, captions=False)
    assert refused.value.kind is ErrorKind.MISCONFIGURED and "python -m export decode" in refused.value.message


def test_a_decode_model_exported_before_blip_is_refused_when_the_gateway_captions(tmp_path):
    import json

    for model, products in (("image_decode", ["clip_pixels", "record_pixels"]), ("clip_image_bytes", [])):
        (tmp_path / model).mkdir()
        (tmp_path / model / "export.json").write_text(json.dumps({"request": {"source": "nvimgcodec", "products": products}}))
    assert check_tier_decode(tmp_path, captions=False) == ["image_decode", "clip_image_bytes"]
    with pytest.raises(ServiceError) as refused:
        check_tier_decode(tmp_path, captions=True)
    assert refused.value.kind is ErrorKind.MISCONFIGURED and "export decode again" in refused.value.message
