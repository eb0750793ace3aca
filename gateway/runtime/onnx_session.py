"""The one place ONNX Runtime sessions are made: providers, threads, options.

A session asked to run on CUDA that ONNX Runtime quietly put on the CPU (a CUDA provider library that
does not load, a CPU-only wheel) is refused with an error: a GPU deployment that silently runs on
the pod's CPUs is slower by orders of magnitude and looks healthy. ONNX Runtime's
``get_available_providers()`` only says which providers were compiled in; ``session.get_providers()``
says which one the session actually got.

ONNX Runtime's CPU memory arena is off: it keeps every buffer a run ever needed for the life of the
session, and BLIP's beam search needs large ones (keys/values per beam). Measured with the base models
in one process (bench/memory.py, docs/benchmarks.md): 3.6 GiB resident after a few caption batches with
the arena, 3.1-3.2 GiB without and 2.2 GiB once the idle captioner has trimmed the heap (the distinct
weights: 1.5 GiB), at the same speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import onnxruntime as ort

Device = Literal["cpu", "cuda"]


class ProviderUnavailable(RuntimeError):
    """The execution provider a session was asked for could not be created."""


def providers_for(device: Device, device_id: int = 0, tensorrt: dict[str, str] | None = None) -> list:
    """ONNX Runtime's provider list, the wanted one first. ``tensorrt``: TensorRT provider options
    (``trt_*``, as ONNX Runtime names them) to put TensorRT in front of CUDA; only on ``cuda``."""
    if device == "cuda":
        cuda = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        return [("TensorrtExecutionProvider", {"device_id": device_id, **tensorrt}), *cuda] if tensorrt is not None else cuda
    if tensorrt is not None:
        raise ValueError("TensorRT runs on a cuda device")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")


def triton_instance_device(args: dict) -> tuple[Device, int]:
    """The device Triton placed a python-backend model instance on (from ``initialize``'s args):
    a KIND_GPU instance must run on CUDA, or refuse to load."""
    return ("cuda" if args.get("model_instance_kind") == "GPU" else "cpu"), int(args.get("model_instance_device_id") or 0)


def create_session(path: Path | str, device: Device = "cpu", device_id: int = 0, threads: int = 0,
                   inter_op_threads: int = 1, tensorrt: dict[str, str] | None = None, cpu_arena: bool = False
                   ) -> ort.InferenceSession:
    """An InferenceSession for ``path`` on ``device``; ProviderUnavailable when that device's provider
    (TensorRT's, given ``tensorrt`` options) is not the one the session runs on. ``threads``: intra-op
    threads (0: ONNX Runtime's default, one per physical core of the machine, which on a shared node is
    rarely what you want); ``cpu_arena``: ONNX Runtime's CPU memory arena (off: see above)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = inter_op_threads
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = cpu_arena
    providers = providers_for(device, device_id, tensorrt)
    session = ort.InferenceSession(str(path), options, providers=providers)
    wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
    running = session.get_providers()
    if not running or running[0] != wanted:
        raise ProviderUnavailable(
            f"{Path(path).name}: asked for {wanted} but ONNX Runtime {ort.__version__} runs the session on {running}"
            f" (providers built in: {ort.get_available_providers()}); on a GPU host this is usually a CUDA major"
            " version mismatch between the onnxruntime-gpu wheel and the CUDA libraries in the image")
    return session
