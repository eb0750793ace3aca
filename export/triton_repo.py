"""Triton model repository layout: config.pbtxt for each flavour, and safe installation of a model.

One ONNX file, two ways to serve it (chosen by ``TritonOptions.flavour``):
- ``onnxruntime``: Triton's native ONNX Runtime backend, GPU instances, optional TensorRT (production);
- ``python``: the python backend running the same file through onnxruntime (Triton builds without
  the onnxruntime backend, such as the one in the nvidia-pytriton wheel used by the tests).

Configs are built as Triton's own ModelConfig protobuf, so a field Triton does not know cannot be
written. Python models get the model runtime (gateway/runtime/) copied beside their model.py, so a
repository carries the code its models run and the Triton image needs only their dependencies.
A model is assembled in a hidden staging folder inside the repository (the repository's own
filesystem, so installing is a rename even when the repository is a mounted volume whose parent is
not writable) and renamed into place only after its parity gate passed. Triton does not skip hidden
folders when it scans a repository (2.51, and its source today), so every Triton here loads the
installed models by name (``--model-control-mode=explicit``, ``installed_models``), never by scan.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from gateway.runtime.blip_decode import DECODE_MEMORY_MB

FLAVOURS = ("onnxruntime", "python")
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")
RUNTIME_PACKAGE = Path(__file__).parents[1] / "gateway" / "runtime"
MANIFEST = "export.json"
DTYPES = {"uint8": mc.TYPE_UINT8, "int32": mc.TYPE_INT32, "int64": mc.TYPE_INT64, "float32": mc.TYPE_FP32,
          "bytes": mc.TYPE_STRING}


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # numpy name (uint8, int32, int64, float32) or "bytes" for strings
    dims: tuple[int, ...]  # without the batch axis; -1 for a dynamic one
    optional: bool = False
    # smallest and largest value of each dynamic dim (TensorRT profiles, warm-up); None: dims are fixed
    dynamic_range: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(smallest, largest) dims without the batch axis."""
        if self.dynamic_range is None:
            if -1 in self.dims:
                raise ValueError(f"{self.name} has dynamic dims: give their dynamic_range")
            return self.dims, self.dims
        return self.dynamic_range


@dataclass(frozen=True)
class TritonOptions:
    """How Triton serves a model: the options users tune per deployment."""

    flavour: str = "onnxruntime"
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = ()
    queue_delay_us: int = 2000
    instances: int = 1
    gpu: bool = True  # instance kind for the native flavour; the python flavour also uses CUDA when asked
    tensorrt: bool = False
    fp16: bool = False
    int8: bool = False  # CLIP's towers quantized to int8 for CPU serving (export.quantize); BLIP stays fp32
    threads: int = 0  # python flavour: onnxruntime intra-op threads per instance (0 = onnxruntime's default)
    decode_memory_mb: int = DECODE_MEMORY_MB  # keys/values one BLIP decode loop may hold per instance
    # TensorRT engine and timing caches: a writable volume outside the repository (engines are per GPU
    # model and TensorRT version, built once, then loaded in seconds on every pod start)
    tensorrt_cache: str = "/trt-cache"

    def __post_init__(self):
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, not {self.flavour!r}")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.int8 and (self.gpu or self.fp16 or self.tensorrt):
            raise ValueError("int8 is a CPU precision: export it with --cpu, without --fp16 or --tensorrt")

    def preferred(self) -> list[int]:
        sizes = self.preferred_batch_sizes or tuple(b for b in (4, 8, 16, 32, 64) if b <= self.max_batch_size)
        return sorted({b for b in sizes if b <= self.max_batch_size})


