"""Caption latency and throughput: ONNX Runtime decode loop vs transformers ``generate``, side by side.

Both run the same checkpoint on the same preprocessed photos in one process, rounds interleaved
(ours, theirs, ours, theirs, ...) so that machine noise hits both alike. Reports, per batch size
and search setting, the median seconds per batch with min-max over rounds, images per second,
and the ratio transformers / ours (> 1: ours is faster).

    python -m export.random_checkpoints blip --size base --out .cache/blip-base
    python -m export blip --model .cache/blip-base --repository .cache/bench-repo --flavour python --cpu
    python -m bench.blip_caption --checkpoint .cache/blip-base --repository .cache/bench-repo
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import BlipForConditionalGeneration

from bench.payloads import photo_jpeg
from gateway.runtime.blip_decode import BlipDecoder, GenerationSettings
from gateway.runtime.preprocess import PixelSpec, preprocess


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    threads = torch.get_num_threads()
    model = BlipForConditionalGeneration.from_pretrained(args.checkpoint).eval()
    folder = args.repository / "blip_caption"
    decoder = BlipDecoder.from_folder(folder, threads=threads)
    spec = PixelSpec.load(folder / "preprocess.json")
    photos = [photo_jpeg(i) for i in range(max(args.batch_sizes))]
    pixels = np.stack([preprocess(p, spec) for p in photos])
    # transformers gets the same uint8 pixels, normalised as its processor would
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    pixel_values = (x - torch.tensor(spec.image_mean).view(1, 3, 1, 1)) / torch.tensor(spec.image_std).view(1, 3, 1, 1)

    print(f"# BLIP caption benchmark: {args.checkpoint.name}, {args.max_new_tokens} new tokens (no early EOS"
          f" forced), {args.rounds} interleaved rounds, torch and onnxruntime at {threads} threads")
    print("| batch | beams | transformers s/batch (min-max) | ours s/batch (min-max) | img/s theirs | img/s ours | ratio |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for batch in args.batch_sizes:
        for beams in args.beams:
            settings = GenerationSettings(max_new_tokens=args.max_new_tokens, num_beams=beams)

            def ours(batch=batch, settings=settings):
                decoder.generate(decoder.encode(pixels[:batch]), [], settings)

            def theirs(batch=batch, beams=beams):
                with torch.inference_mode():
                    model.generate(pixel_values=pixel_values[:batch], max_new_tokens=args.max_new_tokens,
                                   num_beams=beams, do_sample=False)

            ours(), theirs()  # warm-up
            times = {"ours": [], "theirs": []}
            for _ in range(args.rounds):
                times["ours"].append(timed(ours))
                times["theirs"].append(timed(theirs))
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {"batch": batch, "beams": beams, "seconds": times, "median": med,
                   "ratio": med["theirs"] / med["ours"]}
            results.append(row)
            print(f"| {batch} | {beams} | {med['theirs']:.2f} ({min(times['theirs']):.2f}-{max(times['theirs']):.2f})"
                  f" | {med['ours']:.2f} ({min(times['ours']):.2f}-{max(times['ours']):.2f})"
                  f" | {batch / med['theirs']:.2f} | {batch / med['ours']:.2f} | {row['ratio']:.2f}x |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
