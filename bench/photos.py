"""Camera-, phone-, web- and thumbnail-size JPEGs for the benchmarks: what users upload.

Real photos come from Debian's mate-backgrounds package (installed by `make setup`, read at run time,
never copied into the repository; GPL-2+ wallpapers, among them a 5640x3172 scan of a painting and
2560x1920 nature photos). Sizes:
phone 12 MP (4032x3024, quality 90, as a phone writes it), the same pixels tagged EXIF orientation 6
(shown 3024x4032: how phones store portrait shots), camera 5 MP, web 2 MP, small 0.3 MP. Without
the package a mosaic of scikit-image's photos stands in, and ``source()`` says so.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from PIL import Image

NAMES = ("phone-12mp", "phone-12mp-portrait-exif", "camera-5mp", "web-2mp", "small-0.3mp")
BACKGROUNDS = Path("/usr/share/backgrounds/mate")
PHONE, CAMERA, NATURE = BACKGROUNDS / "abstract" / "Elephants_5640x3172.jpg", BACKGROUNDS / "nature" / "Wood.jpg", \
    BACKGROUNDS / "nature" / "LadyBird.jpg"


def jpeg(image: Image.Image, quality: int = 90, exif: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buffer.getvalue()


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Centre crop to the aspect ratio, then resize (a photo as a camera of that size would frame it)."""
    scale = max(width / image.width, height / image.height)
    w, h = round(width / scale), round(height / scale)
    left, top = (image.width - w) // 2, (image.height - h) // 2
    return image.crop((left, top, left + w, top + h)).resize((width, height), Image.Resampling.LANCZOS)


def _mosaic(width: int, height: int) -> Image.Image:
    import numpy as np
    import skimage.data

    canvas = Image.new("RGB", (width, height))
    tiles = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in ("astronaut", "coffee", "chelsea", "rocket")]
    for i, (x, y) in enumerate((x, y) for y in range(0, height, 400) for x in range(0, width, 600)):
        canvas.paste(tiles[i % len(tiles)], (x, y))
    return Image.fromarray(np.asarray(canvas))


@lru_cache(maxsize=1)
def payloads() -> dict[str, bytes]:
    """name -> JPEG bytes, largest first."""
    real = all(p.exists() for p in (PHONE, CAMERA, NATURE))
    phone = _fit(Image.open(PHONE), 4032, 3024) if real else _mosaic(4032, 3024)
    nature = Image.open(NATURE) if real else _mosaic(2560, 1600)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait (rotated 90 degrees clockwise)
    return {
        "phone-12mp": jpeg(phone),
        "phone-12mp-portrait-exif": jpeg(phone, exif=exif.tobytes()),
        "camera-5mp": jpeg(Image.open(CAMERA) if real else _mosaic(2560, 1920)),
        "web-2mp": jpeg(_fit(nature, 1800, 1125), quality=85),
        "small-0.3mp": jpeg(_fit(nature, 672, 448), quality=85),
    }


def source() -> str:
    return "mate-backgrounds photos" if PHONE.exists() else "scikit-image mosaic (install mate-backgrounds for real photos)"
