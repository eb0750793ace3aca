"""Encoded images -> the model inputs the gateway would make from them, on the inference tier.

The Triton python model ``image_decode`` (export/triton_decode_model.py) runs this. nvImageCodec
decodes a whole batch at once (nvJPEG, with the GPU's hardware JPEG decoder where there is one; its
libjpeg-turbo decoder on CPU instances) and applies EXIF orientation. Each product is then made as the
gateway makes it from a reduced image (gateway.core.images): a box reduction to twice what the
product needs, then preprocess.to_pixels. On CPU that is Pillow; on a GPU the same steps run on the
device (gateway.runtime.array_resize with CuPy), so a decoded photo never leaves it.

Products, each made from the decoded image independently of which others a request asks for (so an
upload's CLIP pixels are the same whether it is searched or indexed):
- ``clip_pixels`` and ``blip_pixels``: the models' inputs (preprocess.json of clip_image, blip_caption);
- ``record_pixels``: the image reduced to preprocess.RECORD_NEEDS, for the gateway's perceptual hash
  and thumbnail (a few hundred pixels a side).

The gateway sends only what preprocess.Header.plain_jpeg accepts; PNG, WebP, colour-managed JPEGs
stay with its own decoder. A file the decoder cannot read answers the request with an error whose
message starts with UNDECODABLE, which the gateway maps to its 400 invalid_image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import array_resize
from .preprocess import RECORD_NEEDS, PixelSpec, Resolution, to_pixels

PRODUCTS = ("clip_pixels", "blip_pixels", "record_pixels")
UNDECODABLE = "undecodable image:"


@dataclass(frozen=True)
class ProductSpecs:
    clip: PixelSpec
    blip: PixelSpec | None  # None: the repository has no BLIP

    def needs(self, product: str) -> Resolution:
        if product == "clip_pixels":
            return Resolution.for_spec(self.clip)
        if product == "blip_pixels":
            if self.blip is None:
                raise ValueError("blip_pixels asked for, but the repository has no blip_caption")
            return Resolution.for_spec(self.blip)
        return RECORD_NEEDS

    def spec(self, product: str) -> PixelSpec | None:
        """The model input a product is (None: record_pixels, a reduced image of no fixed size)."""
        return {"clip_pixels": self.clip, "blip_pixels": self.blip}.get(product)


def pillow_products(pixels: np.ndarray, specs: ProductSpecs, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The products of a decoded (H, W, 3) uint8 image on the CPU: Pillow's box reduction and resize."""
    image = Image.fromarray(pixels)
    results = {}
    for product in wanted:
        factor = int(specs.needs(product).reduction(image.size))
        reduced = image.reduce(factor) if factor >= 2 else image
        spec = specs.spec(product)
        results[product] = np.asarray(reduced) if spec is None else to_pixels(reduced, spec)
    return results


def array_products(xp, pixels, specs: ProductSpecs, wanted: tuple[str, ...]) -> dict:
    """The same with an array module (CuPy on a GPU: the image stays on the device; numpy in the tests)."""
    results = {}
    for product in wanted:
        factor = int(specs.needs(product).reduction((pixels.shape[1], pixels.shape[0])))
        reduced = array_resize.box_reduce(xp, pixels, factor)
        spec = specs.spec(product)
        results[product] = reduced if spec is None else array_resize.to_pixels(xp, reduced, spec)
    return results


class TierDecoder:
    """Decodes batches with nvImageCodec on the device given (``cuda`` with its id, or ``cpu``)."""

    def __init__(self, specs: ProductSpecs, device: str = "cpu", device_id: int = 0, cpu_threads: int = 0):
        from nvidia import nvimgcodec

        self.specs, self.on_gpu = specs, device == "cuda"
        self.params = nvimgcodec.DecodeParams(apply_exif_orientation=True, color_spec=nvimgcodec.ColorSpec.SRGB)
        if self.on_gpu:
            import cupy

            self.xp = cupy
            self.decoder = nvimgcodec.Decoder(device_id=device_id, max_num_cpu_threads=cpu_threads)
        else:
            self.xp = np
            self.decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY, max_num_cpu_threads=cpu_threads,
                                              backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)])

    def decode(self, files: list[bytes], products: list[tuple[str, ...]]) -> list[dict | str]:
        """Per file, its products (arrays: numpy on CPU, CuPy on a GPU) or why it could not be decoded."""
        decoded = self.decoder.decode(files, params=self.params)
        results: list[dict | str] = []
        for image, wanted in zip(decoded, products):
            if image is None:
                results.append(f"{UNDECODABLE} image data is corrupt or truncated")
                continue
            pixels = self.xp.asarray(image)
            if pixels.ndim == 2 or pixels.shape[2] == 1:  # greyscale, should the decoder keep one channel
                pixels = self.xp.repeat(pixels.reshape(pixels.shape[0], pixels.shape[1], 1), 3, axis=2)
            try:
                results.append(array_products(self.xp, pixels, self.specs, wanted) if self.on_gpu
                               else pillow_products(pixels, self.specs, wanted))
            except ValueError as exc:
                results.append(f"{UNDECODABLE} {exc}")
        return results