@dataclass(frozen=True)
class EnsembleStep:
    """One model of an ensemble: its tensor names -> the ensemble's (inputs, then outputs)."""

    model: str
    inputs: dict[str, str]
    outputs: dict[str, str]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    extra_files: dict[str, Path] = field(default_factory=dict)  # file name in the model folder -> source file
    python_model: Path = PYTHON_MODEL_SOURCE  # the python-backend model.py (the runtime package goes beside it)
    python_only: bool = False  # a python model in every flavour (e.g. a decode loop)
    ensemble: tuple[EnsembleStep, ...] = ()  # an ensemble of these steps instead of a model of its own

    def uses_python(self, serving: TritonOptions) -> bool:
        return not self.ensemble and (self.python_only or serving.flavour == "python")


def render_config(spec: ModelSpec, serving: TritonOptions) -> str:
    """config.pbtxt text for one model in the chosen flavour."""
    config = mc.ModelConfig(name=spec.name, max_batch_size=serving.max_batch_size)
    for tensor in spec.inputs:
        config.input.add(name=tensor.name, data_type=DTYPES[tensor.dtype], dims=list(tensor.dims),
                         optional=tensor.optional)
    for tensor in spec.outputs:
        config.output.add(name=tensor.name, data_type=DTYPES[tensor.dtype], dims=list(tensor.dims))
    if spec.ensemble:  # Triton's ensemble scheduler: no instances or batcher of its own (its steps have them)
        config.platform = "ensemble"
        for step in spec.ensemble:
            config.ensemble_scheduling.step.add(model_name=step.model, model_version=-1, input_map=step.inputs,
                                                output_map=step.outputs)
        return text_format.MessageToString(config)
    config.dynamic_batching.preferred_batch_size.extend(serving.preferred())
    config.dynamic_batching.max_queue_delay_microseconds = serving.queue_delay_us
    kind = mc.ModelInstanceGroup.KIND_GPU if serving.gpu else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(count=serving.instances, kind=kind)
    if not spec.uses_python(serving):
        config.backend = "onnxruntime"
        if serving.tensorrt and serving.gpu:
            add_tensorrt(config, spec, serving)
    else:
        config.backend = "python"
        config.parameters["intra_op_num_threads"].string_value = str(serving.threads)
        config.parameters["decode_memory_mb"].string_value = str(serving.decode_memory_mb)
    return text_format.MessageToString(config)


def profile(tensors: tuple[Tensor, ...], batch: int, largest: bool) -> str:
    """An ONNX Runtime TensorRT profile shape list: ``name:BxD1xD2,...``."""
    return ",".join(f"{t.name}:" + "x".join(str(d) for d in (batch, *t.shapes()[largest])) for t in tensors)


def tensorrt_options(spec: ModelSpec, serving: TritonOptions, cache: str) -> dict[str, str]:
    """ONNX Runtime's TensorRT provider options for ``spec`` (its names): the precision, engine and
    timing caches in ``cache``, one explicit profile covering batch 1..max_batch_size and the dynamic
    dims' ranges (no rebuild when a larger batch arrives). Triton's accelerator and the export's parity
    gate on TensorRT both use them."""
    opt_batch = max(serving.preferred(), default=serving.max_batch_size)
    return {
        "trt_fp16_enable": "1" if serving.fp16 else "0", "trt_max_workspace_size": str(2 << 30),
        "trt_engine_cache_enable": "1", "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "1", "trt_timing_cache_path": cache,
        "trt_profile_min_shapes": profile(spec.inputs, 1, largest=False),
        "trt_profile_opt_shapes": profile(spec.inputs, opt_batch, largest=False),
        "trt_profile_max_shapes": profile(spec.inputs, serving.max_batch_size, largest=True),
    }


def add_tensorrt(config: mc.ModelConfig, spec: ModelSpec, serving: TritonOptions) -> None:
    """The TensorRT accelerator with everything a first deploy needs not to time out: tensorrt_options
    with the caches on the cache volume, and warm-up at the smallest and largest shapes, so Triton
    reports ready only once the engine exists. Triton names two options its own way."""
    trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    options = tensorrt_options(spec, serving, f"{serving.tensorrt_cache.rstrip('/')}/{spec.name}")
    precision = "FP16" if options.pop("trt_fp16_enable") == "1" else "FP32"
    trt.parameters.update({"precision_mode": precision, "max_workspace_size_bytes": options.pop("trt_max_workspace_size"),
                           **options})
    for batch, largest in ((1, False), (serving.max_batch_size, True)):
        warmup = config.model_warmup.add(name=f"batch-{batch}", batch_size=batch, count=1)
        for tensor in spec.inputs:
            warmup.inputs[tensor.name].data_type = DTYPES[tensor.dtype]
            warmup.inputs[tensor.name].dims.extend(tensor.shapes()[largest])
            warmup.inputs[tensor.name].zero_data = True


