"""The shared preprocessing against transformers' own image processors, on real photos and odd files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from transformers import BlipImageProcessorPil, CLIPImageProcessorPil

from gateway.runtime.preprocess import (
    ImageTooLarge,
    PixelSpec,
    Resolution,
    UndecodableImage,
    decode_image,
    preprocess,
    to_pixels,
)
from tests.support.images import PHOTOS, STORED_AS, encode, mosaic, photo_array, photo_bytes, png_header_only

PROCESSORS = {
    "clip-224": CLIPImageProcessorPil(),
    "clip-tiny": CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
    "clip-336": CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
    "blip-384": BlipImageProcessorPil(size={"height": 384, "width": 384}),
}


def normalised(pixels: np.ndarray, spec: PixelSpec) -> np.ndarray:
    """What the ONNX graphs do to our uint8 pixels: rescale and normalise (HWC)."""
    x = pixels.astype(np.float32) * np.float32(1 / 255)
    return (x - np.array(spec.image_mean, np.float32)) / np.array(spec.image_std, np.float32)


def hf_pixels(processor, data: bytes) -> np.ndarray:
    from io import BytesIO

    return processor(images=Image.open(BytesIO(data)), return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)


def max_level_diff(data: bytes, processor) -> float:
    """Largest difference to the HF processor, in uint8 grey levels."""
    spec = PixelSpec.from_processor(processor)
    ours = preprocess(data, spec)
    assert ours.dtype == np.uint8 and ours.shape == (spec.height, spec.width, 3)
    diff = np.abs(normalised(ours, spec) - hf_pixels(processor, data)) * np.array(spec.image_std) * 255
    return float(diff.max())


@pytest.mark.parametrize("processor", PROCESSORS.values(), ids=PROCESSORS.keys())
@pytest.mark.parametrize("name", PHOTOS)
def test_real_photos_match_transformers_exactly(name, processor):
    assert max_level_diff(photo_bytes(name, "PNG"), processor) < 1e-3


@pytest.mark.parametrize("processor", PROCESSORS.values(), ids=PROCESSORS.keys())
def test_jpeg_photo_matches_transformers(processor):
    assert max_level_diff(photo_bytes("chelsea", "JPEG", quality=90), processor) < 1e-3


def _odd_images() -> dict[str, bytes]:
    rgb = Image.fromarray(photo_array("coffee"))
    rgba = rgb.convert("RGBA")
    alpha = np.zeros(rgba.size[::-1], np.uint8)
    alpha[:, : alpha.shape[1] // 2] = 255
    alpha[: alpha.shape[0] // 3] = 128
    rgba.putalpha(Image.fromarray(alpha))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    return {
        "grayscale": encode(rgb.convert("L")),
        "grayscale-alpha": encode(rgba.convert("LA")),
        "rgba-half-transparent": encode(rgba),
        "palette": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)),
        "palette-transparency": encode(palette, transparency=0),
        "cmyk-jpeg": encode(rgb.convert("CMYK"), "JPEG", quality=95),
        "webp": encode(rgb, "WEBP", quality=80),
        "bmp": encode(rgb, "BMP"),
        "tiff": encode(rgb, "TIFF"),
        "one-pixel": encode(Image.new("RGB", (1, 1), (200, 30, 60))),
        "tall-narrow": encode(rgb.resize((60, 900))),
    }


ODD = _odd_images()


@pytest.mark.parametrize("name", ODD)
def test_odd_modes_and_formats_match_transformers(name):
    assert max_level_diff(ODD[name], PROCESSORS["clip-224"]) < 1e-3


@pytest.mark.parametrize("height,width", [(10, 20000), (900, 7)])
def test_extreme_aspect_ratio_stays_small_and_close(height, width):
    """A 20000x10 strip is resampled through its crop window only (no 448000x224 intermediate).
    Worst case, pure noise: 95% of values within one grey level of transformers, half a level on
    average (a misplaced window would be tens of levels off)."""
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)))
    processor = PROCESSORS["clip-224"]
    spec = PixelSpec.from_processor(processor)
    levels = np.abs(normalised(preprocess(data, spec), spec) - hf_pixels(processor, data)) * np.array(spec.image_std) * 255
    assert np.mean(levels > 1.001) < 0.05 and levels.mean() < 0.5


def test_sixteen_bit_png_keeps_its_tones():
    gray = photo_array("camera")
    data = encode(Image.fromarray(gray.astype(np.uint16) * 257))  # full 16-bit range
    decoded = np.asarray(decode_image(data))
    assert decoded.shape == gray.shape + (3,)
    np.testing.assert_array_equal(decoded[..., 0], gray)


# EXIF orientation -> the transpose a viewer applies; the file stores the inverse of it.

@pytest.mark.parametrize("orientation", STORED_AS)
def test_exif_orientation_is_applied(orientation):
    upright = Image.fromarray(photo_array("rocket"))
    stored = upright if STORED_AS[orientation] is None else upright.transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(encode(stored, "PNG", exif=exif.tobytes()))
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(upright))


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert decode_image(data).getpixel((5, 5)) == (255, 0, 0)


@pytest.mark.parametrize("width,height", [(100_000, 100_000), (9_000, 9_000)])
def test_decompression_bombs_are_refused_before_decoding(width, height):
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(png_header_only(width, height), max_pixels=50_000_000)


def test_pixel_limit_is_configurable():
    data = photo_bytes("astronaut")  # 512 x 512
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=512 * 512 - 1)
    assert decode_image(data, max_pixels=512 * 512).size == (512, 512)


@pytest.mark.parametrize("data", [
    b"",
    b"this is a text file with a .jpg name\n",
    b"%PDF-1.4 not an image",
    photo_bytes("astronaut", "JPEG")[:2000],
    photo_bytes("astronaut", "PNG")[:5000],
], ids=["empty", "text", "pdf", "truncated-jpeg", "truncated-png"])
def test_undecodable_input_is_a_clear_error(data):
    with pytest.raises(UndecodableImage):
        decode_image(data)


def test_pixel_spec_round_trips_through_json(tmp_path):
    spec = PixelSpec.from_processor(PROCESSORS["clip-224"])
    (tmp_path / "preprocess.json").write_text(spec.to_json())
    assert PixelSpec.load(tmp_path / "preprocess.json") == spec
    assert (spec.height, spec.width, spec.shortest_edge, spec.resample) == (224, 224, 224, 3)


# --- decoding at reduced scale -------------------------------------------------------------------

CLIP_224 = PixelSpec(224, 224, 224, 3, (0.5,) * 3, (0.5,) * 3)
BLIP_384 = PixelSpec(384, 384, None, 3, (0.5,) * 3, (0.5,) * 3)


@pytest.fixture(scope="module")
def phone_photo() -> bytes:
    return encode(mosaic(4032, 3024), "JPEG", quality=90)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.mark.parametrize("needs,size", [
    (Resolution.for_spec(CLIP_224), (1008, 756)),  # short side >= 448: JPEG DCT scaling by 1/4
    (Resolution.for_spec(CLIP_224) | Resolution.for_spec(BLIP_384), (2016, 1512)),  # >= 768: by 1/2
    (Resolution(short=3000), (4032, 3024)),  # nothing to spare: full size
])
def test_jpegs_decode_to_the_smallest_scale_that_still_serves(phone_photo, needs, size):
    assert decode_image(phone_photo, at_least=needs).size == size


def test_model_inputs_from_the_reduced_decode_are_close_to_the_exact_ones(phone_photo):
    exact = decode_image(phone_photo)
    needs = Resolution.for_spec(CLIP_224) | Resolution.for_spec(BLIP_384)
    for spec, reduced_for in ((CLIP_224, Resolution.for_spec(CLIP_224)), (CLIP_224, needs), (BLIP_384, needs)):
        want, got = to_pixels(exact, spec), to_pixels(decode_image(phone_photo, at_least=reduced_for), spec)
        assert got.shape == want.shape and psnr(got, want) > 40, (spec, reduced_for)


def test_other_formats_are_box_reduced_after_decoding(phone_photo):
    png = encode(Image.open(io.BytesIO(phone_photo)).resize((2000, 1500)), "PNG")
    reduced = decode_image(png, at_least=Resolution.for_spec(CLIP_224))
    assert reduced.size == (667, 500) and reduced.mode == "RGB"  # 1500 / 448 = 3.3: a 3x3 box, 500 >= 448
    assert psnr(to_pixels(reduced, CLIP_224), to_pixels(decode_image(png), CLIP_224)) > 38  # a box filter, not the DCT


def test_small_images_and_large_needs_are_decoded_in_full():
    small = photo_bytes("coffee", "JPEG")
    assert decode_image(small, at_least=Resolution.for_spec(CLIP_224)).size == (600, 400)
    assert Resolution(short=448).reduction((600, 400)) == 1.0 and Resolution().reduction((4000, 3000)) == 1.0


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_holds_at_reduced_scale(phone_photo, orientation):
    upright = Image.open(io.BytesIO(phone_photo))
    stored = upright.transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    rotated = encode(stored, "JPEG", quality=90, exif=exif.tobytes())
    needs = Resolution.for_spec(CLIP_224)
    got = decode_image(rotated, at_least=needs)
    assert got.size == decode_image(phone_photo, at_least=needs).size
    assert psnr(to_pixels(got, CLIP_224), to_pixels(decode_image(phone_photo), CLIP_224)) > 35


def test_the_pixel_limit_is_checked_before_any_reduced_decode():
    with pytest.raises(ImageTooLarge):
        decode_image(png_header_only(60_000, 60_000), at_least=Resolution(short=64))
