"""int8 CLIP for CPU serving (``--precision int8``): ONNX Runtime's dynamic quantization, gated on
fidelity against the fp32 graph of the same checkpoint.

Dynamic quantization (onnxruntime.quantization.quantize_dynamic): the MatMul weights become int8 per
output channel; activations are quantized per batch at run time, so no calibration set is needed and
what the gate sees is what serves. ONNX Runtime runs the int8 products with VNNI where the CPU has it
(AVX-512 VNNI, AVX-VNNI), where they are several times faster than fp32's.

The gate, on the fp32 graph (itself gated against PyTorch first) and the int8 one:
- embedding cosine over the tower's parity inputs and the retrieval set below: mean >= 0.99, min >= 0.98;
- top-10 agreement on a synthetic retrieval set: for each query, the share of the fp32 top 10 that the
  int8 top 10 keeps, averaged (>= 0.9). Images: flipped copies of corpus images searched among 160
  crops of the parity photos; text: made-up captions searched among the same corpus embedded by the fp32
  image tower (a text tower changes only the query).
A gate that fails installs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_MEAN_COSINE, MIN_COSINE, MIN_TOP10_AGREEMENT = 0.99, 0.98, 0.9
CORPUS, QUERIES, TOP_K = 160, 24, 10
SUBJECTS = ["a cat", "a dog", "a man", "a woman", "a red car", "a rocket", "a cup of coffee", "an astronaut", "a bird",
            "a tree", "two children", "a horse"]
SETTINGS = ["on a sofa", "in the snow", "at the beach", "in a kitchen", "on a street at night", "in a forest"]


@dataclass(frozen=True)
class Int8Report:
    model: str
    rows: int
    mean_cosine: float
    min_cosine: float
    top10_agreement: float
    queries: int

    @property
    def passed(self) -> bool:
        return (self.mean_cosine >= MIN_MEAN_COSINE and self.min_cosine >= MIN_COSINE
                and self.top10_agreement >= MIN_TOP10_AGREEMENT)

    def __str__(self) -> str:
        return (f"{self.model} (int8 vs fp32): cosine mean {self.mean_cosine:.5f} min {self.min_cosine:.5f} over {self.rows}"
                f" rows (need >= {MIN_MEAN_COSINE} / {MIN_COSINE}), top-{TOP_K} agreement {self.top10_agreement:.3f} over"
                f" {self.queries} queries (need >= {MIN_TOP10_AGREEMENT}): {'ok' if self.passed else 'FAILED'}")

    def as_dict(self) -> dict:
        return {"precision": "int8", "rows": self.rows, "mean_cosine": self.mean_cosine, "min_cosine": self.min_cosine,
                "top10_agreement": self.top10_agreement, "queries": self.queries,
                "thresholds": {"mean_cosine": MIN_MEAN_COSINE, "min_cosine": MIN_COSINE,
                               "top10_agreement": MIN_TOP10_AGREEMENT}}


def quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(fp32, int8, per_channel=True, weight_type=QuantType.QInt8)


def retrieval_images(photos: list[np.ndarray], side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(corpus, queries) uint8 (N, side, side, 3): random crops of the photos at several scales; each query
    a mirrored corpus image, shifted by a few pixels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    corpus = []
    for i in range(CORPUS):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        size = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crop = Image.fromarray(photo[top:top + size, left:left + size]).convert("RGB")
        corpus.append(np.asarray(crop.resize((side, side), Image.Resampling.BICUBIC)))
    picks = rng.choice(CORPUS, QUERIES, replace=False)
    queries = [np.roll(corpus[i][:, ::-1], int(rng.integers(-4, 5)), axis=1) for i in picks]
    return np.stack(corpus), np.ascontiguousarray(np.stack(queries))


def retrieval_texts() -> list[str]:
    return [f"a photo of {subject} {setting}" for subject in SUBJECTS for setting in SETTINGS][:QUERIES * 2]


def top_k_agreement(queries_a: np.ndarray, corpus_a: np.ndarray, queries_b: np.ndarray, corpus_b: np.ndarray,
                    k: int = TOP_K) -> float:
    """Mean over queries of |top-k under a ∩ top-k under b| / k (cosine: the vectors are normalised)."""
    top_a = np.argsort(-(queries_a @ corpus_a.T), axis=1)[:, :k]
    top_b = np.argsort(-(queries_b @ corpus_b.T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_a, top_b)]))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def int8_report(model: str, fp32: np.ndarray, int8: np.ndarray, agreement: float, queries: int) -> Int8Report:
    cos = cosines(fp32, int8)
    return Int8Report(model, len(cos), float(cos.mean()), float(cos.min()), agreement, queries)
