"""The load-test sweep: our gateway and the seed-style baseline, side by side, in one run.

    python -m bench.sweep --clip .cache/clip-base --blip .cache/blip-base --out bench/results/sweep-cpu

For each service in turn (never two at once: they would share the cores), start it as a real
process on the same checkpoints, seed it with a few indexed images, then run each locust scenario
(bench/locustfile.py) closed-loop at each concurrency level: a warm-up, then a measured window.
Image scenarios run once per payload (--payloads: "photos", scikit-image's small photos in turn, and
bench/photos.py's camera sizes, e.g. phone-12mp); each row records the CPU milliseconds the service
process (and its children, but not Triton) spent per request in the window.
Services:

- baseline: bench/baseline_service.py (PyTorch per request, HF processors, FAISS);
- gateway-local: the embedded default (ONNX Runtime in-process, micro-batching, Milvus Lite);
- gateway-local-exact: the same with GATEWAY_EXACT_DECODE=true (uploads decoded at full size), for
  the cost of reduced-scale decoding's absence in one run (not in the default --services);
- gateway-local-int8: the embedded gateway on CLIP exported with --precision int8 (the repository
  beside --repository, suffixed -int8; not in the default --services);
- gateway-triton: the gateway in front of the bundled CPU tritonserver (python-backend flavour);
- gateway-triton-clip: the same without captions, so /embed-image/ is clip_image only, next to
  perf_analyzer on Triton's clip_image at the same concurrency (the gateway's overhead).

Captions are greedy, 20 new tokens, in both services (the gateway's default is 3 beams). Writes
sweep.json (every number), sweep.md (tables and our/baseline ratios) and throughput.png /
latency.png.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
from locust.env import Environment  # noqa: E402

from bench import payloads, perf_analyzer, photos  # noqa: E402
from bench.locustfile import USERS  # noqa: E402
from bench.machine import machine  # noqa: E402
from bench.payloads import unique_jpeg  # noqa: E402
from local_servers.processes import free_ports  # noqa: E402
from local_servers.service_process import ServiceProcess, gateway_process  # noqa: E402
from local_servers.tritonserver import TritonServer  # noqa: E402

SCENARIOS = {"embed-image": "EmbedImage", "image-search": "ImageSearch", "text-search": "TextSearch",
             "index-images": "IndexImages"}
IMAGE_SCENARIOS = ("embed-image", "image-search", "index-images")
DEFAULT_SCENARIOS = ["embed-image", "image-search", "text-search"]  # index-images on request: it grows the collection
DEFAULT_PAYLOAD = "photos"
SERVICES = ["baseline", "gateway-local", "gateway-local-exact", "gateway-local-int8", "gateway-triton", "gateway-triton-clip"]
OPT_IN = ("gateway-local-exact", "gateway-local-int8")
CAPTION = {"caption_beams": 1, "caption_max_new_tokens": 20}


def scenario_key(scenario: str, payload: str) -> str:
    return scenario if payload == DEFAULT_PAYLOAD else f"{scenario} {payload}"


def measure(url: str, scenario: str, users: int, warmup: float, duration: float, cpu_seconds) -> dict:
    """One closed-loop locust run: `users` requests always in flight; stats of the window after the
    warm-up, and the service's CPU milliseconds per request in that window."""
    env = Environment(user_classes=[USERS[SCENARIOS[scenario]]], host=url)
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=users)
    gevent.sleep(warmup)
    env.stats.reset_all()
    start, cpu_start = time.monotonic(), cpu_seconds()
    gevent.sleep(duration)
    total = env.stats.total
    cpu = cpu_seconds() - cpu_start
    result = {"concurrency": users, "requests": total.num_requests, "failures": total.num_failures,
              "rps": total.num_requests / (time.monotonic() - start),
              "cpu_ms_per_request": round(1000 * cpu / max(total.num_requests, 1), 1),
              **{f"p{p}_ms": total.get_response_time_percentile(p / 100) for p in (50, 95, 99)}}
    runner.quit()
    return result


