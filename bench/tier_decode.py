"""Where uploads are decoded: the gateway (GATEWAY_DECODE=gateway, the default) or the inference tier
(GATEWAY_DECODE=inference: Triton's image_decode on nvImageCodec), side by side in one run.

    python -m bench.tier_decode --repository .cache/tier-repo --out bench/results/tier-decode-cpu-2core

The repository needs clip_image and the decode models (python -m export clip ... --flavour python
--cpu, then python -m export decode --repository ... --flavour python --cpu). One tritonserver (this
machine's CPU: nvImageCodec's libjpeg-turbo decoder) and two gateway processes in front of it, one per
mode, without captions; only one of them is sent requests at a time. Per round, payload, transport
(HTTP multipart, gRPC) and mode (the modes' order alternates every round): ``--requests`` image
searches one after the other, then the CPU seconds each side's process tree (the gateway; Triton with
its python stubs) spent over them, per request, and the latency. Rows: medians over the rounds with
(min-max); the ratio ``gateway_cpu_ms_tier_decode_over_gateway_decode`` is the median of the per-round
ratios. A last row measures image_decode alone: CLIP pixels of one upload per request, 4 in flight.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np

from bench import photos
from bench.machine import machine, write_results
from gateway.api import image_search_pb2 as pb
from gateway.api import image_search_pb2_grpc as pb_grpc
from local_servers.processes import tree_cpu_seconds
from local_servers.service_process import gateway_process
from local_servers.tritonserver import TritonServer

MODES = ("gateway", "inference")
TRANSPORTS = ("http", "grpc")


def searches(gateway, transport: str, data: bytes, count: int) -> list[float]:
    """Latencies (s) of ``count`` image searches, one after the other."""
    latencies = []
    with httpx.Client(timeout=120) as client, grpc.insecure_channel(gateway.grpc_url) as channel:
        stub = pb_grpc.ImageSearchStub(channel)
        for _ in range(count):
            start = time.perf_counter()
            if transport == "http":
                response = client.post(f"{gateway.url}/v1/search/image", files={"file": ("q.jpg", data, "image/jpeg")},
                                       data={"k": 10})
                assert response.status_code == 200, response.text
            else:
                stub.SearchImage(pb.SearchImageRequest(image=data, k=10), timeout=120)
            latencies.append(time.perf_counter() - start)
    return latencies


def cell(gateway, triton_cpu: Callable[[], float], transport: str, data: bytes, count: int) -> dict:
    """``count`` searches through ``gateway``; ``triton_cpu``: Triton's CPU seconds so far (0 where it runs
    elsewhere)."""
    searches(gateway, transport, data, 2)  # warm: connections, first batches
    gateway_before, triton_before = gateway.cpu_seconds(), triton_cpu()
    latencies = searches(gateway, transport, data, count)
    gateway_cpu, tier_cpu = gateway.cpu_seconds() - gateway_before, triton_cpu() - triton_before
    return {"gateway_cpu_ms": 1000 * gateway_cpu / count, "triton_cpu_ms": 1000 * tier_cpu / count,
            "p50_ms": 1000 * statistics.median(latencies), "rps": count / sum(latencies)}


def mode_gateways(repository: Path, workdir: Path, triton_url: str) -> dict:
    """One gateway process per decode mode in front of the Triton at ``triton_url`` (not started)."""
    settings = dict(inference_mode="triton", triton_url=triton_url, captions="false", max_upload_bytes=50_000_000,
                    triton_timeout_s=120)
    return {mode: gateway_process(repository, workdir / mode, decode=mode, **settings) for mode in MODES}


def decode_only(url: str, triton_cpu: Callable[[], float], data: bytes, count: int, in_flight: int = 4,
                model: str = "image_decode") -> dict:
    """``model`` alone (image_decode: CLIP's pixels; clip_image_bytes: the embedding), ``in_flight``
    requests at once: images/s and Triton CPU ms per image."""
    import tritonclient.grpc as client_module

    client = client_module.InferenceServerClient(url)
    output = "clip_pixels" if model == "image_decode" else "embeddings"

    def one(_):
        tensor = client_module.InferInput("image", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data]], dtype=object))
        client.infer(model, [tensor], outputs=[client_module.InferRequestedOutput(output)])

    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(one, range(in_flight)))
        before, start = triton_cpu(), time.perf_counter()
        list(pool.map(one, range(count)))
        elapsed, cpu = time.perf_counter() - start, triton_cpu() - before
    return {"images_per_s": count / elapsed, "triton_cpu_ms": 1000 * cpu / count}


def spread(values: list[float], digits: int = 1) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def run(args: argparse.Namespace) -> dict:
    payloads = photos.payloads()
    measured: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory() as scratch, \
            TritonServer(args.repository, Path(scratch) / "triton", startup_timeout=600) as triton:
        gateways = mode_gateways(args.repository, Path(scratch), triton.grpc_url)
        for gateway in gateways.values():
            gateway.start()
        try:
            for round_ in range(args.rounds):
                order = MODES if round_ % 2 == 0 else MODES[::-1]
                for payload in args.payloads:
                    for transport in TRANSPORTS:
                        for mode in order:
                            row = cell(gateways[mode], lambda: tree_cpu_seconds(triton.process.pid), transport,
                                       payloads[payload], args.requests)
                            measured.setdefault((payload, transport, mode), []).append(row)
                            print(f"round {round_ + 1} {payload} {transport} {mode}: gateway {row['gateway_cpu_ms']:.1f}"
                                  f" / Triton {row['triton_cpu_ms']:.1f} CPU ms per search, p50 {row['p50_ms']:.0f} ms",
                                  flush=True)
            decoded = {payload: decode_only(triton.grpc_url, lambda: tree_cpu_seconds(triton.process.pid), payloads[payload],
                                            args.requests) for payload in args.payloads}
        finally:
            for gateway in gateways.values():
                gateway.stop()
    rows = []
    for (payload, transport, mode), cells in measured.items():
        rows.append({"payload": payload, "transport": transport, "decode": mode, "rounds": len(cells),
                     "requests_per_round": args.requests,
                     **{key: spread([c[key] for c in cells], 2 if key == "rps" else 1)
                        for key in ("gateway_cpu_ms", "triton_cpu_ms", "p50_ms", "rps")}})
    ratios = []
    for payload in args.payloads:
        for transport in TRANSPORTS:
            per_round = [t["gateway_cpu_ms"] / g["gateway_cpu_ms"] for g, t in
                         zip(measured[(payload, transport, "gateway")], measured[(payload, transport, "inference")])]
            total = [(t["gateway_cpu_ms"] + t["triton_cpu_ms"]) / (g["gateway_cpu_ms"] + g["triton_cpu_ms"]) for g, t in
                     zip(measured[(payload, transport, "gateway")], measured[(payload, transport, "inference")])]
            ratios.append({"payload": payload, "transport": transport,
                           "gateway_cpu_ms_tier_decode_over_gateway_decode": spread(per_round, 3),
                           "both_sides_cpu_tier_decode_over_gateway_decode": spread(total, 3)})
    return {"machine": machine(), "photos": photos.source(), "repository": str(args.repository),
            "model": "CLIP ViT-B/32 shape, random weights (python-backend flavour on this CPU)",
            "rows": rows, "ratios": ratios,
            "image_decode_alone": [{"payload": p, "in_flight": 4, **{k: round(v, 1) for k, v in d.items()}}
                                   for p, d in decoded.items()]}


def fmt(s: dict) -> str:
    return f"{s['median']} ({s['min']}-{s['max']})"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Decoding in the gateway vs on the inference tier ({m['date']}, {m['cpu']}, {m['cores']} cores,"
             f" flags {' '.join(m['cpu_flags'])})", "",
             f"Photos: {result['photos']}. {result['model']}. Medians over the rounds (min-max); CPU ms per image"
             " search of each side's process tree.", "",
             "| payload | transport | decode | gateway CPU ms | Triton CPU ms | p50 ms | searches/s |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['payload']} | {r['transport']} | {r['decode']} | {fmt(r['gateway_cpu_ms'])} |"
                     f" {fmt(r['triton_cpu_ms'])} | {fmt(r['p50_ms'])} | {fmt(r['rps'])} |")
    lines += ["", "| payload | transport | gateway CPU, tier decode / gateway decode | both sides' CPU, the same |",
              "|---|---|---|---|"]
    for r in result["ratios"]:
        lines.append(f"| {r['payload']} | {r['transport']} | {fmt(r['gateway_cpu_ms_tier_decode_over_gateway_decode'])}x |"
                     f" {fmt(r['both_sides_cpu_tier_decode_over_gateway_decode'])}x |")
    lines += ["", "| payload | image_decode alone: images/s (4 in flight) | Triton CPU ms per image |", "|---|---|---|"]
    lines += [f"| {d['payload']} | {d['images_per_s']} | {d['triton_cpu_ms']} |" for d in result["image_decode_alone"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True, help="clip_image and the decode models (see above)")
    parser.add_argument("--payloads", nargs="+", default=["phone-12mp", "web-2mp"], choices=photos.NAMES)
    parser.add_argument("--requests", type=int, default=30, help="searches per cell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = run(args)
    write_results(args.out, "tier_decode", result, markdown(result))


if __name__ == "__main__":
    main()
