"""Request latency and throughput of the gateway, per inference mode, over real HTTP.

Starts the gateway (uvicorn, in this process) on a repository, with a fresh Milvus Lite file,
indexes a few photos, then for each route measures sequential latency (p50, min-max over N
requests) and throughput at a given concurrency. With --mode triton it also starts the bundled CPU
tritonserver on the same repository (python flavour needed for CLIP).

    python bench/gateway_latency.py --repository .cache/bench-repo --mode local
    python bench/gateway_latency.py --repository .cache/bench-repo --mode triton
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gateway.app import create_app  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from tests.support.images import PHOTOS, photo_bytes  # noqa: E402
from tests.support.live_server import LiveServer  # noqa: E402
from tests.support.tritonserver import TritonServer  # noqa: E402


def requests_for(route: str, i: int) -> dict:
    photo = photo_bytes(PHOTOS[i % len(PHOTOS)], "JPEG")
    if route == "embed-image":
        return dict(method="POST", url="/embed-image/", files={"file": ("q.jpg", photo, "image/jpeg")})
    if route == "search-image":
        return dict(method="POST", url="/v1/search/image", files={"file": ("q.jpg", photo, "image/jpeg")}, data={"k": "10"})
    return dict(method="GET", url="/v1/search/text", params={"q": ["man in red jacket", "a cat", "coffee cup"][i % 3], "k": 10})


async def measure(base: str, route: str, sequential: int, concurrency: int, total: int) -> dict:
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        await client.request(**requests_for(route, 0))  # warm-up
        latencies = []
        for i in range(sequential):
            start = time.perf_counter()
            response = await client.request(**requests_for(route, i))
            latencies.append(time.perf_counter() - start)
            response.raise_for_status()
        start = time.perf_counter()
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i):
            async with semaphore:
                (await client.request(**requests_for(route, i))).raise_for_status()

        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.perf_counter() - start
    return {"p50": statistics.median(latencies), "min": min(latencies), "max": max(latencies),
            "throughput": total / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--mode", choices=["local", "triton"], default="local")
    parser.add_argument("--routes", nargs="+", default=["search-text", "search-image", "embed-image"])
    parser.add_argument("--sequential", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--total", type=int, default=16)
    parser.add_argument("--caption-beams", type=int, default=3)
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
        triton_url = "127.0.0.1:1"
        if args.mode == "triton":
            triton_url = stack.enter_context(TritonServer(args.repository, Path(scratch) / "triton")).grpc_url
        settings = Settings(model_repository=args.repository, inference_mode=args.mode, triton_url=triton_url,
                            milvus_uri=str(Path(scratch) / "images.db"), caption_beams=args.caption_beams,
                            triton_timeout_s=600)
        server = stack.enter_context(LiveServer(create_app(settings), startup_timeout=600))
        files = [("files", (name, photo_bytes(name, "JPEG"), "image/jpeg")) for name in PHOTOS]
        httpx.post(f"{server.url}/v1/images", files=files, timeout=600).raise_for_status()
        print(f"# gateway, {args.mode} inference, {args.repository}, Milvus Lite with {len(PHOTOS)} images;"
              f" latency over {args.sequential} sequential requests after a warm-up, throughput over {args.total}"
              f" requests at concurrency {args.concurrency}")
        print("| route | p50 s (min-max) | requests/s at concurrency |")
        print("|---|---|---|")
        for route in args.routes:
            r = asyncio.run(measure(server.url, route, args.sequential, args.concurrency, args.total))
            print(f"| {route} | {r['p50']:.3f} ({r['min']:.3f}-{r['max']:.3f}) | {r['throughput']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
