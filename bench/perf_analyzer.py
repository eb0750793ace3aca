"""perf_analyzer recipes for each Triton model in a repository, with realistic inputs.

    python -m bench.perf_analyzer --url 127.0.0.1:8001 --repository model_repository --model clip_image \\
        --concurrency 1 2 4 8

perf_analyzer comes from the tritonclient 2.51.0 wheel (the newer perf-analyzer wheels need glibc
2.38): fetched once into .cache/perf_analyzer with `pip download`, its two missing libraries
(libb64, libcudart) linked from the nvidia-pytriton wheel. Inputs are real: a photo's uint8 pixels
at the model's size (scikit-image's astronaut), tokenised text, greedy 20-token captions; random
data would hand clip_text token ids outside the vocabulary and blip_caption absurd beam counts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import zipfile
from importlib.util import find_spec
from pathlib import Path

import numpy as np

CACHE = Path(".cache/perf_analyzer")
WHEEL = "tritonclient==2.51.0"
LIBRARIES = {"libb64.so.0d": "libb64-", "libcudart.so.12": "libcudart-"}


def binary(cache: Path = CACHE) -> tuple[Path, dict[str, str]]:
    """The perf_analyzer executable and the environment it runs in."""
    executable, libs = cache / "perf_analyzer", cache / "lib"
    if not executable.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(cache)], check=True,
                       stdout=subprocess.DEVNULL)
        (wheel,) = cache.glob("tritonclient-2.51.0-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            executable.write_bytes(archive.read("tritonclient-2.51.0.data/data/bin/perf_analyzer"))
        executable.chmod(0o755)
        wheel.unlink()
    libs.mkdir(exist_ok=True)
    bundled = Path(find_spec("pytriton").origin).parents[1] / "nvidia_pytriton.libs"
    for name, prefix in LIBRARIES.items():
        if not (libs / name).exists():
            (libs / name).symlink_to(next(bundled.glob(prefix + "*")))
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join([str(libs.resolve()), os.environ.get("LD_LIBRARY_PATH", "")])}
    return executable, env


def input_data(model: str, repository: Path, out: Path) -> Path:
    """perf_analyzer's --input-data JSON for one request of batch size 1."""
    from bench.payloads import QUERIES, photo_jpeg
    from gateway.backends.repository import read_model_info
    from gateway.runtime.preprocess import PixelSpec, preprocess
    from gateway.runtime.text import TextTokenizer

    def tensor(array: np.ndarray) -> dict:
        return {"content": array.reshape(-1).tolist(), "shape": list(array.shape)}

    if model in ("clip_image", "blip_caption"):
        pixels = preprocess(photo_jpeg(0), PixelSpec.load(repository / model / "preprocess.json"))
        entry = {"pixels": tensor(pixels)}
        if model == "blip_caption":
            entry.update(prompt=[""], num_beams=[1], max_new_tokens=[20], repetition_penalty=[1.0])
        entries = [entry]
    elif model == "clip_text":
        info = read_model_info(repository, captions=False)
        ids, mask = TextTokenizer(repository / "clip_text", info.text)(QUERIES)
        entries = [{"input_ids": tensor(i), "attention_mask": tensor(m)} for i, m in zip(ids, mask)]
    else:
        raise ValueError(f"no recipe for {model}")
    out.write_text(json.dumps({"data": entries}))
    return out


def run(model: str, url: str, repository: Path, concurrency: list[int], workdir: Path,
        measurement_ms: int = 10_000) -> list[dict]:
    """Throughput and latency percentiles at each concurrency (gRPC, batch size 1 per request)."""
    executable, env = binary()
    workdir.mkdir(parents=True, exist_ok=True)
    data, report = input_data(model, repository, workdir / f"{model}-input.json"), workdir / f"{model}.csv"
    rows = []
    for level in concurrency:
        subprocess.run([str(executable), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data),
                        f"--concurrency-range={level}:{level}", f"--measurement-interval={measurement_ms}",
                        "--stability-percentage=25", "--max-trials=6", "-f", str(report)],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        with open(report) as fh:
            row = next(csv.DictReader(fh))
        rows.append({"concurrency": level, "rps": float(row["Inferences/Second"]),
                     **{f"p{p}_ms": int(row[f"p{p} latency"]) / 1000 for p in (50, 95, 99)}})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--model", choices=["clip_image", "clip_text", "blip_caption"], required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--measurement-ms", type=int, default=10_000)
    args = parser.parse_args(argv)
    for row in run(args.model, args.url, args.repository, args.concurrency, CACHE / "runs", args.measurement_ms):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
