"""Would BLIP gain from int8 as CLIP does? Its graphs quantized the way export/quantize.py quantizes
CLIP (dynamic, int8 weights per output channel), captions compared with fp32's, in one run.

    python -m bench.blip_int8 --blip-folder .cache/blip-repo/blip_caption --out bench/results/blip-int8-cpu-2core

The fp32 blip_caption folder's vision encoder and decoder graphs are quantized into a scratch copy;
both decode loops (gateway.runtime.blip_decode) caption the same photos, greedy and 3 beams, 20 new
tokens, at batch 1 and 8, each repeat timing fp32 then int8. The fidelity measures: the share of
captions identical token for token, and the mean share of fp32's caption tokens found at the same
position in int8's. Not an export option unless both hold up (docs/benchmarks.md says which).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import photos
from bench.machine import machine, write_results
from export.quantize import quantize
from gateway.runtime.blip_decode import BlipDecoder, CaptionText, GenerationSettings
from gateway.runtime.preprocess import PixelSpec, preprocess

GRAPHS = ("vision", "decoder_init", "decoder_step")


def quantized_copy(folder: Path, scratch: Path) -> Path:
    copy = scratch / "blip_caption"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.onnx"))
    for graph in (*GRAPHS, "gather_rows"):
        source = folder / "1" / f"{graph}.onnx"
        if graph in GRAPHS:
            quantize(source, copy / "1" / f"{graph}.onnx")
        else:
            shutil.copyfile(source, copy / "1" / f"{graph}.onnx")
    return copy


def same_position_share(a: list[int], b: list[int]) -> float:
    return sum(x == y for x, y in zip(a, b)) / max(len(a), 1)


def run(args: argparse.Namespace) -> dict:
    spec = PixelSpec.load(args.blip_folder / "preprocess.json")
    pixels = np.stack([preprocess(data, spec) for data in photos.payloads().values()])
    with tempfile.TemporaryDirectory() as scratch:
        folders = {"fp32": args.blip_folder, "int8": quantized_copy(args.blip_folder, Path(scratch))}
        decoders = {p: BlipDecoder.from_folder(f, threads=args.threads) for p, f in folders.items()}
        text = CaptionText(args.blip_folder)
        rows = []
        for beams in (1, 3):
            settings = GenerationSettings(max_new_tokens=20, num_beams=beams)
            for batch in args.batch_sizes:
                images = np.concatenate([pixels] * (batch // len(pixels) + 1))[:batch]
                seconds: dict[str, list[float]] = {p: [] for p in decoders}
                ids: dict[str, list] = {}
                for _ in range(args.repeats):
                    for precision, decoder in decoders.items():
                        start = time.perf_counter()
                        ids[precision] = decoder.generate(decoder.encode(images), [], settings)
                        seconds[precision].append(time.perf_counter() - start)
                pairs = list(zip(ids["fp32"], ids["int8"]))
                ratios = [f / i for f, i in zip(seconds["fp32"], seconds["int8"])]
                rows.append({"beams": beams, "batch": batch, "repeats": args.repeats,
                             "fp32_captions_per_s": round(batch / statistics.median(seconds["fp32"]), 3),
                             "int8_captions_per_s": round(batch / statistics.median(seconds["int8"]), 3),
                             "int8_over_fp32": round(statistics.median(ratios), 2),
                             "identical_captions": round(float(np.mean([list(a) == list(b) for a, b in pairs])), 3),
                             "same_position_tokens": round(float(np.mean([same_position_share(list(a), list(b))
                                                                           for a, b in pairs])), 3),
                             "example": {"fp32": text.caption(ids["fp32"][0]), "int8": text.caption(ids["int8"][0])}})
                print(rows[-1], flush=True)
    return {"machine": machine(), "blip_folder": str(args.blip_folder), "rows": rows}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# BLIP fp32 vs int8 on {m['cpu']} ({m['cores']} cores, flags {' '.join(m['cpu_flags'])}, {m['date']})", "",
             "| beams | batch | fp32 captions/s | int8 captions/s | int8 / fp32 | identical captions | same-position tokens |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['beams']} | {r['batch']} | {r['fp32_captions_per_s']} | {r['int8_captions_per_s']} |"
              f" {r['int8_over_fp32']}x | {r['identical_captions']:.0%} | {r['same_position_tokens']:.0%} |"
              for r in result["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blip-folder", type=Path, required=True, help="an exported blip_caption model folder (fp32)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = run(args)
    write_results(args.out, "blip_int8", result, markdown(result))


if __name__ == "__main__":
    main()
