"""What the load harness sends: real photos (scikit-image's), unique images for indexing, queries."""

from __future__ import annotations

import io
import itertools
from functools import cache

import numpy as np
from PIL import Image

PHOTO_NAMES = ["astronaut", "coffee", "chelsea", "rocket", "horse", "coins", "hubble_deep_field", "camera", "page"]
QUERIES = ["man in red jacket", "a cat sleeping on a sofa", "cup of coffee on a table", "rocket launch", "a horse in a field",
           "old coins", "stars and galaxies", "photographer with a camera", "a page of printed text", "astronaut in space"]


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@cache
def photo(name: str) -> Image.Image:
    import skimage.data

    array = getattr(skimage.data, name)()
    return Image.fromarray((array * 255).astype(np.uint8) if array.dtype == bool else array)


@cache
def photo_jpeg(index: int) -> bytes:
    return encode_jpeg(photo(PHOTO_NAMES[index % len(PHOTO_NAMES)]))


QUERY_PAYLOAD: str | None = None  # a bench.photos payload name for every image query; None: rotate the photos above


def query_jpeg(rng: np.random.Generator) -> bytes:
    """The image a search or /embed-image/ request sends: one of the small photos, or the chosen
    camera-size payload (bench.photos) when QUERY_PAYLOAD names one (the sweep sets it)."""
    if QUERY_PAYLOAD is None:
        return photo_jpeg(int(rng.integers(100)))
    from bench.photos import payloads

    return payloads()[QUERY_PAYLOAD]


_UPLOADS = itertools.count()


def never_sent(data: bytes) -> bytes:
    """``data`` with a counter after its end marker: bytes never sent before at no cost to the load
    generator (decoders stop at the marker; the content id, SHA-256 of the bytes, is new, so the
    gateway decodes, embeds, captions and writes it as it would any new photo)."""
    return data + next(_UPLOADS).to_bytes(8, "big")


def upload_jpeg(rng: np.random.Generator) -> bytes:
    """What an indexing request uploads: a new crop of a small photo, or the camera-size payload the
    sweep chose (QUERY_PAYLOAD) made new with never_sent."""
    if QUERY_PAYLOAD is None:
        return unique_jpeg(rng)
    from bench.photos import payloads

    return never_sent(payloads()[QUERY_PAYLOAD])


def unique_jpeg(rng: np.random.Generator) -> bytes:
    """A new image each call (a random crop of a photo, mirrored at random): new bytes, real content."""
    image = photo(PHOTO_NAMES[int(rng.integers(len(PHOTO_NAMES)))])
    width, height = image.size
    crop_w, crop_h = int(width * rng.uniform(0.6, 1.0)), int(height * rng.uniform(0.6, 1.0))
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    cropped = image.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        cropped = cropped.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return encode_jpeg(cropped)
