"""The parity gate: an exported model must reproduce its PyTorch source before it is installed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.runtime.onnx_session import create_session

# fp32 graphs on a GPU run their matmuls in TF32 (ONNX Runtime's CUDA provider and TensorRT both default
# to it on Ampere and later): fp16's 10-bit mantissa with fp32 accumulation, so fp16's threshold
MIN_COSINE = {"fp32": 0.99999, "tf32": 0.999, "fp16": 0.999}
# where the gate runs the exported graphs: the CPU, or what a GPU deployment runs them on
PARITY_DEVICES = ("cpu", "cuda", "tensorrt")


def precision_on(device: str, fp16: bool) -> str:
    """The arithmetic the gate checks: fp16 graphs are fp16 anywhere, fp32 graphs are TF32 on a GPU."""
    if device not in PARITY_DEVICES:
        raise ValueError(f"parity device must be one of {PARITY_DEVICES}, not {device!r}")
    return "fp16" if fp16 else "fp32" if device == "cpu" else "tf32"


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
    device: str = "cpu"

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.threshold

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (f"{self.model} ({self.precision} on {self.device}): min cosine {self.min_cosine:.7f} over {self.rows} rows"
                f" (need >= {self.threshold}), max abs diff {self.max_abs_diff:.2e}: {verdict}")

    def as_dict(self) -> dict:
        return {"rows": self.rows, "min_cosine": self.min_cosine, "max_abs_diff": self.max_abs_diff,
                "threshold": self.threshold, "precision": self.precision, "device": self.device}


def compare_embeddings(model: str, reference: np.ndarray, candidate: np.ndarray, precision: str = "fp32",
                       device: str = "cpu") -> ParityReport:
    """Row-wise cosine between reference (PyTorch on the CPU) and candidate (ONNX on ``device``) outputs
    of the same inputs."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ParityError(f"{model}: output shape {candidate.shape} differs from PyTorch's {reference.shape}")
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = np.sum(reference * candidate, axis=1) / np.maximum(norms, 1e-30)
    return ParityReport(model, precision, len(reference), float(cosine.min()),
                        float(np.abs(reference - candidate).max()), MIN_COSINE[precision], device)


def require(report: ParityReport) -> ParityReport:
    if not report.passed:
        raise ParityError(f"parity gate refused the export: {report}")
    return report


def parity_session(path, device: str, tensorrt: dict[str, str] | None = None):
    """An exported graph in a session on the parity device: the CPU, CUDA, or TensorRT on CUDA with the
    deployment's TensorRT options; ProviderUnavailable where that provider does not run."""
    if device == "tensorrt":
        return create_session(path, "cuda", tensorrt=tensorrt)
    return create_session(path, "cuda" if device == "cuda" else "cpu")
