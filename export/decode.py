"""Decoding on the inference tier: the python model image_decode (nvImageCodec) and the ensemble
clip_image_bytes (image_decode -> clip_image), gated on fidelity to the gateway's own decode.

Run after the CLIP export (and the BLIP one, when the gateway captions): the products' sizes come from
the repository. The gate decodes phone- and web-size JPEGs (baseline, progressive, EXIF-rotated,
CMYK, greyscale) both ways, as a search does: the gateway's (Pillow, reduced-scale decode, then
preprocess.to_pixels) and the tier's (gateway.runtime.tier_decode on this machine's CPU), embeds both
with the repository's clip_image, and installs nothing unless every embedding cosine is >= 0.999. It
reports the pixels' PSNR as well.

Why a python model on nvImageCodec rather than Triton's DALI backend: the DALI backend is not in the
tritonserver these tests run (the nvidia-pytriton wheel's has the python backend only), so a DALI
pipeline could not be tested here, while this model runs the same code on CPU in the tests and on the
GPU in production; and the wheels it needs are small: nvidia-nvimgcodec-cu12 32 MB, nvidia-nvjpeg-cu12
5 MB, cupy-cuda12x 135 MB (the GPU resize), against 425 MB for nvidia-dali-cuda120 (PyPI, 2026-12).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.runtime.onnx_session import create_session
from gateway.runtime.preprocess import PixelSpec, Resolution, decode_image, to_pixels
from gateway.runtime.tier_decode import ProductSpecs, TierDecoder

from .parity import ParityError
from .progress import say, step
from .triton_repo import EnsembleStep, ModelSpec, StagedModel, Tensor, TritonOptions

DECODE_MODEL, ENSEMBLE = "image_decode", "clip_image_bytes"
MIN_COSINE = 0.999
GATE_SIZES = {"12mp": (4032, 3024), "2mp": (1800, 1125)}
MODEL_SOURCE = Path(__file__).with_name("triton_decode_model.py")


@dataclass(frozen=True)
class DecodeReport:
    files: int
    min_cosine: float
    mean_cosine: float
    min_psnr_db: float
    threshold: float = MIN_COSINE

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.threshold

    def __str__(self) -> str:
        return (f"{DECODE_MODEL} vs the gateway's decode: embedding cosine min {self.min_cosine:.6f} mean"
                f" {self.mean_cosine:.6f} over {self.files} JPEGs (need >= {self.threshold}), pixels PSNR >="
                f" {self.min_psnr_db:.1f} dB: {'ok' if self.passed else 'FAILED'}")

    def as_dict(self) -> dict:
        return {"files": self.files, "min_cosine": self.min_cosine, "mean_cosine": self.mean_cosine,
                "min_psnr_db": self.min_psnr_db, "threshold": self.threshold}


def gate_jpegs() -> dict[str, bytes]:
    """Phone- and web-size JPEGs of the export's parity photos, in the variants users send."""
    from PIL import Image

    from .clip import parity_photo_bytes

    tiles = [Image.open(io.BytesIO(p)).convert("RGB") for p in parity_photo_bytes()]
    files = {}
    for size_name, (width, height) in GATE_SIZES.items():
        canvas = Image.new("RGB", (width, height))
        for i, (x, y) in enumerate((x, y) for y in range(0, height, 500) for x in range(0, width, 500)):
            canvas.paste(tiles[i % len(tiles)], (x, y))
        exif = Image.Exif()
        exif[0x0112] = 6  # stored landscape, shown portrait
        variants: dict[str, dict] = {"baseline": {}, "progressive": {"progressive": True},
                                     "exif-rotated": {"exif": exif.tobytes()}}
        for variant, options in variants.items():
            files[f"{size_name}-{variant}"] = _jpeg(canvas, **options)
        files[f"{size_name}-cmyk"] = _jpeg(canvas.convert("CMYK"))
        files[f"{size_name}-grey"] = _jpeg(canvas.convert("L"))
    return files


