"""gRPC vs HTTP on one gateway process, side by side in one run: text search, image search and bulk
indexing, each at several concurrencies, the two transports interleaved in every round.

    python -m bench.grpc_vs_http --repository model_repository --out bench/results/grpc-vs-http-cpu-2core

A closed-loop asyncio driver per transport (httpx with one connection per in-flight request; grpc.aio
on one channel, HTTP/2): c requests always in flight, a warm-up, then a measured window. Per cell:
throughput (requests/s; indexing also images/s), p50/p95/p99 latency, the gateway's CPU ms per
request and the driver's own (what each client stack costs). Indexing sends batches of --batch images
(bytes never sent before: bench.payloads.never_sent; no captions: BLIP would hide the transport);
image search sends a bench.photos payload. The driver runs on the same machine as the gateway: both transports pay for that alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import numpy as np

from bench.machine import machine
from bench.payloads import QUERIES, never_sent, unique_jpeg
from bench.photos import payloads
from gateway.api import image_search_pb2 as pb
from gateway.api import image_search_pb2_grpc as pb_grpc
from local_servers.service_process import gateway_process

SCENARIOS = ("text-search", "image-search", "bulk-index")
TRANSPORTS = ("http", "grpc")
PHOTO_POOL = [unique_jpeg(np.random.default_rng(seed)) for seed in range(32)]  # distinct crops of real photos


class Transport:
    """The three scenarios' calls over one transport; each returns how many items it carried."""

    def __init__(self, name: str, url: str, grpc_target: str, concurrency: int, image: bytes, batch: int):
        self.name, self.image, self.batch = name, image, batch
        self.rng = np.random.default_rng()
        self.http = httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=concurrency))
        self.channel = grpc.aio.insecure_channel(grpc_target, options=[("grpc.max_send_message_length", 64 * 2**20)])
        self.stub = pb_grpc.ImageSearchStub(self.channel)

    async def call(self, scenario: str, n: int) -> int:
        if scenario == "text-search":
            query = QUERIES[n % len(QUERIES)]
            if self.name == "http":
                (await self.http.get("/v1/search/text", params={"q": query, "k": 10})).raise_for_status()
            else:
                await self.stub.SearchText(pb.SearchTextRequest(query=query, k=10), timeout=600)
            return 1
        if scenario == "image-search":
            if self.name == "http":
                response = await self.http.post("/v1/search/image", data={"k": "10"},
                                                files={"file": ("q.jpg", self.image, "image/jpeg")})
                response.raise_for_status()
            else:
                await self.stub.SearchImage(pb.SearchImageRequest(image=self.image, k=10), timeout=600)
            return 1
        images = [never_sent(PHOTO_POOL[int(self.rng.integers(len(PHOTO_POOL)))]) for _ in range(self.batch)]
        if self.name == "http":
            response = await self.http.post("/v1/images", data={"captions": "false"},
                                            files=[("files", (f"{i}.jpg", d, "image/jpeg")) for i, d in enumerate(images)])
            response.raise_for_status()
        else:
            messages = [pb.IndexImagesRequest(image=d, name=f"{i}.jpg") for i, d in enumerate(images)]
            messages[0].captions = False
            await self.stub.IndexImages(iter(messages), timeout=600)
        return len(images)

    async def close(self) -> None:
        await self.http.aclose()
        await self.channel.close()


