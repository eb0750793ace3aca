"""Real photos (scikit-image ships them) encoded in the formats and modes users upload."""

from __future__ import annotations

import io

import numpy as np
import skimage.data
from PIL import Image

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "horse", "page", "hubble_deep_field"]


def photo_array(name: str) -> np.ndarray:
    array = getattr(skimage.data, name)()
    return (array * 255).astype(np.uint8) if array.dtype == bool else array


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo_bytes(name: str, fmt: str = "PNG", **options) -> bytes:
    return encode(Image.fromarray(photo_array(name)), fmt, **options)
