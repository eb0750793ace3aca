"""The vector tier at a million images on a Milvus server, written and searched the way the gateway
does it, with the segment and index state beside every latency.

    python -m bench.vector_tier --vectors 1000000 --out bench/results/vector-search-server

The collection is created by the gateway's own store (gateway.backends.milvus.MilvusStore: its schema,
HNSW build settings, Session reads) and filled through it: upserts of the CLI's batch size (8 images per
request) from 8 requests in flight, each record with a caption, a source, metadata and a thumbnail
of --thumbnail-bytes. Vectors are CLIP-like (bench.vector_search.dataset); queries are fresh draws;
the reference is exact cosine top-10 by numpy over all rows, and over the filtered rows for filtered
searches (metadata.shard: 1% and 0.1% of rows).

Phases, each measured the same way (searches through the store, one at a time and 8 in flight):
  loaded     right after the last upsert returned
  flushed    after a flush (what the gateway does after a bulk load), once every segment is sealed,
             indexed and loaded (the time is reported); Milvus is still compacting and re-indexing
  quiet      once the server has finished that work (its CPU idle): the state the collection stays in,
             the rows marked gateway_default
Per phase: segments loaded by the query node (state, rows, with an index or not), describe_index's
counts, and per HNSW ef: p50/p95/p99 and recall@10.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.machine import machine
from bench.vector_search import DIM, K, dataset, exact_top_k
from gateway.backends.milvus import MilvusStore
from gateway.core.filters import Condition, FilterCondition, check
from gateway.core.records import ImageRecord
from gateway.settings import Settings
from gateway.wiring import build_store

BATCH, IN_FLIGHT = 8, 8  # the CLI's images per request and its requests in flight
SHARDS = 1000  # metadata.shard = row % 1000
FILTERS = {"1%": check([FilterCondition(field="metadata.shard", op="lt", value=10)]),
           "0.1%": check([FilterCondition(field="metadata.shard", op="eq", value=0)])}


def records(vectors: np.ndarray, start: int, thumbnail: str) -> list[ImageRecord]:
    return [ImageRecord(f"{start + i:032x}", f"a photo number {start + i}", f"photos/{start + i}.jpg",
                        {"shard": (start + i) % SHARDS}, 1_700_000_000 + start + i, "0" * 16, vector, thumbnail)
            for i, vector in enumerate(vectors)]


async def load(store: MilvusStore, vectors: np.ndarray, thumbnail: str) -> float:
    """Upsert every vector through the store, BATCH rows per call, IN_FLIGHT calls at once; rows/s."""
    starts = iter(range(0, len(vectors), BATCH))
    started = time.perf_counter()

    async def writer() -> None:
        for start in starts:
            await store.upsert(records(vectors[start:start + BATCH], start, thumbnail))
            if start % 100_000 == 0:
                print(f"  upserted {start:,} rows, {start / (time.perf_counter() - started):,.0f} rows/s", flush=True)

    await asyncio.gather(*(writer() for _ in range(IN_FLIGHT)))
    return len(vectors) / (time.perf_counter() - started)


def state(store: MilvusStore, rows: int) -> dict:
    """What the query node has loaded (its sealed segments; growing ones are not listed), and the
    index's own counts (rows in flushed segments)."""
    segments = store.client.list_loaded_segments(store.name)
    sealed = sorted(s.num_rows for s in segments if s.state_name != "Growing")
    index = store.client.describe_index(store.name, "vector")
    return {"segments_loaded": len(segments), "segments_by_state": dict(Counter(s.state_name for s in segments)),
            "rows_in_growing": rows - sum(sealed),
            "sealed_without_index": sum(1 for s in segments if s.state_name != "Growing" and not s.index_id),
            "sealed_rows_min_median_max": [sealed[0], int(statistics.median(sealed)), sealed[-1]] if sealed else [],
            "index_total_rows": index.get("total_rows"), "index_indexed_rows": index.get("indexed_rows"),
            "index_pending_rows": index.get("pending_index_rows"), "index_state": str(index.get("state"))}


