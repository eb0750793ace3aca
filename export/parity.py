"""The parity gate: an exported model must reproduce its PyTorch source before it is installed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_COSINE = {"fp32": 0.99999, "fp16": 0.999}


class ParityError(RuntimeError):
    """Raised when an export does not match PyTorch; the message names the model and the figures."""


@dataclass(frozen=True)
class ParityReport:
    model: str
    precision: str
    rows: int
    min_cosine: float
    max_abs_diff: float
    threshold: float

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.threshold

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (f"{self.model} ({self.precision}): min cosine {self.min_cosine:.7f} over {self.rows} rows"
                f" (need >= {self.threshold}), max abs diff {self.max_abs_diff:.2e}: {verdict}")

    def as_dict(self) -> dict:
        return {"rows": self.rows, "min_cosine": self.min_cosine, "max_abs_diff": self.max_abs_diff,
                "threshold": self.threshold, "precision": self.precision}


def compare_embeddings(model: str, reference: np.ndarray, candidate: np.ndarray, precision: str = "fp32") -> ParityReport:
    """Row-wise cosine between reference (PyTorch) and candidate (ONNX) outputs of the same inputs."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ParityError(f"{model}: output shape {candidate.shape} differs from PyTorch's {reference.shape}")
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = np.sum(reference * candidate, axis=1) / np.maximum(norms, 1e-30)
    return ParityReport(model, precision, len(reference), float(cosine.min()),
                        float(np.abs(reference - candidate).max()), MIN_COSINE[precision])


def require(report: ParityReport) -> ParityReport:
    if not report.passed:
        raise ParityError(f"parity gate refused the export: {report}")
    return report
