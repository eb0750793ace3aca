"""Image bytes -> the uint8 RGB pixels a model takes (H, W, 3).

One function for the export's parity checks and for the gateway, so clients cannot drift from the
model. Rescale, normalise and the channel transpose live inside the ONNX graphs; this module only
decodes, orients, converts colour and resizes, as Hugging Face's PIL image processors do
(CLIP: shortest side -> size, bicubic, centre crop; BLIP: straight to size x size, bicubic).

Decoding at reduced scale: a 12 MP phone photo decoded in full costs ~200 ms of CPU here, ten
times what the models need from it. ``decode_image(..., at_least=Resolution(...))`` decodes JPEGs
with libjpeg's DCT scaling (Pillow's ``draft``: 1/2, 1/4 or 1/8 of the size, straight from the
coefficients) and reduces other formats with a box filter, to the smallest size that still gives
every consumer at least twice its own resolution; the usual bicubic resize then runs on that. The
exact path (no ``at_least``) is what the export's parity gate uses; docs/benchmarks.md has the
fidelity figures.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: well above any camera, far below a decompression bomb


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
ICC_MODES = {"RGB": "RGB ", "RGBA": "RGB ", "CMYK": "CMYK", "L": "GRAY"}  # mode -> the profile colour space it needs

THUMBNAIL_SIZE = 192  # a stored record's thumbnail fits in a square of this side
PHASH_SIZE = 32  # imagehash.phash's DCT input: 32 x 32 grey levels

# Above this many times the crop area, resize only the crop window instead of the whole image.
MAX_EXACT_RESIZE_FACTOR = 16


class ImageError(ValueError):
    """The bytes are not an image we can use; the message says why (safe to show to a client)."""


class UndecodableImage(ImageError):
    pass


class ImageTooLarge(ImageError):
    pass


@dataclass(frozen=True)
class PixelSpec:
    """What a vision model takes: written beside the model in the repository as preprocess.json."""

    height: int
    width: int
    shortest_edge: int | None  # resize the shortest side to this, keep aspect, then centre-crop
    resample: int  # PIL resampling filter (3 = bicubic)
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]

    @classmethod
    def from_processor(cls, processor) -> PixelSpec:
        """From a Hugging Face image processor (CLIP-style crop or BLIP-style square resize)."""
        size, crop = processor.size, getattr(processor, "crop_size", None) or {}
        if getattr(processor, "do_center_crop", False) and size.get("shortest_edge"):
            height, width, shortest = crop["height"], crop["width"], size["shortest_edge"]
        elif size.get("height") and size.get("width"):
            height, width, shortest = size["height"], size["width"], None
        else:
            raise ValueError(f"unsupported image processor sizes: size={dict(size)} crop={crop}")
        return cls(int(height), int(width), None if shortest is None else int(shortest), int(processor.resample),
                   tuple(float(m) for m in processor.image_mean), tuple(float(s) for s in processor.image_std))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def load(cls, path: Path) -> PixelSpec:
        data = json.loads(Path(path).read_text())
        return cls(**{**data, "image_mean": tuple(data["image_mean"]), "image_std": tuple(data["image_std"])})


@dataclass(frozen=True)
class Resolution:
    """How large a decoded image must stay for its consumers: short side >= ``short`` and long side
    >= ``long`` (0: no need)."""

    short: int = 0
    long: int = 0

    @classmethod
    def for_spec(cls, spec: PixelSpec, margin: int = 2) -> Resolution:
        """``margin`` times what a model input needs: its shortest edge (CLIP: resize, then crop),
        or its larger side on both axes (BLIP: straight to height x width)."""
        return cls(short=margin * (spec.shortest_edge or max(spec.height, spec.width)))

    def __or__(self, other: Resolution) -> Resolution:
        return Resolution(max(self.short, other.short), max(self.long, other.long))

    @classmethod
    def serving(cls, needs: Iterable[Resolution]) -> Resolution:
        result = cls()
        for need in needs:
            result = result | need
        return result

    def reduction(self, size: tuple[int, int]) -> float:
        """By how much an image of ``size`` may shrink and still serve (>= 1; 1: not at all)."""
        short, long = sorted(size)
        limits = [side / need for side, need in ((short, self.short), (long, self.long)) if need]
        return max(1.0, min(limits)) if limits else 1.0


@dataclass(frozen=True)
class Header:
    """What an image file's header says, read without decoding a pixel."""

    format: str  # Pillow's name: JPEG, MPO (a phone's JPEG with extra frames), PNG, WEBP, ...
    width: int
    height: int
    mode: str  # RGB, L, CMYK, ...
    foreign_profile: bool  # an embedded colour profile other than sRGB, which decoding applies

    @property
    def plain_jpeg(self) -> bool:
        """A JPEG that any JPEG decoder (libjpeg-turbo, nvJPEG) turns into the same upright RGB pixels as
        decode_image: no colour profile to apply (EXIF orientation is applied by both)."""
        return self.format in ("JPEG", "MPO") and self.mode in ("RGB", "L", "CMYK") and not self.foreign_profile


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """The image, its header read and its pixel count checked, no pixel decoded: a decompression bomb
    costs nothing."""
    if not data:
        raise UndecodableImage("empty file")
    image: Image.Image = Image.open(io.BytesIO(data))
    if image.width * image.height > max_pixels:
        raise ImageTooLarge(
            f"image is {image.width}x{image.height} = {image.width * image.height:,} pixels;"
            f" the limit is {max_pixels:,}")
    return image


