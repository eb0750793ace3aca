"""Resident memory of the in-process models, per model and per ONNX Runtime setting, with their speed
beside it: each variant in a fresh process, loading clip_image, clip_text and blip_caption one after
the other (RSS after each), then running them as the gateway does (CLIP at batch 8, a text batch,
BLIP captions of 4 images with 3 beams; RSS after), in interleaved rounds; then the trim the idle
in-process captioner makes (glibc's malloc_trim; RSS after, and its seconds).

    python -m bench.memory --repository .cache/clip-repo --out bench/results/memory-cpu-2core
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.machine import machine, write_results

VARIANTS = {"arena off (shipped)": {"cpu_arena": False}, "arena on (before)": {"cpu_arena": True}}


def worker(repository: Path, cpu_arena: bool, rounds: int) -> dict:
    import numpy as np
    import psutil

    import gateway.runtime.blip_decode as blip_decode
    from gateway.backends.local import freed_memory_returner
    from gateway.runtime.blip_decode import BlipDecoder, CaptionText, GenerationSettings, caption_requests
    from gateway.runtime.onnx_session import create_session
    from gateway.runtime.preprocess import PixelSpec
    from gateway.runtime.text import TextTokenizer

    process = psutil.Process()

    def rss_mb() -> int:
        return round(process.memory_info().rss / 2 ** 20)

    session = functools.partial(create_session, cpu_arena=cpu_arena)
    blip_decode.create_session = session  # type: ignore[assignment]  # the decoder's four sessions too
    memory = {"python": rss_mb()}
    image = session(repository / "clip_image" / "1" / "model.onnx")
    memory["+clip_image"] = rss_mb()
    text = session(repository / "clip_text" / "1" / "model.onnx")
    memory["+clip_text"] = rss_mb()
    decoder, caption_text = BlipDecoder.from_folder(repository / "blip_caption"), CaptionText(repository / "blip_caption")
    memory["+blip_caption"] = rss_mb()
    rng = np.random.default_rng(0)
    clip, blip = (PixelSpec.load(repository / name / "preprocess.json") for name in ("clip_image", "blip_caption"))
    pixels = rng.integers(0, 255, (8, clip.height, clip.width, 3), dtype=np.uint8)
    blip_pixels = rng.integers(0, 255, (4, blip.height, blip.width, 3), dtype=np.uint8)
    ids, mask = TextTokenizer.from_folder(repository / "clip_text")(["a photo of a dog on a beach"] * 8)
    settings = GenerationSettings(num_beams=3, max_new_tokens=20)
    runs = {"clip_image batch 8": lambda: image.run(None, {"pixels": pixels}),
            "clip_text batch 8": lambda: text.run(None, {"input_ids": ids, "attention_mask": mask}),
            "blip 4 images, 3 beams": lambda: caption_requests(decoder, caption_text, [(blip_pixels, "", settings)])}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds + 1):  # the first round warms up
        for name, one in runs.items():
            started = time.perf_counter()
            one()
            seconds[name].append(time.perf_counter() - started)
    memory["after runs"] = rss_mb()
    trim = freed_memory_returner()
    if trim is not None:  # what the in-process captioner does once idle (gateway.backends.local)
        started = time.perf_counter()
        trim()
        seconds["idle trim"] = [0.0, time.perf_counter() - started]
        memory["after idle trim"] = rss_mb()
    weights = sum(p.stat().st_size for p in repository.glob("*/1/*.onnx"))
    return {"memory_mb": memory, "onnx_files_mb": round(weights / 2 ** 20),
            "median_s": {name: round(statistics.median(values[1:]), 4) for name, values in seconds.items()},
            "rounds_s": {name: [round(v, 4) for v in values[1:]] for name, values in seconds.items()}}


def run(args: argparse.Namespace) -> dict:
    rows = []
    for repeat in range(args.repeats):
        for name in (VARIANTS if repeat % 2 == 0 else dict(reversed(VARIANTS.items()))):
            done = subprocess.run([sys.executable, "-m", "bench.memory", "--worker", "--repository", str(args.repository),
                                   "--rounds", str(args.rounds), *(["--arena"] if VARIANTS[name]["cpu_arena"] else [])],
                                  capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"the {name} worker failed: {done.stderr[-3000:]}")
            rows.append({"variant": name, "repeat": repeat + 1, **json.loads(done.stdout.strip().splitlines()[-1])})
            print(json.dumps(rows[-1]), flush=True)
    return {"machine": machine(), "repository": str(args.repository), "rows": rows}


def markdown(result: dict) -> str:
    names = list(result["rows"][0]["median_s"])
    lines = [f"# Memory of the in-process models ({result['machine']['date']})", "",
             f"{result['machine']['cpu']}, {result['machine']['cores']} cores; each row a fresh process; resident MB;"
             f" ONNX files {result['rows'][0]['onnx_files_mb']} MB.", "",
             "| variant | repeat | python | +clip_image | +clip_text | +blip_caption | after runs | after idle trim | "
             + " | ".join(f"{n} (s, median)" for n in names) + " |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(names)]
    for row in result["rows"]:
        m = row["memory_mb"]
        lines.append(f"| {row['variant']} | {row['repeat']} | {m['python']} | {m['+clip_image']} | {m['+clip_text']} |"
                     f" {m['+blip_caption']} | {m['after runs']} | {m.get('after idle trim', '-')} | "
                     + " | ".join(str(row["median_s"][n]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant, interleaved")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arena", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.repository, args.arena, args.rounds)))
        return
    result = run(args)
    write_results(args.out, "memory", result, markdown(result))


if __name__ == "__main__":
    main()
