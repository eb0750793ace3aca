"""Soak: minutes of mixed load (bench/locustfile.py's Mix) on the embedded stack, reporting errors,
latency and memory growth.

    python -m bench.soak --repository model_repository --duration 600            # the 10-minute soak
    python -m bench.soak --url http://host:8000 --pid 1234 --duration 600         # a running gateway

Starts `python -m gateway` (embedded mode, fresh Milvus Lite file) unless --url is given. Samples
the resident memory of the gateway and its children (Milvus Lite) every few seconds; growth is the
mean of the last three samples over the mean of the first three after the warm-up (the first
--warmup seconds: allocator arenas, model sessions and caches fill then). Exit status 1 when any
request failed or memory grew more than --max-growth.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import psutil  # noqa: E402
from locust.env import Environment  # noqa: E402

from bench.locustfile import Mix  # noqa: E402
from local_servers.service_process import gateway_process  # noqa: E402


def run_load(url: str, users: int, duration: float, sample_every: float, rss) -> tuple[Environment, list]:
    env = Environment(user_classes=[Mix], host=url)
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=users)
    samples, start = [], time.monotonic()
    while time.monotonic() - start < duration:
        samples.append((round(time.monotonic() - start, 1), rss()))
        gevent.sleep(sample_every)
    runner.quit()
    samples.append((round(time.monotonic() - start, 1), rss()))
    return env, samples


def growth(samples: list[tuple[float, int]], warmup: float) -> float:
    steady = [rss for t, rss in samples if t >= warmup]
    if len(steady) < 6:
        raise ValueError("too few memory samples after the warm-up: run longer or sample more often")
    return statistics.mean(steady[-3:]) / statistics.mean(steady[:3]) - 1


def report(env: Environment, samples: list, warmup: float) -> dict:
    routes = {}
    for (name, method), entry in sorted(env.stats.entries.items()):
        routes[f"{method} {name}"] = {"requests": entry.num_requests, "failures": entry.num_failures,
                                      "p50_ms": entry.get_response_time_percentile(0.5),
                                      "p95_ms": entry.get_response_time_percentile(0.95),
                                      "rps": round(entry.total_rps, 2)}
    errors = [{"route": e.name, "error": str(e.error)[:300], "count": e.occurrences} for e in env.stats.errors.values()]
    return {"requests": env.stats.total.num_requests, "failures": env.stats.total.num_failures, "errors": errors,
            "routes": routes, "rss_mb": [(t, round(b / 2 ** 20, 1)) for t, b in samples],
            "rss_growth": round(growth(samples, warmup), 4), "warmup_s": warmup}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--url", help="soak a running gateway instead of starting one (give --pid for memory)")
    parser.add_argument("--pid", type=int, help="the running gateway's process id")
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--warmup", type=float, help="seconds left out of the memory growth (default: a fifth)")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--sample-every", type=float, default=5)
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--out", type=Path, help="write the report here as JSON")
    args = parser.parse_args(argv)
    warmup = args.duration / 5 if args.warmup is None else args.warmup
    with ExitStack() as stack:
        if args.url:
            url, process = args.url, psutil.Process(args.pid)
            rss = lambda: sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
            gateway = stack.enter_context(gateway_process(args.repository, workdir))
            url, rss = gateway.url, gateway.rss_bytes
        env, samples = run_load(url, args.users, args.duration, args.sample_every, rss)
    result = report(env, samples, warmup)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    for route, stats in result["routes"].items():
        print(f"{route:40} {stats['requests']:6} requests {stats['failures']:4} failed  p50 {stats['p50_ms']:7.0f} ms"
              f"  p95 {stats['p95_ms']:7.0f} ms")
    print(f"{result['requests']} requests, {result['failures']} failed; memory {result['rss_mb'][0][1]} MB at start, "
          f"{result['rss_mb'][-1][1]} MB at the end, growth after the {warmup:.0f} s warm-up {result['rss_growth']:+.1%}")
    for error in result["errors"]:
        print(f"  {error['count']} x {error['route']}: {error['error']}")
    return 1 if result["failures"] or result["rss_growth"] > args.max_growth else 0


if __name__ == "__main__":
    raise SystemExit(main())
