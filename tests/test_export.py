"""CLIP export: ONNX towers against PyTorch, repository layout, Triton configs, the parity gate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from transformers import AutoTokenizer, CLIPModel
from tritonclient.grpc import model_config_pb2 as mc

import export.__main__ as export_cli
import export.clip as clip_export
from export.clip import export_clip
from export.random_checkpoints import build_clip
from export.triton_repo import ModelSpec, Tensor, TritonOptions, configured_tensorrt_options, render_config, tensorrt_options
from gateway.runtime.preprocess import PixelSpec, preprocess
from tests.support.images import photo_bytes

pytestmark = pytest.mark.integration


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def cosine_rows(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_tokenizer_has_openai_clip_ids(clip_checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(clip_checkpoint)
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = tokenizer("man in red jacket", padding="max_length", max_length=77)["input_ids"]
    assert len(padded) == 77 and padded[-1] == 49407


def test_repository_layout(model_repository):
    for name in ("clip_image", "clip_text"):
        folder = model_repository / name
        assert (folder / "config.pbtxt").exists() and (folder / "1" / "model.onnx").exists()
        assert (folder / "1" / "model.py").exists()  # python flavour
        manifest = json.loads((folder / "export.json").read_text())
        assert manifest["parity"]["min_cosine"] >= 0.99999 and manifest["parity"]["rows"] >= 5
    assert PixelSpec.load(model_repository / "clip_image" / "preprocess.json").height == 32
    # the gateway tokenizes from the repository alone: no hub, no checkpoint folder
    tokenizer = AutoTokenizer.from_pretrained(model_repository / "clip_text")
    assert tokenizer("a photo of a cat")["input_ids"][:3] == [49406, 320, 1125]
    assert not [p for p in model_repository.parent.iterdir() if p.name.startswith(".export-")]


def test_onnx_towers_match_pytorch_on_fresh_inputs(clip_checkpoint, model_repository):
    model = CLIPModel.from_pretrained(clip_checkpoint).eval()
    spec = PixelSpec.load(model_repository / "clip_image" / "preprocess.json")
    pixels = np.stack([preprocess(photo_bytes(n, "JPEG"), spec) for n in ("horse", "coins", "hubble_deep_field")])
    image_onnx = session(model_repository / "clip_image" / "1" / "model.onnx")
    got = image_onnx.run(None, {"pixels": pixels})[0]
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - torch.tensor(spec.image_mean).view(1, 3, 1, 1)) \
        / torch.tensor(spec.image_std).view(1, 3, 1, 1)
    with torch.inference_mode():
        want = torch.nn.functional.normalize(model.get_image_features(pixel_values=x).pooler_output, dim=-1).numpy()
    assert cosine_rows(got, want).min() > 0.99999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # the batch axis is dynamic and rows do not interact
    np.testing.assert_allclose(image_onnx.run(None, {"pixels": pixels[1:2]})[0][0], got[1], atol=1e-5)

    tokenizer = AutoTokenizer.from_pretrained(model_repository / "clip_text")
    tokens = tokenizer(["a dog on a beach", "red car", "🚲"], padding="max_length", max_length=77, return_tensors="np")
    feed = {"input_ids": tokens["input_ids"].astype(np.int64), "attention_mask": tokens["attention_mask"].astype(np.int64)}
    got = session(model_repository / "clip_text" / "1" / "model.onnx").run(None, feed)[0]
    with torch.inference_mode():
        features = model.get_text_features(input_ids=torch.from_numpy(feed["input_ids"]),
                                           attention_mask=torch.from_numpy(feed["attention_mask"])).pooler_output
    assert cosine_rows(got, torch.nn.functional.normalize(features, dim=-1).numpy()).min() > 0.99999


def parse(config_text: str) -> mc.ModelConfig:
    return text_format.Parse(config_text, mc.ModelConfig())


def test_configs_parse_as_triton_model_configs(model_repository):
    config = parse((model_repository / "clip_image" / "config.pbtxt").read_text())
    assert config.backend == "python" and config.max_batch_size == 16
    assert list(config.input[0].dims) == [32, 32, 3] and config.input[0].data_type == mc.TYPE_UINT8
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert config.dynamic_batching.max_queue_delay_microseconds == 30000
    text = parse((model_repository / "clip_text" / "config.pbtxt").read_text())
    assert [i.name for i in text.input] == ["input_ids", "attention_mask"] and list(text.input[0].dims) == [-1]
    assert json.loads((model_repository / "clip_text" / "tokenizer_config.json").read_text())["model_max_length"] == 77


def test_text_embeddings_do_not_depend_on_the_padded_length(model_repository):
    """The gateway pads queries to a multiple of 16 tokens, not to 77: same embeddings, less work."""
    from gateway.runtime.text import TextTokenizer

    texts = ["a dog on a beach", "a very long caption that keeps going " * 3, "🚲", ""]
    full = AutoTokenizer.from_pretrained(model_repository / "clip_text")(
        texts, padding="max_length", max_length=77, truncation=True, return_tensors="np")
    clip_text = session(model_repository / "clip_text" / "1" / "model.onnx")
    want = clip_text.run(None, {"input_ids": full["input_ids"].astype(np.int64),
                                "attention_mask": full["attention_mask"].astype(np.int64)})[0]
    tokenize = TextTokenizer.from_folder(model_repository / "clip_text")
    for text, row in zip(texts, want):
        ids, mask = tokenize([text])
        assert ids.shape[1] % 16 == 0 and ids.shape[1] < 77
        np.testing.assert_allclose(clip_text.run(None, {"input_ids": ids, "attention_mask": mask})[0][0], row, atol=1e-5)
    merged = tokenize.merge([tokenize([t]) for t in texts])
    assert merged[0].shape == (4, 32)
    np.testing.assert_allclose(clip_text.run(None, dict(zip(("input_ids", "attention_mask"), merged)))[0], want, atol=1e-5)


def test_native_flavour_config_for_gpus():
    spec = ModelSpec("clip_image", (Tensor("pixels", "uint8", (224, 224, 3)),), (Tensor("embeddings", "float32", (512,)),))
    serving = TritonOptions(flavour="onnxruntime", max_batch_size=64, instances=2, tensorrt=True, fp16=True)
    text = render_config(spec, serving)
    config = parse(text)
    assert config.backend == "onnxruntime" and config.max_batch_size == 64
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU and config.instance_group[0].count == 2
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16, 32, 64]
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert not config.parameters  # python-flavour settings stay out of native configs
    # the parity gate and the GPU check build TensorRT from the same options Triton reads from the config
    assert configured_tensorrt_options(text) == tensorrt_options(spec, serving, "/trt-cache/clip_image")
    assert configured_tensorrt_options(text)["trt_fp16_enable"] == "1"


@pytest.mark.filterwarnings("ignore:Specified provider")
@pytest.mark.parametrize("family,device,wanted", [("clip", "tensorrt", "TensorrtExecutionProvider"),
                                                  ("clip", "cuda", "CUDAExecutionProvider"),
                                                  ("blip", "cuda", "CUDAExecutionProvider")])
def test_a_parity_gate_on_a_gpu_that_is_not_here_refuses_the_export(tmp_path, clip_checkpoint, blip_checkpoint, capsys,
                                                                     family, device, wanted):
    """The gate on the serving device (a GPU host's export): where that provider does not run, the export
    fails naming it and installs nothing, rather than passing on the CPU."""
    checkpoint = clip_checkpoint if family == "clip" else blip_checkpoint
    gpu = ["--fp16", "--tensorrt"] if family == "clip" else []
    repo = tmp_path / "repo"
    assert export_cli.main([family, "--model", str(checkpoint), "--repository", str(repo), *gpu,
                            "--parity-device", device]) == 1
    assert f"asked for {wanted} but ONNX Runtime" in capsys.readouterr().err
    assert not repo.exists() or not [p for p in repo.iterdir()]


@pytest.mark.parametrize("flags", [["--parity-device", "tensorrt"], ["--parity-device", "cuda", "--cpu"]])
def test_a_parity_device_the_deployment_does_not_use_is_refused(tmp_path, clip_checkpoint, flags):
    with pytest.raises(SystemExit) as exited:
        export_cli.main(["clip", "--model", str(clip_checkpoint), "--repository", str(tmp_path / "repo"), *flags])
    assert exited.value.code == 2 and not (tmp_path / "repo").exists()


def test_rerun_is_up_to_date_and_force_reexports(tmp_path, clip_checkpoint):
    serving = TritonOptions(flavour="python", gpu=False)
    assert export_clip(str(clip_checkpoint), tmp_path / "repo", serving)
    onnx_path = tmp_path / "repo" / "clip_image" / "1" / "model.onnx"
    stamp = onnx_path.stat().st_mtime_ns
    assert export_clip(str(clip_checkpoint), tmp_path / "repo", serving) == {}  # nothing to do
    assert onnx_path.stat().st_mtime_ns == stamp
    # other serving options are a different request: re-exported
    assert export_clip(str(clip_checkpoint), tmp_path / "repo", TritonOptions(flavour="python", gpu=False, max_batch_size=8))
    assert "max_batch_size: 8" in (tmp_path / "repo" / "clip_image" / "config.pbtxt").read_text()
    assert export_clip(str(clip_checkpoint), tmp_path / "repo", serving, force=True)
    assert onnx_path.stat().st_mtime_ns != stamp


def test_fp16_export_passes_its_gate_and_keeps_io_types(tmp_path, clip_checkpoint):
    reports = export_clip(str(clip_checkpoint), tmp_path / "repo", TritonOptions(flavour="onnxruntime", fp16=True))
    assert reports["clip_image"]["precision"] == "fp16" and reports["clip_image"]["min_cosine"] >= 0.999
    fp16 = session(tmp_path / "repo" / "clip_text" / "1" / "model.onnx")
    assert [i.type for i in fp16.get_inputs()] == ["tensor(int64)", "tensor(int64)"]
    assert fp16.get_outputs()[0].type == "tensor(float)"
    image = session(tmp_path / "repo" / "clip_image" / "1" / "model.onnx")
    assert image.get_inputs()[0].type == "tensor(uint8)"
    assert not (tmp_path / "repo" / "clip_image" / "1" / "model.py").exists()  # native flavour


def test_parity_failure_exits_nonzero_and_keeps_the_installed_model(tmp_path, clip_checkpoint, monkeypatch, capsys):
    """An exporter that produced the wrong graph (here: another model's weights) is refused."""
    repo = tmp_path / "repo"
    args = ["clip", "--model", str(clip_checkpoint), "--repository", str(repo), "--flavour", "python", "--cpu"]
    assert export_cli.main(args) == 0
    installed = (repo / "clip_image" / "1" / "model.onnx").read_bytes()

    wrong = CLIPModel.from_pretrained(build_clip(tmp_path / "other", size="tiny", seed=1)).eval()
    real_towers = clip_export._towers
    monkeypatch.setattr(clip_export, "_towers", lambda model, spec, family: real_towers(wrong, spec, family))
    assert export_cli.main(args + ["--force"]) == 1
    message = capsys.readouterr().err
    assert "parity gate refused" in message and "clip_image (fp32 on cpu): min cosine" in message
    assert (repo / "clip_image" / "1" / "model.onnx").read_bytes() == installed
    assert sorted(os.listdir(tmp_path)) == ["other", "repo"]
    assert sorted(os.listdir(repo)) == ["clip_image", "clip_text"]  # no staging folder left behind


def test_tensorrt_export_caches_outside_the_repository_with_profiles_warmup_and_cast_first_graphs(tmp_path, clip_checkpoint):
    """What TensorRT needs on the first GPU host (checked without one): engines cached on their own
    volume, one profile covering every batch and text length, warm-up so readiness waits for the
    engine, and uint8 inputs that feed nothing but Cast."""
    import onnx

    serving = TritonOptions(flavour="onnxruntime", fp16=True, tensorrt=True, max_batch_size=64)
    export_clip(str(clip_checkpoint), tmp_path / "repo", serving)
    image = parse((tmp_path / "repo" / "clip_image" / "config.pbtxt").read_text())
    (trt,) = image.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.parameters["trt_engine_cache_path"] == "/trt-cache/clip_image"
    assert not trt.parameters["trt_engine_cache_path"].startswith(str(tmp_path))
    assert trt.parameters["trt_timing_cache_enable"] == "1" and trt.parameters["precision_mode"] == "FP16"
    assert (trt.parameters["trt_profile_min_shapes"], trt.parameters["trt_profile_opt_shapes"],
            trt.parameters["trt_profile_max_shapes"]) == ("pixels:1x32x32x3", "pixels:64x32x32x3", "pixels:64x32x32x3")
    assert [(w.batch_size, list(w.inputs["pixels"].dims), w.inputs["pixels"].zero_data) for w in image.model_warmup] == [
        (1, [32, 32, 3], True), (64, [32, 32, 3], True)]
    text = parse((tmp_path / "repo" / "clip_text" / "config.pbtxt").read_text())
    (trt,) = text.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.parameters["trt_profile_min_shapes"] == "input_ids:1x16,attention_mask:1x16"
    assert trt.parameters["trt_profile_max_shapes"] == "input_ids:64x77,attention_mask:64x77"
    assert [list(w.inputs["input_ids"].dims) for w in text.model_warmup] == [[16], [77]]
    graph = onnx.load(str(tmp_path / "repo" / "clip_image" / "1" / "model.onnx")).graph
    consumers = [node.op_type for node in graph.node if "pixels" in node.input]
    assert consumers == ["Cast"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
@pytest.mark.parametrize("user", ["root", "image-user"])
def test_export_installs_into_a_repository_that_is_its_own_filesystem(clip_checkpoint, user):
    """The repository as compose and Kubernetes mount it: a volume of its own (a rename from outside
    it fails with EXDEV), written by the images' non-root user (uid 10001), who cannot write the
    folder above it."""
    import shutil
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:  # under /tmp, so the image user can read the checkpoint
        base = Path(scratch)
        os.chmod(base, 0o755)
        checkpoint, repository, home = base / "checkpoint", base / "models", base / "home"
        shutil.copytree(clip_checkpoint, checkpoint)
        for path in (checkpoint, *checkpoint.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        repository.mkdir()
        home.mkdir()
        os.chown(home, 10001, 10001)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(repository)], check=True)
        try:
            command = [sys.executable, "-m", "export", "clip", "--model", str(checkpoint), "--repository",
                       str(repository), "--flavour", "python", "--cpu"]
            if user == "image-user":
                os.chown(repository, 10001, 10001)
                command = ["setpriv", "--reuid=10001", "--regid=10001", "--clear-groups", *command]
            done = subprocess.run(command, env={**os.environ, "HOME": str(home)}, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
            assert sorted(p.name for p in repository.iterdir()) == ["clip_image", "clip_text"]  # staging gone
            owner = (repository / "clip_image" / "1" / "model.onnx").stat().st_uid
            assert owner == (10001 if user == "image-user" else 0)
        finally:
            subprocess.run(["umount", str(repository)], check=True)
