"""Triton python-backend model image_decode: encoded images (BYTES) -> the gateway's model inputs.

Copied by the export as ``image_decode/1/model.py`` with the model runtime beside it
(``1/gateway/runtime/``); gateway.runtime.tier_decode does the work. The products' sizes come from the
repository's own clip_image and blip_caption folders (their preprocess.json), read when the model
loads. The ensemble clip_image_bytes feeds ``clip_pixels`` to clip_image; the gateway asks this model
directly for the products an upload to be stored needs.

The dynamic batcher hands ``execute`` several requests: their files are decoded in one nvImageCodec
call. A request asks for the outputs it wants (all when it names none); ``record_pixels`` differ in
size from file to file, so a request that asks for them carries one file.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the runtime copied beside this file
from gateway.runtime.onnx_session import triton_instance_device
from gateway.runtime.preprocess import PixelSpec
from gateway.runtime.tier_decode import PRODUCTS, UNDECODABLE, ProductSpecs, TierDecoder


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        repository = Path(args["model_repository"]).parent
        blip = repository / "blip_caption" / "preprocess.json"
        specs = ProductSpecs(PixelSpec.load(repository / "clip_image" / "preprocess.json"),
                             PixelSpec.load(blip) if blip.exists() else None)
        self.outputs = [tensor["name"] for tensor in config["output"]]
        device, device_id = triton_instance_device(args)
        self.decoder = TierDecoder(specs, device, device_id, int(params.get("intra_op_num_threads", "0")))

    def _wanted(self, request):
        asked = [name for name in request.requested_output_names() if name in PRODUCTS]
        return tuple(asked or self.outputs)

    def execute(self, requests):
        files, owners, products = [], [], []
        responses = [None] * len(requests)
        for index, request in enumerate(requests):
            names = self._wanted(request)
            encoded = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
            if "record_pixels" in names and len(encoded) != 1:
                error = pb_utils.TritonError("record_pixels: one image per request")
                responses[index] = pb_utils.InferenceResponse(error=error)
                continue
            for data in encoded:
                files.append(bytes(data))
                owners.append(index)
                products.append(names)
        if not files:
            return responses
        try:
            results = self.decoder.decode(files, products)
        except Exception as exc:  # nvImageCodec's message is the useful part; every request gets it
            error = pb_utils.TritonError(f"image decoding failed: {exc}")
            return [r or pb_utils.InferenceResponse(error=error) for r in responses]
        per_request: dict[int, list] = {}
        for owner, result in zip(owners, results):
            per_request.setdefault(owner, []).append(result)
        for owner, items in per_request.items():
            failure = next((item for item in items if isinstance(item, str)), None)
            if failure is not None:
                responses[owner] = pb_utils.InferenceResponse(error=pb_utils.TritonError(failure))
                continue
            tensors = [self._tensor(name, [item[name] for item in items]) for name in items[0]]
            responses[owner] = pb_utils.InferenceResponse(output_tensors=tensors)
        return [r or pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{UNDECODABLE} no image given"))
                for r in responses]

    def _tensor(self, name, arrays):
        if self.decoder.on_gpu:  # stays on the device: clip_image reads it from there
            xp = self.decoder.xp
            return pb_utils.Tensor.from_dlpack(name, xp.ascontiguousarray(xp.stack(arrays)))
        return pb_utils.Tensor(name, np.ascontiguousarray(np.stack(arrays)))
