"""Two versions of the BLIP decode loop side by side on the same image embeddings, rounds interleaved:
the one in this checkout and another commit's (its gateway/runtime folder and a repository it exported).

    git worktree add /tmp/before <commit>
    (cd /tmp/before && python -m export blip --model .cache/blip-base --repository /tmp/repo-before --flavour python --cpu)
    python -m export blip --model .cache/blip-base --repository /tmp/repo-after --flavour python --cpu
    python -m bench.blip_loop_ab --before-runtime /tmp/before/gateway/runtime --before-repository /tmp/repo-before \\
        --after-repository /tmp/repo-after

Both loops must produce the same token ids (checked first); then seconds per generate call, median
and min-max over --rounds, batch 1 and 8, greedy and 3 beams, 20 new tokens.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.payloads import photo_jpeg
from gateway.runtime.blip_decode import BlipDecoder, GenerationSettings
from gateway.runtime.preprocess import PixelSpec, preprocess


def load_runtime(folder: Path):
    spec = importlib.util.spec_from_file_location("before_runtime", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules["before_runtime"] = package
    spec.loader.exec_module(package)
    return importlib.import_module("before_runtime.blip_decode")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-runtime", type=Path, required=True)
    parser.add_argument("--before-repository", type=Path, required=True)
    parser.add_argument("--after-repository", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    before = load_runtime(args.before_runtime)
    old = before.BlipDecoder.from_folder(args.before_repository / "blip_caption", threads=args.threads)
    new = BlipDecoder.from_folder(args.after_repository / "blip_caption", threads=args.threads)
    spec = PixelSpec.load(args.after_repository / "blip_caption" / "preprocess.json")
    embeds = new.encode(np.stack([preprocess(photo_jpeg(i), spec) for i in range(8)]))
    print(f"# BLIP decode loop, before vs after: {args.rounds} interleaved rounds, {args.threads} threads")
    print("| batch | beams | before s/call median (min-max) | after s/call median (min-max) | before/after |")
    print("|---|---|---|---|---|")
    for batch in (1, 8):
        for beams in (1, 3):
            runs = [(old, before.GenerationSettings(max_new_tokens=20, num_beams=beams), []),
                    (new, GenerationSettings(max_new_tokens=20, num_beams=beams), [])]
            assert runs[0][0].generate(embeds[:batch], [], runs[0][1]) == runs[1][0].generate(embeds[:batch], [], runs[1][1])
            for number in range(args.rounds):
                for decoder, settings, times in runs if number % 2 == 0 else runs[::-1]:
                    start = time.perf_counter()
                    decoder.generate(embeds[:batch], [], settings)
                    times.append(time.perf_counter() - start)
            (_, _, a), (_, _, b) = runs
            cell = lambda x: f"{statistics.median(x):.3f} ({min(x):.3f}-{max(x):.3f})"
            print(f"| {batch} | {beams} | {cell(a)} | {cell(b)} | {statistics.median(a) / statistics.median(b):.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
