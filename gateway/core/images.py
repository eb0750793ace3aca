"""Uploaded bytes -> everything the service derives from one image, decoded once, at the smallest
scale that still serves every product it derives (CLIP and BLIP pixels, perceptual hash, thumbnail)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..runtime.preprocess import (
    RECORD_NEEDS,
    THUMBNAIL_SIZE,
    ImageError,
    ImageTooLarge,
    Resolution,
    decode_image,
    read_header,
    to_pixels,
)
from .errors import ErrorKind, ServiceError
from .protocols import DecodedImage, ModelInfo
from .records import content_id


@dataclass
class PreparedImage:
    id: str  # "" unless prepared for a stored record (SHA-256 of a 4 MB photo costs ~8 ms)
    clip_pixels: np.ndarray
    blip_pixels: np.ndarray | None  # only when captioning
    phash: str  # "" unless prepared for a stored record
    thumbnail: str  # "" unless prepared for a stored record (base64 JPEG for the search page)

    @property
    def blip_input(self) -> np.ndarray:
        assert self.blip_pixels is not None, "prepared without BLIP's input"
        return self.blip_pixels


def as_service_error(exc: ImageError) -> ServiceError:
    if isinstance(exc, ImageTooLarge):
        return ServiceError(ErrorKind.TOO_LARGE, str(exc), "image_too_large")
    return ServiceError(ErrorKind.INVALID_ARGUMENT, str(exc), "invalid_image")


def thumbnail(image: Image.Image) -> str:
    small = image.copy()
    small.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode()


def needs(info: ModelInfo, blip: bool, record: bool) -> Resolution:
    """The decoded size that serves the products asked for."""
    wanted = [Resolution.for_spec(info.clip_pixels)]
    if blip and info.blip_pixels is not None:
        wanted.append(Resolution.for_spec(info.blip_pixels))
    if record:
        wanted.append(RECORD_NEEDS)
    return Resolution.serving(wanted)


def decode(data: bytes, max_pixels: int, at_least: Resolution | None = None) -> Image.Image:
    try:
        return decode_image(data, max_pixels, at_least)
    except ImageError as exc:
        raise as_service_error(exc) from None


def tier_decodes(data: bytes, max_pixels: int) -> bool:
    """Whether the inference tier decodes this file (a JPEG without a colour profile to apply), from its
    header; refused as decode() refuses it (not an image, too many pixels) before anything else runs."""
    try:
        return read_header(data, max_pixels).plain_jpeg
    except ImageError as exc:
        raise as_service_error(exc) from None


def from_decoded(data: bytes, decoded: DecodedImage, record: bool) -> PreparedImage:
    """What prepare() returns, from the products the inference tier made (CPU-bound when ``record``: the
    id, the hash and the thumbnail are made here; call it in a thread then)."""
    if not record:
        return PreparedImage("", decoded.clip_pixels, decoded.blip_pixels, "", "")
    assert decoded.record_pixels is not None, "decoded without the record's pixels"
    image = Image.fromarray(decoded.record_pixels)
    return PreparedImage(content_id(data), decoded.clip_pixels, decoded.blip_pixels, perceptual_hash(image),
                         thumbnail(image))


def perceptual_hash(image: Image.Image) -> str:
    """64-bit DCT hash (hex): resized and recompressed copies of a photo get the same or a close one."""
    import imagehash

    return str(imagehash.phash(image))


def prepare(data: bytes, info: ModelInfo, max_pixels: int, blip: bool = False, record: bool = False,
            exact: bool = False) -> PreparedImage:
    """Decode once and derive only what the caller uses: CLIP pixels always, BLIP pixels for
    captions, perceptual hash and thumbnail for a stored record. ``exact``: decode at full size
    (what the export's parity gate does) instead of at the scale the products need. CPU-bound:
    call it in a thread."""
    image = decode(data, max_pixels, None if exact else needs(info, blip, record))
    return PreparedImage(content_id(data) if record else "", to_pixels(image, info.clip_pixels),
                         to_pixels(image, info.blip_pixels) if blip and info.blip_pixels is not None else None,
                         perceptual_hash(image) if record else "", thumbnail(image) if record else "")