async def closed_loop(transport: Transport, scenario: str, concurrency: int, warmup: float, duration: float,
                      gateway_cpu) -> dict:
    latencies: list[float] = []
    items, failures, counter = [0], [0], iter(range(10**9))
    measuring, stop = asyncio.Event(), asyncio.Event()

    async def user() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                carried = await transport.call(scenario, next(counter))
            except (httpx.HTTPError, grpc.RpcError):
                failures[0] += measuring.is_set()
                continue
            if measuring.is_set() and not stop.is_set():
                latencies.append(time.perf_counter() - start)
                items[0] += carried

    users = [asyncio.create_task(user()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    measuring.set()
    start, cpu_start, client_start = time.monotonic(), gateway_cpu(), time.process_time()
    await asyncio.sleep(duration)
    stop.set()
    elapsed, cpu, client = time.monotonic() - start, gateway_cpu() - cpu_start, time.process_time() - client_start
    await asyncio.gather(*users)
    quantiles = np.percentile(np.array(latencies) * 1000, [50, 95, 99]) if latencies else [float("nan")] * 3
    return {"requests": len(latencies), "failures": failures[0], "rps": len(latencies) / elapsed,
            "items_per_s": items[0] / elapsed, "p50_ms": quantiles[0], "p95_ms": quantiles[1], "p99_ms": quantiles[2],
            "gateway_cpu_ms_per_request": 1000 * cpu / max(len(latencies), 1),
            "client_cpu_ms_per_request": 1000 * client / max(len(latencies), 1)}


async def run(args: argparse.Namespace) -> dict:
    image = payloads()[args.image_payload]
    results: dict = {"machine": machine(), "levels": args.levels, "rounds": args.rounds, "warmup_s": args.warmup,
                     "duration_s": args.duration, "batch": args.batch, "image_payload": args.image_payload,
                     "image_bytes": len(image), "repository": str(args.repository), "cells": []}
    workdir = Path(tempfile.mkdtemp(prefix="grpc-vs-http-"))
    with gateway_process(args.repository, workdir, captions="false", local_threads=str(args.threads)) as gateway:
        assert gateway.grpc_url
        seeder = Transport("grpc", gateway.url, gateway.grpc_url, 1, image, 16)
        for n in range(args.seed_batches):
            await seeder.call("bulk-index", n)
        await seeder.close()
        for round_ in range(args.rounds):
            for scenario in args.scenarios:
                for level in args.levels:
                    order = TRANSPORTS if round_ % 2 == 0 else TRANSPORTS[::-1]  # neither always goes first
                    for name in order:
                        transport = Transport(name, gateway.url, gateway.grpc_url, level, image, args.batch)
                        row = await closed_loop(transport, scenario, level, args.warmup, args.duration, gateway.cpu_seconds)
                        await transport.close()
                        row.update(round=round_, scenario=scenario, concurrency=level, transport=name)
                        results["cells"].append(row)
                        print(f"[round {round_}] {scenario} c={level} {name}: {row['rps']:.2f} rps, p50 {row['p50_ms']:.1f} ms,"
                              f" gateway {row['gateway_cpu_ms_per_request']:.1f} / client"
                              f" {row['client_cpu_ms_per_request']:.1f} CPU ms/req, {row['failures']} failed", flush=True)
    return results


def spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"# gRPC vs HTTP, one gateway process ({m['date']})", "",
             f"{m['cpu']}, {m['cores']} cores, Python {m['python']}. Gateway in-process models ({results['repository']}),"
             f" Milvus Lite, no captions. {results['rounds']} rounds, transports interleaved; each cell a"
             f" {results['duration_s']:.0f} s window after {results['warmup_s']:.0f} s warm-up; median (min-max) over rounds."
             f" Image search sends {results['image_payload']} ({results['image_bytes']:,} bytes); indexing sends batches"
             f" of {results['batch']} JPEGs never sent before (scikit-image photo crops, at most 512 px; rps = batches/s).", "",
             "| scenario | c | HTTP rps | gRPC rps | gRPC/HTTP rps | HTTP p50 ms | gRPC p50 ms | gRPC/HTTP p50 |"
             " gateway CPU ms/req HTTP / gRPC | client CPU ms/req HTTP / gRPC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for scenario in SCENARIOS:
        for level in results["levels"]:
            cells = {t: [c for c in results["cells"] if c["scenario"] == scenario and c["concurrency"] == level
                         and c["transport"] == t] for t in TRANSPORTS}
            if not cells["http"]:
                continue
            column = {t: {k: [c[k] for c in cells[t]] for k in cells[t][0] if isinstance(cells[t][0][k], float)}
                      for t in TRANSPORTS}
            rps = [g["rps"] / h["rps"] for h, g in zip(cells["http"], cells["grpc"])]
            p50 = [g["p50_ms"] / h["p50_ms"] for h, g in zip(cells["http"], cells["grpc"])]
            lines.append(
                f"| {scenario} | {level} | {spread(column['http']['rps'], 2)} | {spread(column['grpc']['rps'], 2)} |"
                f" {statistics.median(rps):.2f}x ({min(rps):.2f}-{max(rps):.2f}) | {spread(column['http']['p50_ms'])} |"
                f" {spread(column['grpc']['p50_ms'])} | {statistics.median(p50):.2f}x |"
                f" {statistics.median(column['http']['gateway_cpu_ms_per_request']):.1f} /"
                f" {statistics.median(column['grpc']['gateway_cpu_ms_per_request']):.1f} |"
                f" {statistics.median(column['http']['client_cpu_ms_per_request']):.1f} /"
                f" {statistics.median(column['grpc']['client_cpu_ms_per_request']):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repository", type=Path, help="an exported model repository (CLIP is enough)")
    parser.add_argument("--out", type=Path, help="folder for grpc-vs-http.json and .md (default: print only)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--levels", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed-batches", type=int, default=8, help="batches of 16 indexed before measuring")
    parser.add_argument("--image-payload", default="web-2mp", help="a bench.photos payload for image search")
    parser.add_argument("--threads", type=int, default=0, help="the gateway's onnxruntime threads (0: all cores)")
    parser.add_argument("--replot", action="store_true", help="rewrite the .md from --out's JSON, measuring nothing")
    args = parser.parse_args(argv)
    if not (args.repository or args.replot and args.out):
        parser.error("--repository is needed (or --replot with --out)")
    if args.replot:
        results = json.loads((args.out / "grpc-vs-http.json").read_text())
    else:
        results = asyncio.run(run(args))
    table = markdown(results)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "grpc-vs-http.json").write_text(json.dumps(results, indent=1))
        (args.out / "grpc-vs-http.md").write_text(table)


if __name__ == "__main__":
    main()
