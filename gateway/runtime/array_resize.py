"""Resizing as preprocess.to_pixels does it, on arrays of any array module with numpy's interface
(numpy here, CuPy on a GPU): the inference tier resizes decoded images where they were decoded.

Pillow's resize is separable: each output pixel is a weighted sum of the input pixels under a
filter stretched by the scale (antialiasing when shrinking). ``resize_weights`` computes Pillow's
weights (its precompute_coeffs: the same support, centres and normalisation), so a resize is two
matrix products, one per axis, rounded to 8 bits between the two as Pillow rounds its intermediate
image. Pillow works in fixed point and rounds half up, these products in float32 and to even, so a
pixel may differ from Pillow's by one level (about 1 value in 10,000 does: tests/unit/test_tier_decode.py).
``box_reduce`` is Pillow's Image.reduce: the mean of factor x factor blocks (the last partial block
dropped rather than averaged).
"""

from __future__ import annotations

import numpy as np

from .preprocess import PixelSpec

BICUBIC, BILINEAR = 3, 2
SUPPORT = {BICUBIC: 2.0, BILINEAR: 1.0}


def _filter(kind: int, x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    if kind == BILINEAR:
        return np.where(x < 1, 1 - x, 0.0)
    a = -0.5  # Pillow's bicubic
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def resize_weights(in_size: int, out_size: int, kind: int = BICUBIC, window: slice = slice(None)) -> np.ndarray:
    """(outputs, in_size) float32: the weights of each output pixel in ``window`` of an ``out_size``
    resize, as Pillow computes them."""
    if kind not in SUPPORT:
        raise ValueError(f"resampling filter {kind} is not supported here (bicubic: 3, bilinear: 2)")
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = SUPPORT[kind] * filterscale
    outputs = range(out_size)[window]
    weights = np.zeros((len(outputs), in_size), np.float64)
    for row, i in enumerate(outputs):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        taps = _filter(kind, (np.arange(lo, hi) - centre + 0.5) / filterscale)
        total = taps.sum()
        weights[row, lo:hi] = taps / total if total else taps
    return weights.astype(np.float32)


def box_reduce(xp, image, factor: int):
    """(H, W, C) uint8 -> (H // factor, W // factor, C) uint8, each pixel the rounded mean of a block."""
    if factor < 2:
        return image
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor, image.shape[2])
    sums = blocks.sum(axis=3, dtype=xp.uint32).sum(axis=1, dtype=xp.uint32)
    area = factor * factor
    return ((sums + area // 2) // area).astype(xp.uint8)


def resize(xp, image, height: int, width: int, kind: int = BICUBIC, rows: slice = slice(None), cols: slice = slice(None)):
    """(H, W, C) uint8 -> the ``rows`` x ``cols`` window of the (height, width, C) resize, uint8."""
    across = xp.asarray(resize_weights(image.shape[1], width, kind, cols))  # (w', W)
    down = xp.asarray(resize_weights(image.shape[0], height, kind, rows))  # (h', H)
    h, _, channels = image.shape
    narrowed = xp.matmul(image.astype(xp.float32).transpose(0, 2, 1), across.T)  # (H, C, w')
    narrowed = xp.clip(xp.rint(narrowed), 0, 255)  # Pillow's 8-bit image between its two passes
    result = (down @ narrowed.reshape(h, -1)).reshape(len(down), channels, -1).transpose(0, 2, 1)  # (h', w', C)
    return xp.ascontiguousarray(xp.clip(xp.rint(result), 0, 255).astype(xp.uint8))


def to_pixels(xp, image, spec: PixelSpec):
    """preprocess.to_pixels on an (H, W, 3) uint8 array: BLIP-style straight resize, or CLIP-style shortest
    side to spec.shortest_edge and centre crop (the crop's rows and columns only are computed)."""
    if spec.shortest_edge is None:
        return resize(xp, image, spec.height, spec.width, spec.resample)
    height, width = image.shape[:2]
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(spec.shortest_edge * long / short)
    new_w, new_h = (spec.shortest_edge, new_long) if width <= height else (new_long, spec.shortest_edge)
    top, left = (new_h - spec.height) // 2, (new_w - spec.width) // 2
    if top < 0 or left < 0:
        raise ValueError("crop larger than the resized image: decode such images in the gateway")
    return resize(xp, image, new_h, new_w, spec.resample, slice(top, top + spec.height), slice(left, left + spec.width))
