"""CLIP image tower throughput on a GPU in fp16, at several batch sizes, against the measured compute
ceiling of that GPU. Run it whenever a GPU machine is available; results go to bench/results/
with the GPU named.

    python -m bench.gpu_clip_image --out bench/results                        # full-size ViT-B/32, random weights
    python -m bench.gpu_clip_image --clip openai/clip-vit-base-patch32 --out bench/results

Engines (both must run: a missing CUDA provider is an error, not a skipped row): `torch-fp16` (the
Hugging Face vision tower + projection, .half() on CUDA) and `onnxruntime-cuda-fp16` (the export's
fp16 clip_image ONNX, uint8 input as served, CUDA execution provider with I/O binding). Input:
uint8 pixels already on the GPU, so the numbers are the model's, not PCIe's. Ceiling: the fp16
dense matmul rate torch reaches on this GPU (8192^3 GEMMs), the best a transformer's matmuls can
do; utilisation = images/s x FLOPs per image / ceiling, with FLOPs counted from the architecture
(2 per multiply-add). `--device cpu --size tiny` runs the same code on a CPU in fp32 (a smoke
test, not a benchmark).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def vision_flops(config) -> float:
    """FLOPs of one image through the CLIP vision tower and projection."""
    v = config.vision_config
    patches = (v.image_size // v.patch_size) ** 2
    tokens, d, mlp = patches + 1, v.hidden_size, v.intermediate_size
    per_layer = 2 * tokens * d * (4 * d + 2 * mlp) + 2 * 2 * tokens * tokens * d  # qkv + out + mlp; scores + weighted sum
    embed = 2 * patches * 3 * v.patch_size ** 2 * d
    return float(embed + v.num_hidden_layers * per_layer + 2 * d * config.projection_dim)


def timed(run, repeats: int, warmup: int, device: str) -> float:
    """Median seconds of one call over `repeats`, after `warmup` calls."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_ceiling(device: str, dtype: torch.dtype) -> float:
    n = 8192 if device == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, 20, 5, device)
    return 2 * n ** 3 / seconds


def torch_engine(clip_path: str, device: str, dtype: torch.dtype):
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(clip_path).to(device, dtype).eval()
    processor = CLIPImageProcessor.from_pretrained(clip_path)
    mean = torch.tensor(processor.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, device=device).view(1, 3, 1, 1)

    def run(pixels: torch.Tensor):  # uint8 NHWC, as the served model takes it
        x = ((pixels.permute(0, 3, 1, 2).float() / 255 - mean) / std).to(dtype)
        with torch.inference_mode():
            return model.visual_projection(model.vision_model(pixel_values=x).pooler_output)

    return run


def onnx_engine(onnx_path: Path, device: str):
    """The served graph in the gateway's own session factory: on a GPU machine without a working CUDA
    provider it raises (ProviderUnavailable) instead of measuring the CPU under a CUDA label."""
    from gateway.runtime.onnx_session import create_session

    session = create_session(onnx_path, "cuda" if device == "cuda" else "cpu")

    def run(pixels: torch.Tensor):
        binding = session.io_binding()
        binding.bind_input("pixels", device, 0, np.uint8, list(pixels.shape), pixels.data_ptr())
        binding.bind_output("embeddings", device)
        session.run_with_iobinding(binding)

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", help="CLIP checkpoint (default: a full-size random-weight ViT-B/32)")
    parser.add_argument("--size", default="base", choices=["tiny", "base", "large"], help="random checkpoint size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from transformers import CLIPConfig

    from export.random_checkpoints import build_clip

    workdir = Path(tempfile.mkdtemp(prefix="gpu-clip-"))
    clip_path = args.clip or str(build_clip(workdir / f"clip-{args.size}", size=args.size, seed=0))
    config = CLIPConfig.from_pretrained(clip_path)
    fp16 = args.device == "cuda"
    dtype = torch.float16 if fp16 else torch.float32
    from export.__main__ import main as export_main

    export_main(["clip", "--model", clip_path, "--repository", str(workdir / "repository"), "--flavour", "onnxruntime"]
                + (["--fp16"] if fp16 else []))
    onnx_path = workdir / "repository" / "clip_image" / "1" / "model.onnx"
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    ceiling = matmul_ceiling(args.device, dtype)
    flops = vision_flops(config)
    side = config.vision_config.image_size
    engines = {f"torch-{'fp16' if fp16 else 'fp32'}": torch_engine(clip_path, args.device, dtype),
               f"onnxruntime-{args.device}-{'fp16' if fp16 else 'fp32'}": onnx_engine(onnx_path, args.device)}
    rows = []
    for engine, run in engines.items():
        for batch in args.batch_sizes:
            pixels = torch.randint(0, 256, (batch, side, side, 3), dtype=torch.uint8, device=args.device)
            seconds = timed(lambda run=run, pixels=pixels: run(pixels), args.repeats, 3, args.device)
            rate = batch / seconds
            rows.append({"engine": engine, "batch": batch, "images_per_s": round(rate, 1),
                         "ms_per_batch": round(seconds * 1000, 2), "utilisation": round(rate * flops / ceiling, 4)})
            print(json.dumps(rows[-1]), flush=True)
    result = {"gpu": name, "device": args.device, "checkpoint": args.clip or f"random {args.size}",
              "gflops_per_image": round(flops / 1e9, 2), "matmul_ceiling_tflops": round(ceiling / 1e12, 1),
              "repeats": args.repeats, "torch": torch.__version__, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    (args.out / f"gpu-clip-image-{slug}.json").write_text(json.dumps(result, indent=2))
    lines = [f"# CLIP image tower on {name}", "",
             f"{result['gflops_per_image']} GFLOPs per image; measured {'fp16' if fp16 else 'fp32'} matmul ceiling"
             f" {result['matmul_ceiling_tflops']} TFLOPS; median of {args.repeats} timed batches after 3 warm-ups.", "",
             "| engine | batch | images/s | ms per batch | share of the matmul ceiling |", "|---|---|---|---|---|"]
    lines += [f"| {r['engine']} | {r['batch']} | {r['images_per_s']} | {r['ms_per_batch']} | {r['utilisation']:.1%} |"
              for r in rows]
    (args.out / f"gpu-clip-image-{slug}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
