"""What decoding at reduced scale saves and what it changes, on camera-size photos.

    python -m bench.decode --out bench/results/decode-cpu-2core [--clip-repository model_repository]

Per payload (bench/photos.py: 12 MP landscape and EXIF-portrait, 5 MP, 2 MP, 0.3 MP), in one process,
rounds interleaved so that machine noise hits every variant alike:
- CPU milliseconds (median, min-max over rounds) of an exact full decode + CLIP resize (the reference
  cost), of what the gateway derives for an image search and for indexing (captions off and on), and
  of the same with GATEWAY_EXACT_DECODE=true; the ratios to the reference;
- fidelity of the default against the exact path: PSNR and max abs difference of the CLIP and BLIP
  model inputs, perceptual-hash bits that differ, and with --clip-repository the cosine between CLIP
  embeddings (full-size random weights cost what real ones cost; their embeddings are as sensitive);
- near-duplicates: pHash distance between each photo and its half-size and quality-50 copies.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bench.photos import jpeg, payloads, source
from gateway.core.images import perceptual_hash, prepare
from gateway.core.protocols import ModelInfo
from gateway.runtime.preprocess import PixelSpec, decode_image, to_pixels
from gateway.runtime.text import TextSpec

DEFAULT_SPECS = (PixelSpec(224, 224, 224, 3, (0.5,) * 3, (0.5,) * 3),  # CLIP ViT-B/32
                 PixelSpec(384, 384, None, 3, (0.5,) * 3, (0.5,) * 3))  # BLIP base


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return round(99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse), 1)


def bits(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def measure(data: bytes, info: ModelInfo, rounds: int) -> dict:
    cases = {
        "exact decode + CLIP resize": lambda: to_pixels(decode_image(data), info.clip_pixels),
        "search": lambda: prepare(data, info, 10**9),
        "search, exact decode": lambda: prepare(data, info, 10**9, exact=True),
        "index, captions off": lambda: prepare(data, info, 10**9, record=True),
        "index, captions off, exact decode": lambda: prepare(data, info, 10**9, record=True, exact=True),
        "index with captions": lambda: prepare(data, info, 10**9, blip=True, record=True),
        "index with captions, exact decode": lambda: prepare(data, info, 10**9, blip=True, record=True, exact=True),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.process_time()
            fn()
            times[name].append((time.process_time() - start) * 1000)
    reference = statistics.median(times["exact decode + CLIP resize"])
    return {name: {"cpu_ms": round(statistics.median(t), 1), "min": round(min(t), 1), "max": round(max(t), 1),
                   "ratio_to_exact_decode_and_resize": round(statistics.median(t) / reference, 3)}
            for name, t in times.items()}


def fidelity(data: bytes, info: ModelInfo, clip_session) -> dict:
    exact = prepare(data, info, 10**9, blip=True, record=True, exact=True)
    search = prepare(data, info, 10**9)
    index = prepare(data, info, 10**9, blip=True, record=True)
    assert exact.blip_pixels is not None and index.blip_pixels is not None
    result = {
        "clip_pixels_search": {"psnr_db": psnr(search.clip_pixels, exact.clip_pixels),
                               "max_abs_diff": int(np.abs(search.clip_pixels.astype(int) - exact.clip_pixels).max())},
        "clip_pixels_index": {"psnr_db": psnr(index.clip_pixels, exact.clip_pixels),
                              "max_abs_diff": int(np.abs(index.clip_pixels.astype(int) - exact.clip_pixels).max())},
        "blip_pixels_index": {"psnr_db": psnr(index.blip_pixels, exact.blip_pixels),
                              "max_abs_diff": int(np.abs(index.blip_pixels.astype(int) - exact.blip_pixels).max())},
        "phash_bits_changed": bits(index.phash, exact.phash),
    }
    if clip_session is not None:
        vectors = clip_session.run(None, {"pixels": np.stack([exact.clip_pixels, search.clip_pixels, index.clip_pixels])})[0]
        result["clip_cosine_search"] = round(float(vectors[0] @ vectors[1]), 6)
        result["clip_cosine_index"] = round(float(vectors[0] @ vectors[2]), 6)
        result["clip_cosine_search_vs_index"] = round(float(vectors[1] @ vectors[2]), 6)
    return result


def near_duplicates(data: bytes, info: ModelInfo) -> dict:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data))
    half = jpeg(image.resize((image.width // 2, image.height // 2)), exif=image.info.get("exif"))
    low = jpeg(image, quality=50, exif=image.info.get("exif"))
    original = prepare(data, info, 10**9, record=True).phash
    return {"half_size_bits": bits(original, prepare(half, info, 10**9, record=True).phash),
            "quality_50_bits": bits(original, prepare(low, info, 10**9, record=True).phash),
            "exact_half_size_bits": bits(perceptual_hash(decode_image(data)), perceptual_hash(decode_image(half)))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clip-repository", type=Path, help="a repository with a full-size clip_image (embedding cosines)")
    args = parser.parse_args(argv)
    clip_session = None
    if args.clip_repository:
        from gateway.backends.repository import read_model_info
        from gateway.runtime.onnx_session import create_session

        repo_info = read_model_info(args.clip_repository, captions=False)
        info = ModelInfo(repo_info.clip_pixels, DEFAULT_SPECS[1], repo_info.embedding_dim, TextSpec(77, "<|endoftext|>"), {})
        clip_session = create_session(args.clip_repository / "clip_image" / "1" / "model.onnx")
    else:
        info = ModelInfo(DEFAULT_SPECS[0], DEFAULT_SPECS[1], 512, TextSpec(77, "<|endoftext|>"), {})
    results = {"photos": source(), "rounds": args.rounds, "cpu": "process time of this process (2 cores available)",
               "payloads": {}}
    for name, data in payloads().items():
        image_size = decode_image(data).size
        results["payloads"][name] = {"bytes": len(data), "size": list(image_size),
                                     "cost": measure(data, info, args.rounds), "fidelity": fidelity(data, info, clip_session),
                                     "near_duplicates": near_duplicates(data, info)}
        print(name, json.dumps(results["payloads"][name]["cost"]["search"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decode.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "decode.md").write_text(table(results))
    print(table(results))


def table(results: dict) -> str:
    lines = [f"Photos: {results['photos']}; CPU ms per image, median of {results['rounds']} interleaved rounds (min-max);"
             " ratio to an exact full decode + CLIP resize of the same file.", "",
             "| payload | exact decode + resize | search | index, captions off | index with captions |"
             " CLIP px PSNR search / index | BLIP px PSNR | max abs diff CLIP / BLIP | pHash bits | CLIP cosine search / index |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["payloads"].items():
        c, f = r["cost"], r["fidelity"]

        def cell(case: str, c: dict = c) -> str:
            return f"{c[case]['cpu_ms']} ({c[case]['min']}-{c[case]['max']}) {c[case]['ratio_to_exact_decode_and_resize']}x"

        cosine = f"{f['clip_cosine_search']} / {f['clip_cosine_index']}" if "clip_cosine_search" in f else "-"
        lines.append(f"| {name} ({r['size'][0]}x{r['size'][1]}, {r['bytes'] / 1e6:.1f} MB) | {cell('exact decode + CLIP resize')}"
                     f" | {cell('search')} | {cell('index, captions off')} | {cell('index with captions')}"
                     f" | {f['clip_pixels_search']['psnr_db']} / {f['clip_pixels_index']['psnr_db']}"
                     f" | {f['blip_pixels_index']['psnr_db']} | {f['clip_pixels_search']['max_abs_diff']} /"
                     f" {f['blip_pixels_index']['max_abs_diff']} | {f['phash_bits_changed']} | {cosine} |")
    lines += ["", "Near-duplicates (pHash bits apart, of 64; the CLI's default threshold is 10):", "",
              "| payload | half size | quality 50 | half size, exact decode |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['near_duplicates']['half_size_bits']} | {r['near_duplicates']['quality_50_bits']} |"
              f" {r['near_duplicates']['exact_half_size_bits']} |" for name, r in results["payloads"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
