"""The GPU production path, checked the moment a GPU is lent: export as deployed, parity on the GPU's
own outputs, then the three served models' speed. Results go to --out with the GPU named.

    python -m bench.gpu_check --out bench/results                    # full-size random CLIP ViT-B/32 and BLIP base
    python -m bench.gpu_check --triton-url 127.0.0.1:8001 --repository /models --out bench/results

1. Providers: ONNX Runtime's TensorRT and CUDA providers must run here (a session is made on each;
   ProviderUnavailable otherwise: a wheel built for another CUDA major, no TensorRT libraries).
2. Export as a GPU deployment is exported: CLIP with ``--fp16 --tensorrt``, gated with
   ``--parity-device tensorrt`` (the engine built from the config's own profiles, fp16), then again
   gated on ``cuda`` (fp16 on the CUDA provider, what a deployment without --tensorrt serves); BLIP
   (fp32, a python model on the CUDA provider) gated on ``cuda``: generated ids token for token
   against transformers' generate on the CPU. A failed gate is a failed check.
3. Speed. With --triton-url (a Triton with the onnxruntime backend, e.g. the compose or Kubernetes
   one, serving --repository in explicit model control): the three models are loaded and
   perf_analyzer runs on each (bench.perf_analyzer). Without it, the exported graphs are timed in
   ONNX Runtime directly: clip_image and clip_text on TensorRT and on CUDA (inputs and outputs bound
   on the device), blip_caption captions per second through the decode loop on CUDA (greedy and
   3 beams).
4. Decoding on the inference tier (export decode, gated on fidelity to the gateway's decode): nvImageCodec
   (nvJPEG, the hardware decoder where the GPU has one) + the CuPy resize timed directly on 2 and 12 MP
   photos, batches of --batch-sizes. With --triton-url (its repository exported with `export decode`
   too): clip_image_bytes' images/s at each --concurrency, and two gateway processes (GATEWAY_DECODE
   gateway and inference) in front of it: the gateway CPU ms per 12 and 2 MP image search in each mode.
Any missing device, provider or failed gate ends the run with exit status 1 and what failed.
``--device cpu --size tiny`` runs the same steps on a CPU in fp32 (a smoke test, not a benchmark).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.gpu_clip_image import timed
from export.__main__ import main as export_main
from export.random_checkpoints import build_blip, build_clip
from export.triton_repo import configured_tensorrt_options, read_manifest
from gateway.runtime.blip_decode import BlipDecoder, GenerationSettings
from gateway.runtime.onnx_session import Device, ProviderUnavailable, create_session

BEAMS = (1, 3)


def export(family: str, checkpoint: Path, repository: Path, device: str, parity: str) -> None:
    gpu = ["--fp16", "--tensorrt"] if device == "cuda" and family == "clip" else []
    cpu = ["--cpu"] if device == "cpu" else []
    status = export_main([family, "--model", str(checkpoint), "--repository", str(repository), "--force",
                          "--parity-device", parity, *gpu, *cpu])
    if status != 0:
        raise SystemExit(f"gpu check failed: the {family} export's parity gate on {parity} refused it (output above)")


def parity(repository: Path, models: tuple[str, ...]) -> dict:
    """Each model's gate figures from its manifest (image_decode's fidelity gate among them)."""
    manifests = {name: read_manifest(repository, name) or {} for name in models}
    return {name: manifest.get("parity") or manifest["fidelity"] for name, manifest in manifests.items()}


def tensorrt_session(repository: Path, name: str, cache: Path):
    """The model's session as Triton's onnxruntime backend makes it: the config's TensorRT options,
    its engines cached in ``cache`` instead of the deployment's volume."""
    options = configured_tensorrt_options((repository / name / "config.pbtxt").read_text())
    (cache / name).mkdir(parents=True, exist_ok=True)
    options["trt_engine_cache_path"] = options["trt_timing_cache_path"] = str(cache / name)
    return create_session(repository / name / "1" / "model.onnx", "cuda", tensorrt=options)


def tower_inputs(name: str, batch: int, side: int, length: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    if name == "clip_image":
        return {"pixels": rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8)}
    ids = rng.integers(1, 1000, (batch, length), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def time_tower(session, feeds: dict[str, np.ndarray], device: str, repeats: int) -> float:
    """Median seconds per batch, inputs already on the device and the output left there."""
    import onnxruntime as ort

    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, device, 0))
    binding.bind_output("embeddings", device)
    return timed(lambda: session.run_with_iobinding(binding), repeats, 3, "cpu")  # the run returns once done


