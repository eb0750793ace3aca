"""The embedding towers in fp32 and int8 (python -m export clip --cpu --precision int8), side by side in one run.

    python -m bench.int8 --fp32 .cache/tier-repo --int8 .cache/clip-int8-repo --out bench/results/int8-cpu-2core

Both repositories hold the same checkpoint's clip_image and clip_text (CLIP or SigLIP: the family
and checkpoint are read from the manifests and named in the results). Each model is timed in ONNX
Runtime directly, as the in-process gateway runs it (one session per graph, --threads intra-op
threads), on a phone photo's pixels at the model's size (image tower) and tokenised queries at the
gateway's padded length (text tower: CLIP 16 tokens, SigLIP 64), at each batch size; every repeat
times fp32 and int8 one after the other, so both see the same machine. Rows: median images or texts per second (min-max over the
repeats), the ratio ``int8_over_fp32``, and the int8 export's fidelity gate from its manifest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bench import photos
from bench.machine import machine, write_results
from gateway.runtime.onnx_session import create_session
from gateway.runtime.preprocess import PixelSpec, preprocess
from gateway.runtime.text import TextTokenizer

QUERIES = ["a man in a red jacket", "a cat sleeping on a sofa", "the rocket on the launch pad", "a cup of coffee"]


def inputs(repository: Path, model: str, batch: int) -> dict[str, np.ndarray]:
    if model == "clip_image":
        pixels = preprocess(photos.payloads()["phone-12mp"], PixelSpec.load(repository / "clip_image" / "preprocess.json"))
        return {"pixels": np.repeat(pixels[None], batch, axis=0)}
    ids, mask = TextTokenizer.from_folder(repository / "clip_text")([QUERIES[i % len(QUERIES)] for i in range(batch)])
    return {"input_ids": ids, "attention_mask": mask}


def run(args: argparse.Namespace) -> dict:
    rows = []
    for model in ("clip_image", "clip_text"):
        sessions = {precision: create_session(repository / model / "1" / "model.onnx", threads=args.threads)
                    for precision, repository in (("fp32", args.fp32), ("int8", args.int8))}
        for batch in args.batch_sizes:
            feed = inputs(args.fp32, model, batch)
            for session in sessions.values():
                session.run(None, feed)  # warm-up
            seconds: dict[str, list[float]] = {precision: [] for precision in sessions}
            for _ in range(args.repeats):
                for precision, session in sessions.items():
                    start = time.perf_counter()
                    session.run(None, feed)
                    seconds[precision].append(time.perf_counter() - start)
            per_s = {p: [batch / s for s in times] for p, times in seconds.items()}
            ratios = [i / f for f, i in zip(per_s["fp32"], per_s["int8"])]
            row = {"model": model, "batch": batch, "repeats": args.repeats, "threads": args.threads or "all cores",
                   **{f"{p}_per_s": {"median": round(statistics.median(v), 2), "min": round(min(v), 2), "max": round(max(v), 2)}
                      for p, v in per_s.items()},
                   "int8_over_fp32": {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2),
                                      "max": round(max(ratios), 2)}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    gates = {model: json.loads((args.int8 / model / "export.json").read_text()).get("int8")
             for model in ("clip_image", "clip_text")}
    sizes = {f"{model} {p}": round((repository / model / "1" / "model.onnx").stat().st_size / 1e6, 1)
             for model in ("clip_image", "clip_text") for p, repository in (("fp32", args.fp32), ("int8", args.int8))}
    manifest = json.loads((args.fp32 / "clip_image" / "export.json").read_text())
    return {"machine": machine(), "family": manifest.get("family", "clip"), "checkpoint": manifest["request"]["source"],
            "rows": rows, "int8_gates": gates, "onnx_mb": sizes}


def cell(stat: dict) -> str:
    return f"{stat['median']} ({stat['min']}-{stat['max']})"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# {result['family']} ({result['checkpoint']}) fp32 vs int8 on {m['cpu']}"
             f" ({m['cores']} cores, flags {' '.join(m['cpu_flags'])}, {m['date']})", "",
             "| model | batch | fp32 per s | int8 per s | int8 / fp32 |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['batch']} | {cell(r['fp32_per_s'])} | {cell(r['int8_per_s'])} |"
              f" **{cell(r['int8_over_fp32'])}x** |" for r in result["rows"]]
    lines += ["", "int8 gates (against fp32): " + "; ".join(
        f"{model}: cosine mean {g['mean_cosine']:.5f} min {g['min_cosine']:.5f}, top-10 agreement {g['top10_agreement']:.3f}"
        for model, g in result["int8_gates"].items() if g), "", f"ONNX sizes (MB): {result['onnx_mb']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fp32", type=Path, required=True, help="a repository with the embedding towers in fp32")
    parser.add_argument("--int8", type=Path, required=True, help="the same checkpoint exported with --precision int8")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = run(args)
    write_results(args.out, "int8", result, markdown(result))


if __name__ == "__main__":
    main()