def seed(url: str, count: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(count):
        files = {"files": ("seed.jpg", unique_jpeg(rng), "image/jpeg")}
        httpx.post(f"{url}/v1/images", files=files, timeout=600).raise_for_status()


def export(clip: str, blip: str, repository: Path) -> None:
    for model, source in (("clip", clip), ("blip", blip)):
        subprocess.run([sys.executable, "-m", "export", model, "--model", source, "--repository", str(repository),
                        "--flavour", "python", "--cpu"], check=True)


def int8_repository(args: argparse.Namespace) -> Path:
    return args.repository.with_name(args.repository.name + "-int8")


def export_int8(args: argparse.Namespace) -> None:
    """CLIP in int8 beside --repository, with the same BLIP (copied: BLIP is exported in fp32 only)."""
    import shutil

    target = int8_repository(args)
    subprocess.run([sys.executable, "-m", "export", "clip", "--model", args.clip, "--repository", str(target),
                    "--flavour", "python", "--cpu", "--precision", "int8"], check=True)
    shutil.rmtree(target / "blip_caption", ignore_errors=True)
    shutil.copytree(args.repository / "blip_caption", target / "blip_caption")


def precision(name: str) -> str:
    """What every row of a service is labelled with: its CLIP's precision."""
    return "int8" if name == "gateway-local-int8" else "n/a (PyTorch fp32)" if name == "baseline" else "fp32"


@contextmanager
def service(name: str, args: argparse.Namespace, workdir: Path):
    """Start one service; yields (its URL, Triton's gRPC address or None, its CPU-seconds counter)."""
    with ExitStack() as stack:
        if name == "baseline":
            (port,) = free_ports(1)
            command = [sys.executable, "-m", "bench.baseline_service", "--clip", args.clip, "--blip", args.blip,
                       "--port", str(port), "--max-new-tokens", "20", "--num-beams", "1"]
            process = stack.enter_context(ServiceProcess(command, port, {}, workdir / "baseline.log"))
            yield process.url, None, process.cpu_seconds
            return
        settings = dict(CAPTION, local_threads=args.threads)
        triton_url = None
        if name.startswith("gateway-triton"):
            triton = stack.enter_context(TritonServer(args.repository, workdir / "triton", startup_timeout=600))
            triton_url = triton.grpc_url
            settings.update(inference_mode="triton", triton_url=triton_url, triton_timeout_s=600)
        if name == "gateway-triton-clip":
            settings["captions"] = "false"
        if name == "gateway-local-exact":
            settings["exact_decode"] = "true"
        repository = int8_repository(args) if name == "gateway-local-int8" else args.repository
        gateway = stack.enter_context(gateway_process(repository, workdir / name, **settings))
        yield gateway.url, triton_url, gateway.cpu_seconds


def sweep(args: argparse.Namespace) -> dict:
    results = {"machine": machine(), "levels": args.levels, "warmup_s": args.warmup, "duration_s": args.duration,
               "checkpoints": {"clip": args.clip, "blip": args.blip}, "payloads": args.payloads, "services": {}}
    workdir = Path(tempfile.mkdtemp(prefix="sweep-"))
    for name in args.services:
        scenarios = ["embed-image"] if name == "gateway-triton-clip" else list(args.scenarios)
        with service(name, args, workdir) as (url, triton_url, cpu_seconds):
            print(f"[{name}] up at {url}; seeding {args.seed_images} images", flush=True)
            seed(url, args.seed_images)
            if name == "gateway-triton":
                results["wire_bytes"] = json.loads(subprocess.run(
                    [sys.executable, "-m", "bench.wire_bytes", "--repository", str(args.repository), "--triton", triton_url],
                    check=True, capture_output=True, text=True).stdout)
            runs = results["services"][name] = {}
            for scenario in scenarios:
                for payload in args.payloads if scenario in IMAGE_SCENARIOS else [DEFAULT_PAYLOAD]:
                    payloads.QUERY_PAYLOAD = None if payload == DEFAULT_PAYLOAD else payload
                    key = scenario_key(scenario, payload)
                    runs[key] = []
                    for level in args.levels:
                        row = measure(url, scenario, level, args.warmup, args.duration, cpu_seconds)
                        row["clip_precision"] = precision(name)
                        runs[key].append(row)
                        print(f"[{name}] {key} c={level}: {row['rps']:.2f} rps p50 {row['p50_ms']} ms,"
                              f" {row['cpu_ms_per_request']} CPU ms/request ({row['failures']} failed)", flush=True)
            payloads.QUERY_PAYLOAD = None
            if name == "gateway-triton-clip":
                rows = perf_analyzer.run("clip_image", triton_url, args.repository, args.levels, workdir / "pa",
                                         int(min(args.duration, 10) * 1000))  # perf_analyzer repeats until stable
                results["services"]["triton-raw"] = {"clip_image": rows}
                for row in rows:
                    print(f"[triton-raw] clip_image c={row['concurrency']}: {row['rps']:.2f} rps", flush=True)
    return results


def best(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: r["rps"])


def markdown(results: dict) -> str:
    services, levels = results["services"], results["levels"]
    m = results["machine"]
    lines = [f"# Load-test sweep ({m['date']})", "",
             f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GiB, Python {m['python']}. Closed loop: at"
             f" concurrency c, c requests are always in flight. Each cell: one {results['duration_s']:.0f} s window after"
             f" a {results['warmup_s']:.0f} s warm-up. Checkpoints: {results['checkpoints']['clip']},"
             f" {results['checkpoints']['blip']}.", ""]
    keys = list(dict.fromkeys(key for runs in services.values() for key in runs if key != "clip_image"))
    for scenario in keys:
        names = [n for n in services if scenario in services[n]]
        lines += [f"## {scenario}", "", "| service | " + " | ".join(f"c={c}" for c in levels) + " | best rps |",
                  "|---|" + "---|" * (len(levels) + 1)]
        for name in names:
            rows = services[name][scenario]
            cells = [f"{r['rps']:.2f} rps, p50 {r['p50_ms']:.0f} / p95 {r['p95_ms']:.0f} / p99 {r['p99_ms']:.0f} ms"
                     + (f", {r['cpu_ms_per_request']:.0f} CPU ms/req" if "cpu_ms_per_request" in r else "")
                     + (f", {r['failures']} failed" if r["failures"] else "") for r in rows]
            label = f"{name} (CLIP {rows[0]['clip_precision']})" if "clip_precision" in rows[0] else name
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {best(rows)['rps']:.2f} |")
        if "gateway-local-exact" in names and "gateway-local" in names:
            exact = best(services["gateway-local-exact"][scenario])["rps"]
            lines.append(f"\ngateway-local / gateway-local-exact (reduced-scale vs full-size decoding), best throughput:"
                         f" **{best(services['gateway-local'][scenario])['rps'] / exact:.2f}x**")
        if "baseline" in services and scenario in services["baseline"]:
            base = best(services["baseline"][scenario])["rps"]
            for name in names:
                if name in ("gateway-local", "gateway-local-int8", "gateway-triton"):  # -triton-clip does less: no ratio
                    lines.append(f"\n{name} / baseline, best throughput: **{best(services[name][scenario])['rps'] / base:.2f}x**")
        lines.append("")
    if "wire_bytes" in results:
        lines += ["## Bytes per request to Triton (serialised gRPC requests, bench/wire_bytes.py)", "", "```",
                  json.dumps(results["wire_bytes"], indent=2), "```", ""]
    if "triton-raw" in services and "embed-image" in services.get("gateway-triton-clip", {}):
        lines += ["## Gateway overhead: /embed-image/ without captions vs perf_analyzer on clip_image", "",
                  "| concurrency | gateway rps | raw Triton rps | gateway / raw |", "|---|---|---|---|"]
        for gw, raw in zip(services["gateway-triton-clip"]["embed-image"], services["triton-raw"]["clip_image"]):
            lines.append(f"| {gw['concurrency']} | {gw['rps']:.2f} | {raw['rps']:.2f} | {gw['rps'] / raw['rps']:.0%} |")
        lines.append("")
    return "\n".join(lines)


PANELS = [("embed-image", "embed-image", ("baseline", "gateway-local", "gateway-triton")),
          ("image-search", "image-search", ("baseline", "gateway-local", "gateway-triton")),
          ("text-search", "text-search", ("baseline", "gateway-local", "gateway-triton")),
          ("clip_image only: gateway vs raw Triton", "embed-image", ("gateway-triton-clip", "triton-raw"))]


def plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    services, levels = results["services"], results["levels"]

    def rows_of(name: str, scenario: str) -> list[dict] | None:
        runs = services.get(name, {})
        return runs.get(scenario) or (runs.get("clip_image") if name == "triton-raw" else None)

    for kind in ("throughput", "latency"):
        fig, axes = plt.subplots(1, len(PANELS), figsize=(4.6 * len(PANELS), 3.8))
        for ax, (title, scenario, names) in zip(axes, PANELS):
            for index, name in enumerate(names):
                rows = rows_of(name, scenario)
                if not rows:
                    continue
                x = [r["concurrency"] for r in rows]
                if kind == "throughput":
                    ax.plot(x, [r["rps"] for r in rows], marker="o", color=f"C{index}", label=name)
                else:
                    for p, style in ((50, "-"), (95, "--"), (99, ":")):
                        ax.plot(x, [r[f"p{p}_ms"] for r in rows], style, color=f"C{index}", label=f"{name} p{p}")
            ax.set(title=title, xlabel="concurrency (requests in flight)", xscale="log",
                   ylabel="requests/s" if kind == "throughput" else "latency (ms)",
                   yscale="linear" if kind == "throughput" else "log")
            ax.set_xticks(levels, [str(c) for c in levels])
            ax.xaxis.set_minor_locator(NullLocator())
            if kind == "throughput":
                ax.set_ylim(bottom=0)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{kind}.png", dpi=110)
        plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", help="CLIP checkpoint (hub id or folder)")
    parser.add_argument("--blip", help="BLIP captioning checkpoint (hub id or folder)")
    parser.add_argument("--repository", type=Path, default=Path(".cache/sweep-repository"),
                        help="exported here (python flavour, so the bundled Triton serves it too)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--replot", action="store_true", help="only rewrite sweep.md and the plots from OUT/sweep.json")
    parser.add_argument("--services", nargs="+", default=[s for s in SERVICES if s not in OPT_IN], choices=SERVICES)
    parser.add_argument("--scenarios", nargs="+", default=DEFAULT_SCENARIOS, choices=list(SCENARIOS))
    parser.add_argument("--payloads", nargs="+", default=[DEFAULT_PAYLOAD],
                        choices=[DEFAULT_PAYLOAD, *photos.NAMES], help="what image scenarios upload (bench/photos.py)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--seed-images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="GATEWAY_LOCAL_THREADS (0: all cores)")
    args = parser.parse_args(argv)
    if args.replot:
        results = json.loads((args.out / "sweep.json").read_text())
    else:
        if not (args.clip and args.blip):
            parser.error("--clip and --blip are required (unless --replot)")
        export(args.clip, args.blip, args.repository)
        if "gateway-local-int8" in args.services:
            export_int8(args)
        results = sweep(args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sweep.json").write_text(json.dumps(results, indent=2))
    (args.out / "sweep.md").write_text(markdown(results))
    plots(results, args.out)
    print(markdown(results))


if __name__ == "__main__":
    main()