@contextmanager
def _refusals():
    """Pillow's failures as the ImageErrors a client is shown."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise UndecodableImage("not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UndecodableImage(f"image data is corrupt or truncated: {exc}") from exc


def read_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """The header, refused as decode_image would refuse the file before decoding (empty, not an image,
    too many pixels). Costs well under a millisecond for a 12 MP JPEG."""
    with _refusals():
        image = _open(data, max_pixels)
        return Header(image.format or "", image.width, image.height, image.mode, _foreign_profile(image) is not None)


# what a stored record's products (perceptual hash, thumbnail) need of the decoded image, with the same
# 2x margin as the models'
RECORD_NEEDS = Resolution(short=2 * PHASH_SIZE, long=2 * THUMBNAIL_SIZE)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, at_least: Resolution | None = None) -> Image.Image:
    """Decode any image Pillow reads into an upright 8-bit RGB image (first frame if animated).

    The pixel count is checked from the header, before any pixel is decoded, so a decompression
    bomb costs nothing. An embedded ICC profile other than sRGB (Display P3, Adobe RGB, a CMYK
    press profile) is applied, so colours match what a browser shows. Transparency is
    composited onto white, as transformers does. With ``at_least``, the image is decoded (JPEG)
    or box-reduced (other formats) to the smallest size that still meets it; without, in full.
    """
    with _refusals():
        image = _open(data, max_pixels)
        factor = at_least.reduction(image.size) if at_least else 1.0
        if factor >= 2:  # JPEG: libjpeg scales in the DCT domain (1/2, 1/4, 1/8); other formats ignore it
            image.draft(image.mode, (math.ceil(image.width / factor), math.ceil(image.height / factor)))
        image.load()
        image = ImageOps.exif_transpose(image) or image
        image = _to_srgb(image)
    rgb = _to_rgb(image)
    remaining = int(at_least.reduction(rgb.size)) if at_least else 1
    return rgb.reduce(remaining) if remaining >= 2 else rgb  # box filter on RGB: what DCT scaling could not do


def _foreign_profile(image: Image.Image) -> ImageCms.ImageCmsProfile | None:
    """The embedded colour profile decoding applies: one that is not sRGB and fits the image's mode (a
    broken or mismatched one is ignored: the pixels are still valid)."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ICC_MODES:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if (profile.profile.xcolor_space != ICC_MODES[image.mode]
                or ImageCms.getProfileDescription(profile).strip().startswith("sRGB")):
            return None
        return profile
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _to_srgb(image: Image.Image) -> Image.Image:
    """Apply an embedded colour profile other than sRGB."""
    profile = _foreign_profile(image)
    if profile is None:
        return image
    try:
        converted = ImageCms.profileToProfile(image, profile, SRGB, outputMode="RGBA" if image.mode == "RGBA" else "RGB")
        return converted or image
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit int) grayscale: keep the top 8 bits; convert("L") would clip to white.
        values = np.asarray(image, dtype=np.uint32)
        image = Image.fromarray((values >> 8 if values.max() > 255 else values).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def to_pixels(image: Image.Image, spec: PixelSpec) -> np.ndarray:
    """An RGB image -> uint8 (spec.height, spec.width, 3), resized and cropped like the HF processor."""
    if spec.shortest_edge is None:
        resized = image.resize((spec.width, spec.height), resample=spec.resample)
        return np.asarray(resized, dtype=np.uint8)
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(spec.shortest_edge * long / short)
    new_w, new_h = (spec.shortest_edge, new_long) if width <= height else (new_long, spec.shortest_edge)
    top, left = (new_h - spec.height) // 2, (new_w - spec.width) // 2
    if top < 0 or left < 0:  # crop larger than the resized image: HF pads with zeros around it
        canvas = np.zeros((max(new_h, spec.height), max(new_w, spec.width), 3), np.uint8)
        pad_t, pad_l = -(-(canvas.shape[0] - new_h) // 2), -(-(canvas.shape[1] - new_w) // 2)
        canvas[pad_t:pad_t + new_h, pad_l:pad_l + new_w] = np.asarray(image.resize((new_w, new_h), spec.resample))
        top, left = top + pad_t, left + pad_l
        return np.ascontiguousarray(canvas[top:top + spec.height, left:left + spec.width])
    if new_w * new_h <= MAX_EXACT_RESIZE_FACTOR * spec.width * spec.height:
        window = np.asarray(image.resize((new_w, new_h), resample=spec.resample), dtype=np.uint8)
        return np.ascontiguousarray(window[top:top + spec.height, left:left + spec.width])
    # Extreme aspect ratios (a 20000x10 strip would become a 448000x224 intermediate): resample only
    # the crop window, same filter and scale; pixels may differ from the full resize by one level.
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + spec.width) * sx, (top + spec.height) * sy)
    return np.asarray(image.resize((spec.width, spec.height), resample=spec.resample, box=box), dtype=np.uint8)


def preprocess(data: bytes, spec: PixelSpec, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image file bytes -> uint8 (H, W, 3) model input."""
    return to_pixels(decode_image(data, max_pixels), spec)
