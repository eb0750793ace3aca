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
            try:
                results.append(self._products(image, wanted))
            except ValueError as exc:
                results.append(f"{UNDECODABLE} {exc}")
        return results

    def _products(self, image, wanted: tuple[str, ...]) -> dict:
        pixels = self.xp.asarray(image) if self.on_gpu else np.asarray(image)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.shape[2] == 1:
            pixels = self.xp.repeat(pixels, 3, axis=2)
        size = (pixels.shape[1], pixels.shape[0])
        results = {}
        for product in wanted:
            factor = int(self.specs.needs(product).reduction(size))
            spec = {"clip_pixels": self.specs.clip, "blip_pixels": self.specs.blip}.get(product)
            if self.on_gpu:
                reduced = array_resize.box_reduce(self.xp, pixels, factor)
                results[product] = reduced if spec is None else array_resize.to_pixels(self.xp, reduced, spec)
            else:
                reduced_image = Image.fromarray(pixels)
                reduced_image = reduced_image.reduce(factor) if factor >= 2 else reduced_image
                results[product] = np.asarray(reduced_image) if spec is None else to_pixels(reduced_image, spec)
        return results