def _jpeg(image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def gateway_pixels(data: bytes, spec: PixelSpec) -> np.ndarray:
    """CLIP's pixels as the gateway makes them for a search (gateway.core.images.prepare)."""
    return to_pixels(decode_image(data, at_least=Resolution.for_spec(spec)), spec)


def check_fidelity(repository: Path, decoder: TierDecoder, files: dict[str, bytes]) -> DecodeReport:
    spec = decoder.specs.clip
    ours = decoder.decode(list(files.values()), [("clip_pixels",)] * len(files))
    failed = [name for name, result in zip(files, ours) if isinstance(result, str)]
    if failed:
        raise ParityError(f"{DECODE_MODEL} could not decode {', '.join(failed)}: {ours[list(files).index(failed[0])]}")
    tier = np.stack([result["clip_pixels"] for result in ours if isinstance(result, dict)])
    gateway = np.stack([gateway_pixels(data, spec) for data in files.values()])
    session = create_session(repository / "clip_image" / "1" / "model.onnx")

    def embed(pixels: np.ndarray) -> np.ndarray:
        return np.concatenate([session.run(None, {"pixels": pixels[i:i + 4]})[0]
                               for i in range(0, len(pixels), 4)]).astype(np.float64)

    a, b = embed(tier), embed(gateway)
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return DecodeReport(len(files), float(cosine.min()), float(cosine.mean()),
                        min(psnr(x, y) for x, y in zip(tier, gateway)))


def export_decode(repository: Path, serving: TritonOptions, files: dict[str, bytes] | None = None) -> dict:
    """image_decode and clip_image_bytes into ``repository`` (which must hold clip_image), gated on
    fidelity (``files``: the gate's JPEGs, gate_jpegs() by default). Returns the gate's figures."""
    repository = Path(repository)
    if not (repository / "clip_image" / "preprocess.json").is_file():
        raise ParityError(f"{repository} has no clip_image: export CLIP first (python -m export clip)")
    blip_spec = repository / "blip_caption" / "preprocess.json"
    specs = ProductSpecs(PixelSpec.load(repository / "clip_image" / "preprocess.json"),
                         PixelSpec.load(blip_spec) if blip_spec.is_file() else None)
    with step(f"[{DECODE_MODEL}] fidelity to the gateway's decode"):
        report = check_fidelity(repository, TierDecoder(specs), files or gate_jpegs())
        say(f"[{DECODE_MODEL}] {report}")
        if not report.passed:
            raise ParityError(f"the decode gate refused the export: {report}")
    clip = specs.clip
    outputs = [Tensor("clip_pixels", "uint8", (clip.height, clip.width, 3))]
    if specs.blip is not None:
        outputs.append(Tensor("blip_pixels", "uint8", (specs.blip.height, specs.blip.width, 3)))
    outputs.append(Tensor("record_pixels", "uint8", (-1, -1, 3)))
    image = Tensor("image", "bytes", (1,))
    decode_spec = ModelSpec(DECODE_MODEL, inputs=(image,), outputs=tuple(outputs), python_model=MODEL_SOURCE,
                            python_only=True)
    dim = _embedding_dim(repository)
    ensemble_spec = ModelSpec(ENSEMBLE, inputs=(image,), outputs=(Tensor("embeddings", "float32", (dim,)),), ensemble=(
        EnsembleStep(DECODE_MODEL, {"image": "image"}, {"clip_pixels": "decoded_pixels"}),
        EnsembleStep("clip_image", {"pixels": "decoded_pixels"}, {"embeddings": "embeddings"})))
    manifest = {"request": {"source": "nvimgcodec", "products": [t.name for t in outputs]}, "fidelity": report.as_dict()}
    for spec in (decode_spec, ensemble_spec):
        staged = StagedModel(repository, spec)
        try:
            final = staged.install(serving, manifest)
        finally:
            staged.discard()
        say(f"[{spec.name}] installed {final}")
    return {DECODE_MODEL: report.as_dict()}


def _embedding_dim(repository: Path) -> int:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = text_format.Parse((repository / "clip_image" / "config.pbtxt").read_text(), mc.ModelConfig())
    return int(config.output[0].dims[0])
