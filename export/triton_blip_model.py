"""Triton python-backend model blip_caption: uint8 pixels (+ optional prompt and settings) -> caption.

Copied by the export as ``blip_caption/1/model.py`` with the model runtime beside it
(``1/gateway/runtime/``). The
dynamic batcher hands ``execute`` several requests: every image goes through the vision encoder in
one run, then requests that share a prompt and settings share every decoder step.

The ONNX sessions run inside this process rather than as separate Triton models called through
BLS: a BLS call per decoder step would move every sequence's cross-attention keys and values
(42 MB per image for BLIP-base) through shared memory at each token.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the runtime copied beside this file
from gateway.runtime.blip_decode import DECODE_MEMORY_MB, BlipDecoder, CaptionText, GenerationSettings, caption_requests
from gateway.runtime.onnx_session import triton_instance_device

OPTIONAL = {"max_new_tokens": int, "num_beams": int, "repetition_penalty": float}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        folder = args["model_repository"]
        device, device_id = triton_instance_device(args)
        self.decoder = BlipDecoder.from_folder(folder, int(params.get("intra_op_num_threads", "0")), device, device_id,
                                               int(params.get("decode_memory_mb", DECODE_MEMORY_MB)))
        self.text = CaptionText(folder)
        with open(os.path.join(folder, "blip.json")) as fh:
            self.defaults = json.load(fh)["defaults"]

    def _request_settings(self, request):
        values = dict(self.defaults)
        for name, cast in OPTIONAL.items():
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                values[name] = cast(tensor.as_numpy().reshape(-1)[0])
        prompt = pb_utils.get_input_tensor_by_name(request, "prompt")
        text = prompt.as_numpy().reshape(-1)[0].decode("utf-8") if prompt is not None else ""
        return text, GenerationSettings(**values)

    def execute(self, requests):
        responses, accepted = [None] * len(requests), []
        for index, request in enumerate(requests):
            try:
                prompt, settings = self._request_settings(request)
            except (ValueError, UnicodeDecodeError) as exc:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                continue
            pixels = pb_utils.get_input_tensor_by_name(request, "pixels").as_numpy()
            accepted.append((index, (pixels, prompt, settings)))
        if not accepted:
            return responses
        try:
            captions = caption_requests(self.decoder, self.text, [item for _, item in accepted])
        except Exception as exc:  # onnxruntime's message is the useful part
            error = pb_utils.TritonError(f"captioning failed: {exc}")
            return [r or pb_utils.InferenceResponse(error=error) for r in responses]
        for (index, _), texts in zip(accepted, captions):
            chunk = np.array([t.encode("utf-8") for t in texts], dtype=object).reshape(-1, 1)
            responses[index] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("caption", chunk)])
        return responses
