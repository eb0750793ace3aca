"""The model runtime's pieces that need no exported model: the session factory and text padding."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from gateway.runtime.onnx_session import ProviderUnavailable, create_session, triton_instance_device
from gateway.runtime.text import TEXT_BUCKET, text_length


@pytest.fixture(scope="module")
def cast_model(tmp_path_factory):
    """A one-node graph: uint8 -> float32."""
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "cast",
                              [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    path = tmp_path_factory.mktemp("onnx") / "cast.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_cpu_sessions_run(cast_model):
    session = create_session(cast_model, threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    np.testing.assert_array_equal(session.run(None, {"x": np.array([1, 255], np.uint8)})[0], [1.0, 255.0])


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_a_session_asked_for_cuda_refuses_to_fall_back_to_the_cpu(cast_model):
    """The CPU onnxruntime wheel here has no CUDA provider: ONNX Runtime would quietly run on the CPU."""
    with pytest.raises(ProviderUnavailable, match="asked for CUDAExecutionProvider but ONNX Runtime .* runs the session on"):
        create_session(cast_model, device="cuda")


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_a_session_asked_for_tensorrt_refuses_to_fall_back(cast_model):
    """TensorRT comes first, CUDA behind it: a session without TensorRT's libraries would run on CUDA (or
    here on the CPU) under a TensorRT label."""
    with pytest.raises(ProviderUnavailable, match="asked for TensorrtExecutionProvider but ONNX Runtime"):
        create_session(cast_model, device="cuda", tensorrt={"trt_fp16_enable": "1"})
    with pytest.raises(ValueError, match="TensorRT runs on a cuda device"):
        create_session(cast_model, device="cpu", tensorrt={})


def test_triton_instances_on_gpus_ask_for_cuda():
    assert triton_instance_device({"model_instance_kind": "GPU", "model_instance_device_id": "1"}) == ("cuda", 1)
    assert triton_instance_device({"model_instance_kind": "CPU", "model_instance_device_id": "0"}) == ("cpu", 0)


@pytest.mark.parametrize("longest,padded", [(1, 16), (16, 16), (17, 32), (70, 77), (77, 77)])
def test_texts_are_padded_to_buckets_capped_at_the_context(longest, padded):
    assert text_length(longest, 77) == padded and (padded % TEXT_BUCKET == 0 or padded == 77)