def direct_speed(repository: Path, device: str, batches: list[int], repeats: int, workdir: Path) -> list[dict]:
    from gateway.runtime.preprocess import PixelSpec

    side = PixelSpec.load(repository / "clip_image" / "preprocess.json").height
    engines = {"tensorrt": lambda name: tensorrt_session(repository, name, workdir / "tensorrt"),
               "cuda": lambda name: create_session(repository / name / "1" / "model.onnx", "cuda")}
    if device == "cpu":
        engines = {"cpu": lambda name: create_session(repository / name / "1" / "model.onnx")}
    rows = []
    for engine, make in engines.items():
        for name, lengths in (("clip_image", (0,)), ("clip_text", (16, 77))):
            session = make(name)
            for length in lengths:
                for batch in batches:
                    seconds = time_tower(session, tower_inputs(name, batch, side, length), device, repeats)
                    rows.append({"model": name, "engine": engine, "batch": batch, "tokens": length or None,
                                 "beams": None, "per_s": round(batch / seconds, 1), "ms_per_batch": round(seconds * 1000, 2)})
                    print(json.dumps(rows[-1]), flush=True)
    decode_device: Device = "cuda" if device == "cuda" else "cpu"
    decoder = BlipDecoder.from_folder(repository / "blip_caption", device=decode_device)
    side = PixelSpec.load(repository / "blip_caption" / "preprocess.json").height

    def caption(pixels: np.ndarray, settings: GenerationSettings) -> None:
        decoder.generate(decoder.encode(pixels), [], settings)

    for beams in BEAMS:
        for batch in batches:
            pixels = tower_inputs("clip_image", batch, side, 0)["pixels"]
            settings = GenerationSettings(max_new_tokens=20, num_beams=beams)
            seconds = timed(lambda p=pixels, s=settings: caption(p, s), max(2, repeats // 4), 1, "cpu")
            rows.append({"model": "blip_caption", "engine": decode_device, "batch": batch, "tokens": None,
                         "beams": beams, "per_s": round(batch / seconds, 2), "ms_per_batch": round(seconds * 1000, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def decode_speed(repository: Path, device: str, batches: list[int], repeats: int) -> list[dict]:
    """image_decode's work (gateway.runtime.tier_decode) timed directly: CLIP's pixels from phone- and
    web-size JPEGs, on the device (nvJPEG + CuPy) or on the CPU (libjpeg-turbo + Pillow)."""
    from bench import photos
    from gateway.runtime.preprocess import PixelSpec
    from gateway.runtime.tier_decode import ProductSpecs, TierDecoder

    decoder = TierDecoder(ProductSpecs(PixelSpec.load(repository / "clip_image" / "preprocess.json"), None), device)
    sync = decoder.xp.cuda.Stream.null.synchronize if decoder.on_gpu else (lambda: None)
    rows = []
    for payload in ("phone-12mp", "web-2mp"):
        data = photos.payloads()[payload]
        for batch in batches:
            def run(files: list[bytes]) -> None:
                results = decoder.decode(files, [("clip_pixels",)] * len(files))
                assert all(isinstance(r, dict) for r in results), results
                sync()

            seconds = timed(lambda files=[data] * batch: run(files), max(2, repeats // 4), 1, "cpu")
            rows.append({"model": "image_decode", "engine": "nvimgcodec-" + device, "payload": payload, "batch": batch,
                         "per_s": round(batch / seconds, 1), "ms_per_batch": round(seconds * 1000, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def tier_speed(url: str, repository: Path, concurrency: list[int], repeats: int, workdir: Path) -> list[dict]:
    """Against a Triton serving the decode models: clip_image_bytes' images/s, and the gateway CPU per
    image search with decoding in the gateway and on the tier (bench.tier_decode)."""
    from bench import photos
    from bench.tier_decode import TRANSPORTS, cell, decode_only, mode_gateways

    rows = []
    for payload in ("phone-12mp", "web-2mp"):
        data = photos.payloads()[payload]
        for in_flight in concurrency:
            figures = decode_only(url, lambda: 0.0, data, max(repeats, 4 * in_flight), in_flight, "clip_image_bytes")
            rows.append({"model": "clip_image_bytes", "engine": "triton", "payload": payload, "concurrency": in_flight,
                         "per_s": round(figures["images_per_s"], 1)})
            print(json.dumps(rows[-1]), flush=True)
    gateways = mode_gateways(repository, workdir, url)
    for gateway in gateways.values():
        gateway.start()
    try:
        for payload in ("phone-12mp", "web-2mp"):
            for transport in TRANSPORTS:
                for mode, gateway in gateways.items():
                    figures = cell(gateway, lambda: 0.0, transport, photos.payloads()[payload], repeats)
                    rows.append({"model": f"image search, GATEWAY_DECODE={mode}", "engine": transport, "payload": payload,
                                 "gateway_cpu_ms": round(figures["gateway_cpu_ms"], 1),
                                 "p50_ms": round(figures["p50_ms"], 1), "per_s": round(figures["rps"], 1)})
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        for gateway in gateways.values():
            gateway.stop()
    return rows


def triton_speed(url: str, repository: Path, concurrency: list[int], workdir: Path) -> list[dict]:
    import tritonclient.grpc as grpcclient

    from bench.perf_analyzer import run

    client = grpcclient.InferenceServerClient(url)
    rows = []
    for name in ("clip_image", "clip_text", "blip_caption"):
        client.load_model(name)  # TensorRT engines build here, within the config's warm-up
        rows += [{"model": name, "engine": "triton", **row} for row in run(name, url, repository, concurrency, workdir)]
        print(json.dumps(rows[-1]), flush=True)
    return rows


def check(args: argparse.Namespace) -> dict:
    import onnxruntime as ort

    workdir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"] if args.device == "cuda" else ["CPUExecutionProvider"]
    missing = [p for p in wanted if p not in ort.get_available_providers()]
    if missing:
        raise ProviderUnavailable(f"onnxruntime {ort.__version__} has no {missing} (built in: {ort.get_available_providers()})")
    clip = args.clip or build_clip(workdir / f"clip-{args.size}", size=args.size, seed=0)
    blip = args.blip or build_blip(workdir / f"blip-{args.size}", size=args.size, seed=0)
    repository = args.repository or workdir / "repository"
    figures: dict = {}
    # the first gate's export is the one served; the CUDA provider's gate checks the same fp16 graphs
    gates = ["tensorrt", "cuda"] if args.device == "cuda" else ["cpu"]
    for gate, target in zip(gates, (repository, workdir / "cuda")):
        export("clip", clip, target, args.device, gate)
        figures[f"clip on {gate}"] = parity(target, ("clip_image", "clip_text"))
    export("blip", blip, repository, args.device, "cuda" if args.device == "cuda" else "cpu")
    figures["blip"] = parity(repository, ("blip_caption",))
    if export_main(["decode", "--repository", str(repository), *(["--cpu"] if args.device == "cpu" else [])]) != 0:
        raise SystemExit("gpu check failed: the decode export's fidelity gate refused it (output above)")
    figures["decode"] = parity(repository, ("image_decode",))
    decode = decode_speed(repository, args.device, args.batch_sizes, args.repeats)
    if args.triton_url:
        speed = triton_speed(args.triton_url, repository, args.concurrency, workdir / "perf")
        decode += tier_speed(args.triton_url, repository, args.concurrency, args.repeats, workdir / "gateways")
    else:
        speed = direct_speed(repository, args.device, args.batch_sizes, args.repeats, workdir)
    return {"device": args.device, "gpu": device_name(args.device), "onnxruntime": ort.__version__,
            "checkpoints": {"clip": str(args.clip or f"random {args.size}"), "blip": str(args.blip or f"random {args.size}")},
            "parity": figures, "speed": speed, "decode": decode, "repeats": args.repeats}


def device_name(device: str) -> str:
    if device == "cpu":
        return "cpu"
    import subprocess

    return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, check=True).stdout.strip()


def table(result: dict) -> str:
    lines = [f"# GPU check on {result['gpu']}", "", f"onnxruntime {result['onnxruntime']}; checkpoints {result['checkpoints']}",
             "", "| parity gate | model | precision | device | figure |", "|---|---|---|---|---|"]
    for gate, models in result["parity"].items():
        for name, report in models.items():
            if "min_psnr_db" in report:
                lines.append(f"| {gate} | {name} | uint8 pixels | cpu | embedding min cosine {report['min_cosine']:.6f}"
                             f" (need {report['threshold']}) vs the gateway's decode, PSNR >= {report['min_psnr_db']:.1f} dB |")
            elif "min_cosine" in report:
                lines.append(f"| {gate} | {name} | {report['precision']} | {report['device']} |"
                             f" min cosine {report['min_cosine']:.6f} (need {report['threshold']}) |")
            else:
                lines.append(f"| {gate} | {name} | fp32 | {report['device']} | {report['generate_identical']} captions"
                             f" token-identical; vision min cosine {report['vision']['min_cosine']:.6f} |")
    keys = [k for k in result["speed"][0] if k not in ("model", "engine")] if result["speed"] else []
    lines += ["", "| model | engine | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    lines += [f"| {r['model']} | {r['engine']} | " + " | ".join("" if r.get(k) is None else str(r[k]) for k in keys) + " |"
              for r in result["speed"]]
    decode_keys = sorted({k for r in result["decode"] for k in r} - {"model", "engine"})
    lines += ["", "| decoding on the tier | engine | " + " | ".join(decode_keys) + " |", "|---|---|" + "---|" * len(decode_keys)]
    lines += [f"| {r['model']} | {r['engine']} | " + " | ".join("" if r.get(k) is None else str(r[k]) for k in decode_keys)
              + " |" for r in result["decode"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, help="CLIP checkpoint folder (default: random weights of --size)")
    parser.add_argument("--blip", type=Path, help="BLIP checkpoint folder (default: random weights of --size)")
    parser.add_argument("--size", default="base", choices=["tiny", "base", "large"])
    parser.add_argument("--repository", type=Path, help="where to export (default: a scratch folder)")
    parser.add_argument("--triton-url", help="a Triton (onnxruntime backend) serving --repository: perf_analyzer on it")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        result = check(args)
    except ProviderUnavailable as exc:
        sys.exit(f"gpu check failed: {exc}")
    args.out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in result["gpu"].split(",")[0].lower()).strip("-")
    (args.out / f"gpu-check-{slug}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"gpu-check-{slug}.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()