def settled(store: MilvusStore, rows: int) -> bool:
    """Every row in a sealed segment the query node has loaded with its index."""
    segments = store.client.list_loaded_segments(store.name)
    return all(s.state_name != "Growing" and s.index_id for s in segments) and sum(s.num_rows for s in segments) >= rows


async def wait_settled(store: MilvusStore, rows: int, limit_s: float = 3600) -> float:
    started = time.perf_counter()
    while not settled(store, rows):
        if time.perf_counter() - started > limit_s:
            raise TimeoutError(f"not settled after {limit_s:.0f}s: {state(store, rows)}")
        await asyncio.sleep(5)
    return time.perf_counter() - started


async def wait_quiet(server, limit_s: float = 7200) -> float:
    """Until the server has finished its own work after the load (compactions merge the sealed
    segments, and the merged segments are indexed again: index builds run at nice 19): its processes
    together under 10% of one core for 20 s."""
    import psutil

    started = time.perf_counter()
    root = psutil.Process(server.process.pid)
    while time.perf_counter() - started < limit_s:
        processes = [root, *root.children(recursive=True)]
        for process in processes:
            process.cpu_percent(None)
        await asyncio.sleep(20)
        if sum(p.cpu_percent(None) for p in processes) < 10:
            return time.perf_counter() - started
    raise TimeoutError(f"the server was still busy after {limit_s:.0f}s")


