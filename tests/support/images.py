"""Real photos (scikit-image ships them) encoded in the formats and modes users upload."""

from __future__ import annotations

import io
import struct
import zlib

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


def _s15f16(value: float) -> bytes:
    return int(round(value * 65536)).to_bytes(4, "big", signed=True)


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15f16(x) + _s15f16(y) + _s15f16(z)


def adobe_rgb_profile() -> bytes:
    """A minimal ICC v2 matrix/TRC display profile with Adobe RGB (1998) primaries (D50-adapted) and
    gamma 2.2: a wide-gamut profile to embed in test images (Pillow can only create sRGB ones)."""
    text = b"Adobe RGB (1998) test profile"
    tags = {
        b"desc": b"desc\0\0\0\0" + (len(text) + 1).to_bytes(4, "big") + text + b"\0" + b"\0" * 11 + b"\0" * 67,
        b"cprt": b"text\0\0\0\0" + b"public domain\0",
        b"wtpt": _xyz_tag(0.9642, 1.0, 0.8249),
        b"rXYZ": _xyz_tag(0.6097, 0.3111, 0.0195),
        b"gXYZ": _xyz_tag(0.2053, 0.6257, 0.0609),
        b"bXYZ": _xyz_tag(0.1492, 0.0632, 0.7446),
    }
    gamma = b"curv\0\0\0\0" + (1).to_bytes(4, "big") + (563).to_bytes(2, "big") + b"\0\0"  # u8Fixed8 2.199
    tags.update({b"rTRC": gamma, b"gTRC": gamma, b"bTRC": gamma})
    table, data = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for signature, body in tags.items():
        body += b"\0" * (-len(body) % 4)
        table += signature + (offset + len(data)).to_bytes(4, "big") + len(body).to_bytes(4, "big")
        data += body
    size = offset + len(data)
    header = (size.to_bytes(4, "big") + b"none" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + bytes(12) + b"acsp"
              + b"APPL" + bytes(4) + b"none" + bytes(4) + bytes(8) + bytes(4)
              + _s15f16(0.9642) + _s15f16(1.0) + _s15f16(0.8249) + b"none" + bytes(16) + bytes(28))
    assert len(header) == 128
    return header + len(tags).to_bytes(4, "big") + table + data


def png_header_only(width: int, height: int) -> bytes:
    """A few hundred bytes that claim width x height grayscale pixels: a decompression bomb's header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def unique_image(seed: int) -> bytes:
    """A small PNG of random pixels: new bytes (a new id) for every seed."""
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)), "PNG")


# EXIF orientation -> how an upright photo is stored with that tag
STORED_AS = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
             7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
# the photos the API tests index and query, as JPEG files
API_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "horse", "coins", "hubble_deep_field")
PHOTO_JPEGS = {name: photo_bytes(name, "JPEG", quality=90) for name in API_PHOTOS}


def mosaic(width: int, height: int) -> Image.Image:
    """A large photo-like image: real photos tiled at their own resolution (sharp detail everywhere,
    edges between tiles), for tests of decoding at reduced scale. Benchmarks use real camera-size
    photos (bench/decode.py)."""
    canvas = Image.new("RGB", (width, height))
    tiles = [Image.fromarray(photo_array(name)).convert("RGB") for name in ("astronaut", "coffee", "chelsea", "rocket",
                                                                            "hubble_deep_field")]
    x = y = i = 0
    while y < height:
        tile = tiles[i % len(tiles)]
        canvas.paste(tile, (x, y))
        i += 1
        x += tile.width
        if x >= width:
            x, y = 0, y + 400
    return canvas


# --- hostile files: name -> (bytes, content type, the HTTP status every route answers) ----------------

def patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    return data[:offset] + struct.pack(fmt, *values) + data[offset + struct.calcsize(fmt):]


def jpeg_bomb() -> bytes:
    """A small JPEG whose frame header claims 65000 x 65000 pixels."""
    data = photo_bytes("coffee", "JPEG")
    sof = data.index(b"\xff\xc0")
    return patched(data, sof + 5, ">HH", 65000, 65000)


def gif_bomb() -> bytes:
    """A small GIF whose screen and frame claim 65535 x 65535 pixels."""
    data = encode(Image.new("P", (8, 8)), "GIF")
    frame = data.index(b"\x2c")
    return patched(patched(data, 6, "<HH", 65535, 65535), frame + 5, "<HH", 65535, 65535)


HOSTILE_FILES = {
    "zero-bytes": (b"", "image/jpeg", 400),
    "text-named-jpg": (b"hello, I am a text file\n" * 20, "image/jpeg", 400),
    "pdf-named-jpg": (b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF", "image/jpeg", 400),
    "svg-named-png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
                      "image/png", 400),
    "html-named-gif": (b"<!doctype html><script>alert(1)</script>", "image/gif", 400),
    "zip-named-webp": (b"PK\x03\x04" + bytes(100), "image/webp", 400),
    "truncated-jpeg": (PHOTO_JPEGS["coffee"][: len(PHOTO_JPEGS["coffee"]) // 4], "image/jpeg", 400),
    "truncated-png": (photo_bytes("coffee", "PNG")[:3000], "image/png", 400),
    "truncated-gif": (photo_bytes("coffee", "GIF")[:600], "image/gif", 400),
    "truncated-webp": (photo_bytes("coffee", "WEBP")[:300], "image/webp", 400),
    "png-bomb": (png_header_only(60_000, 60_000), "image/png", 413),
    "jpeg-bomb": (jpeg_bomb(), "image/jpeg", 413),
    "gif-bomb": (gif_bomb(), "image/gif", 413),
    "executable-type": (PHOTO_JPEGS["coffee"], "application/x-msdownload", 415),
}
