"""Triton python-backend model that runs the ONNX file beside it with onnxruntime.

Copied by the export as ``<model>/1/model.py`` (with the model runtime beside it, in
``1/gateway/runtime/``) for Triton builds without the onnxruntime backend. It is generic: input
and output names come from config.pbtxt. Triton's dynamic batcher hands ``execute`` several
requests at once; they are concatenated into one onnxruntime run and split back, so concurrent
requests share one forward pass as they would with the native backend.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the runtime copied beside this file
from gateway.runtime.onnx_session import create_session, triton_instance_device


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        device, device_id = triton_instance_device(args)
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = create_session(path, device, device_id, int(params.get("intra_op_num_threads", "0")))
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        batches = [[pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names]
                   for request in requests]
        sizes = [arrays[0].shape[0] for arrays in batches]
        feed = {name: np.concatenate([arrays[i] for arrays in batches]) if len(batches) > 1 else batches[0][i]
                for i, name in enumerate(self.input_names)}
        try:
            results = self.session.run(self.output_names, feed)
        except Exception as exc:  # onnxruntime's message is the useful part; every request gets it
            error = pb_utils.TritonError(f"onnxruntime failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            outputs = [pb_utils.Tensor(name, np.ascontiguousarray(result[start:start + size]))
                       for name, result in zip(self.output_names, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            start += size
        return responses
