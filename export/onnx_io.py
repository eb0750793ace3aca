"""Writing ONNX files: torch export, fp16 conversion, checks.

Export goes through torch's TorchScript exporter (``dynamo=False``): deprecated in favour of the
torch.export-based one, but for these towers it is ~3x faster to export, needs no onnxscript, and
gives graphs within 2e-7 of PyTorch. Switching is one argument once the dynamo path is as good.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

OPSET = 17


def export_module(module, example_inputs: tuple, path: Path, input_names: list[str], output_names: list[str],
                  dynamic_axes: dict[str, dict[int, str]]) -> Path:
    """torch.onnx.export through TorchScript (fast and exact for these towers), then a checker pass."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: expected
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: see the module docstring
        warnings.filterwarnings("ignore", message=".*advanced indexing.*")  # CLIP's EOS gather: indices >= 0
        torch.onnx.export(module, example_inputs, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    onnx.checker.check_model(str(path), full_check=False)
    return path


def save_gather_rows(path: Path, count: int) -> Path:
    """A graph that takes rows ``rows`` (int64, any length) of ``count`` float32 tensors of any 4-d
    shape: x_i -> y_i = x_i[rows]. Decode loops use it to pick rows of tensors kept on the device."""
    from onnx import TensorProto, helper

    shape = ["n", "a", "b", "c"]
    graph = helper.make_graph(
        [helper.make_node("Gather", [f"x_{i}", "rows"], [f"y_{i}"], axis=0) for i in range(count)], "gather_rows",
        [helper.make_tensor_value_info("rows", TensorProto.INT64, ["rows"]),
         *(helper.make_tensor_value_info(f"x_{i}", TensorProto.FLOAT, shape) for i in range(count))],
        [helper.make_tensor_value_info(f"y_{i}", TensorProto.FLOAT, ["rows", *shape[1:]]) for i in range(count)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)  # opset 17's IR
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def convert_to_fp16(path: Path) -> Path:
    """Weights and activations in fp16, inputs and outputs unchanged (uint8 pixels, fp32 embeddings)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(path))
    return path


def run_in_batches(session: ort.InferenceSession, feed: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    """First output of ``session`` over ``feed`` in slices of ``batch_size`` rows (checks the dynamic batch axis)."""
    rows = len(next(iter(feed.values())))
    parts = [session.run(None, {k: v[i:i + batch_size] for k, v in feed.items()})[0] for i in range(0, rows, batch_size)]
    return np.concatenate(parts)


def megabytes(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6