def configured_tensorrt_options(config_text: str) -> dict[str, str]:
    """ONNX Runtime's TensorRT provider options from a config.pbtxt that add_tensorrt wrote."""
    config = text_format.Parse(config_text, mc.ModelConfig())
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    options = dict(accelerator.parameters)
    options["trt_fp16_enable"] = "1" if options.pop("precision_mode") == "FP16" else "0"
    options["trt_max_workspace_size"] = options.pop("max_workspace_size_bytes")
    return options


def install_python_model(model_py: Path, version_folder: Path) -> None:
    """model.py, and the runtime as the package gateway.runtime beside it (model.py puts its folder
    first on sys.path, so the copy is what it imports, whatever else is installed)."""
    shutil.copyfile(model_py, version_folder / "model.py")
    package = version_folder / "gateway"
    (package / "runtime").mkdir(parents=True)
    (package / "__init__.py").write_text('"""The image-search model runtime, copied here by the export."""\n')
    for source in sorted(RUNTIME_PACKAGE.glob("*.py")):
        shutil.copyfile(source, package / "runtime" / source.name)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(repository: Path, name: str) -> dict | None:
    path = repository / name / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def onnx_hashes(folder: Path) -> dict[str, str]:
    return {path.name: file_sha256(path) for path in sorted((folder / "1").glob("*.onnx*"))}


def is_up_to_date(repository: Path, name: str, request: dict) -> bool:
    """True when the installed model came from the same request and its ONNX files are intact."""
    manifest = read_manifest(repository, name)
    if not manifest or manifest.get("request") != json.loads(json.dumps(request)):
        return False
    return bool(manifest.get("onnx_sha256")) and onnx_hashes(repository / name) == manifest["onnx_sha256"]


STAGING_PREFIX = ".staging-"


def installed_models(repository: Path) -> list[str]:
    """The models an export installed (its manifest is written last, inside the folder that is renamed
    into place): what a Triton should ``--load-model``."""
    return sorted(p.parent.name for p in Path(repository).glob(f"*/{MANIFEST}") if not p.parent.name.startswith("."))


class StagedModel:
    """A model folder being assembled in a hidden folder of the repository; ``install`` swaps it in
    with renames on the repository's own filesystem."""

    def __init__(self, repository: Path, spec: ModelSpec):
        repository.mkdir(parents=True, exist_ok=True)
        self.repository = repository.resolve()
        self.spec = spec
        self.root = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{spec.name}-", dir=self.repository))
        self.folder = self.root / spec.name
        (self.folder / "1").mkdir(parents=True)

    @property
    def onnx_path(self) -> Path:
        return self.onnx_file("model.onnx")

    def onnx_file(self, name: str) -> Path:
        return self.folder / "1" / name

    def install(self, serving: TritonOptions, manifest: dict) -> Path:
        (self.folder / "config.pbtxt").write_text(render_config(self.spec, serving))
        if self.spec.uses_python(serving):
            install_python_model(self.spec.python_model, self.folder / "1")
        for target, source in self.spec.extra_files.items():
            shutil.copyfile(source, self.folder / target)
        manifest = {**manifest, "onnx_sha256": onnx_hashes(self.folder)}
        (self.folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        final = self.repository / self.spec.name
        retired = self.root / f"{self.spec.name}.old"
        if final.exists():
            final.rename(retired)
        self.folder.rename(final)
        self.discard()
        return final

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