async def searches(store: MilvusStore, queries: np.ndarray, truth: np.ndarray, conditions: list[Condition],
                   in_flight: int) -> dict:
    """Every query through the store's search (the gateway's parameters and output fields); latency per
    call, recall@10 against truth, throughput."""
    await store.search(queries[:1], K, conditions)  # warm-up
    latencies: list[float] = []
    found: dict[int, list[str]] = {}
    pending = iter(range(len(queries)))

    async def searcher() -> None:
        for i in pending:
            start = time.perf_counter()
            (hits,) = await store.search(queries[i:i + 1], K, conditions)
            latencies.append((time.perf_counter() - start) * 1000)
            found[i] = [record.id for record, _ in hits]

    started = time.perf_counter()
    await asyncio.gather(*(searcher() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    recall = np.mean([len({int(h, 16) for h in found[i]} & set(truth[i].tolist())) / K for i in range(len(queries))])
    q = statistics.quantiles(latencies, n=100)
    return {"in_flight": in_flight, "p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2), "p99_ms": round(q[98], 2),
            "searches_per_s": round(len(queries) / elapsed, 1), "recall_at_10": round(float(recall), 4)}


async def measure(store: MilvusStore, phase: str, rows: int, queries: np.ndarray, truths: dict[str, np.ndarray],
                  efs: list[int], default_ef: int, default_phase: str) -> list[dict]:
    snapshot = state(store, rows)
    print(f"{phase}: {json.dumps(snapshot)}", flush=True)
    results = []
    # Growing rows are searched without the HNSW graph (ef does not apply): the breadths only once sealed.
    plan = [(ef, "none", 1) for ef in (efs if phase != "loaded" else [default_ef])] + [(default_ef, "none", IN_FLIGHT)]
    plan += [(default_ef, name, n) for name in FILTERS for n in (1, IN_FLIGHT)]
    for ef, filtered, in_flight in plan:
        store.options = replace(store.options, hnsw_ef=ef)
        result = await searches(store, queries, truths[filtered], FILTERS.get(filtered, []), in_flight)
        results.append({"phase": phase, "ef": ef, "filter": filtered, **result,
                        "gateway_default": ef == default_ef and phase == default_phase, **snapshot})
        print(json.dumps({k: results[-1][k] for k in ("phase", "ef", "filter", "in_flight", "p50_ms", "p95_ms", "p99_ms",
                                                    "searches_per_s", "recall_at_10", "gateway_default")}), flush=True)
    return results


async def run(args: argparse.Namespace) -> dict:
    from local_servers.milvus_server import MilvusServer

    vectors, queries = dataset(args.vectors, args.queries)
    shard = np.arange(args.vectors) % SHARDS
    truths = {"none": exact_top_k(vectors, queries)}
    for name, selected in {"1%": np.flatnonzero(shard < 10), "0.1%": np.flatnonzero(shard == 0)}.items():
        truths[name] = selected[exact_top_k(vectors[selected], queries)]
    default_ef = Settings().hnsw_ef
    efs = sorted({default_ef, *args.ef})
    workdir = Path(tempfile.mkdtemp(prefix="vector-tier-"))
    server = MilvusServer(workdir / "milvus").start()
    result: dict = {"machine": machine(), "vectors": args.vectors, "queries": args.queries, "dim": DIM,
                    "thumbnail_bytes": args.thumbnail_bytes, "batch": BATCH, "in_flight_writes": IN_FLIGHT,
                    "gateway_default_ef": default_ef, "milvus_config": server.config, "rows": []}
    try:
        # the flush is the benchmark's (the gateway's own comes 5 s after a bulk load: GATEWAY_FLUSH_AFTER_ROWS)
        store = build_store(Settings(_env_file=None, milvus_uri=server.uri, collection="images", index_type="HNSW",
                                     store_timeout_s=120, flush_after_rows=0), DIM)
        await store.start()
        result["upsert_rows_per_s"] = round(await load(store, vectors, "A" * args.thumbnail_bytes))
        print(f"upserted {args.vectors:,} rows at {result['upsert_rows_per_s']:,} rows/s", flush=True)

        async def measured(phase: str) -> None:
            if phase in args.phases:
                result["rows"] += await measure(store, phase, args.vectors, queries, truths, efs, default_ef, "quiet")

        await measured("loaded")
        started = time.perf_counter()
        await asyncio.to_thread(store.client.flush, store.name)
        result["flush_s"] = round(time.perf_counter() - started, 1)
        result["flushed_to_settled_s"] = round(await wait_settled(store, args.vectors), 1)
        print(f"flush {result['flush_s']} s, then settled after {result['flushed_to_settled_s']} s", flush=True)
        await measured("flushed")
        result["flushed_to_quiet_s"] = round(time.perf_counter() - started + await wait_quiet(server), 1)
        print(f"quiet {result['flushed_to_quiet_s']} s after the flush", flush=True)
        await measured("quiet")
        await store.close()
    finally:
        server.stop()
    return result


def table(result: dict) -> str:
    lines = [f"{result['vectors']:,} vectors, thumbnails of {result['thumbnail_bytes']} bytes; upserts"
             f" {result['upsert_rows_per_s']:,} rows/s ({result['batch']} per call, {result['in_flight_writes']} in flight);"
             f" flush {result.get('flush_s')} s, settled {result.get('flushed_to_settled_s')} s later", "",
             "| phase | segments (growing rows) | ef | filter | in flight | recall@10 | p50 ms | p95 ms | p99 ms"
             " | searches/s | default |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['phase']} | {r['segments_loaded']} ({r['rows_in_growing']:,}) | {r['ef']} | {r['filter']} |"
              f" {r['in_flight']} | {r['recall_at_10']:.4f} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} |"
              f" {r['searches_per_s']} | {'yes' if r['gateway_default'] else ''} |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--ef", type=int, nargs="*", default=[64, 128, 256])
    parser.add_argument("--thumbnail-bytes", type=int, default=1000)
    parser.add_argument("--phases", nargs="+", default=["loaded", "flushed", "quiet"], choices=["loaded", "flushed", "quiet"],
                        help="which states to measure (the waits run regardless)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run(args))
    (args.out / "vector_tier.json").write_text(json.dumps(result, indent=2))
    (args.out / "vector_tier.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()
