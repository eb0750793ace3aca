"""The vector tier at a million images on a Milvus server, shared by tenants, written and searched the
way the gateway does it, with the segment and index state beside every latency.

    python -m bench.vector_tier --vectors 1000000 --out bench/results/vector-search-server-tenants

The collection is created by the gateway's own store (gateway.backends.milvus.MilvusStore: its schema,
the tenant partition key, the declared filter field metadata.shard (integer), HNSW build settings,
Session reads) and filled through it as the service writes new images (8 per request, 8 requests in
flight; each request one tenant's), each record with a caption, a source, metadata and a thumbnail of
--thumbnail-bytes. Records belong to --tenants tenants of power-law sizes (Zipf, the largest ~10% of
rows, most small). Vectors are CLIP-like (bench.vector_search.dataset); queries are fresh draws; the
reference is exact cosine top-10 by numpy over the rows each search may return.

Searches (``filter`` in each row), each one at a time and 8 in flight:
  none             every tenant's rows, no filter (the unfiltered baseline, at several HNSW ef)
  tenant:large     the largest tenant's rows (tenant-scoped, as every search with a tenant's key)
  tenant:median    the tenant of median size
  tenant:tiny      the smallest tenant
  declared:1%      metadata.shard < 10 on the declared (typed, indexed) field, across tenants
  declared:0.1%    metadata.shard == 0, likewise
  json:1%          metadata.jshard < 10, an undeclared key holding the same values: the JSON path
Phases (--phases): loaded (right after the last write), flushed (every segment sealed, indexed, loaded)
and quiet (the server idle after its compactions: the state the collection stays in, the rows marked
gateway_default). Before the load, ingest side by side (--ingest-rows, rounds alternating): today's shape
(no partition key, one tenant, no declared field, upserts) against tenants (partition key, --tenants
tenants, the declared field, the service's writes of new records).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.machine import machine
from bench.vector_search import DIM, K, dataset, exact_top_k
from gateway.backends.milvus import MilvusStore
from gateway.core.filters import Condition, FilterCondition, check
from gateway.core.records import DEFAULT_TENANT, ImageRecord
from gateway.settings import Settings
from gateway.wiring import build_store

BATCH, IN_FLIGHT = 8, 8  # the CLI's images per request and its requests in flight
SHARDS = 1000  # metadata.shard = metadata.jshard = row % 1000
DECLARED = {"shard": "integer"}
ZIPF = 0.9  # tenant sizes ~ 1 / rank^ZIPF: the largest of 1,000 holds ~9.5% of the rows, the median ~0.035%
SWEPT = ("none", "tenant:large", "declared:1%")  # searched at every --ef, one at a time
FILTERS = {"declared:1%": [FilterCondition(field="metadata.shard", op="lt", value=10)],
           "declared:0.1%": [FilterCondition(field="metadata.shard", op="eq", value=0)],
           "json:1%": [FilterCondition(field="metadata.jshard", op="lt", value=10)]}


def tenant_name(rank: int) -> str:
    return f"tenant-{rank:04d}"


def tenant_sizes(rows: int, tenants: int) -> np.ndarray:
    """Rows per tenant, by rank (largest first): Zipf with exponent ZIPF, every tenant at least one row."""
    weights = 1.0 / np.arange(1, tenants + 1) ** ZIPF
    sizes = np.maximum(1, np.floor(weights / weights.sum() * rows)).astype(np.int64)
    sizes[0] += rows - sizes.sum()
    return sizes


def tenant_ranks(rows: int, tenants: int, seed: int = 3) -> np.ndarray:
    """Each row's tenant (a rank, 1 = largest), shuffled: tenants write interleaved, as they do."""
    ranks = np.repeat(np.arange(1, tenants + 1), tenant_sizes(rows, tenants))
    return np.random.default_rng(seed).permutation(ranks)


def records(vectors: np.ndarray, start: int, thumbnail: str, ranks: np.ndarray | None = None,
            rows: np.ndarray | None = None) -> list[ImageRecord]:
    """Rows as records (ids are the row numbers in hex): ``rows`` (their vectors ``vectors``), or start..;
    ``ranks``: every row's tenant (None: the default tenant's)."""
    numbers = range(start, start + len(vectors)) if rows is None else rows.tolist()
    return [ImageRecord(f"{row:032x}", f"a photo number {row}", f"photos/{row}.jpg",
                        {"shard": row % SHARDS, "jshard": row % SHARDS}, 1_700_000_000 + row, "0" * 16, vector, thumbnail,
                        tenant=DEFAULT_TENANT if ranks is None else tenant_name(int(ranks[row])))
            for row, vector in zip(numbers, vectors)]


def batches(count: int, ranks: np.ndarray | None, seed: int = 5) -> list[np.ndarray]:
    """The rows each write carries, as the service writes them: BATCH at a time, each request one
    tenant's (a key acts for one tenant), tenants' requests interleaved; consecutive rows without tenants."""
    if ranks is None:
        return [np.arange(start, min(start + BATCH, count)) for start in range(0, count, BATCH)]
    order = np.argsort(ranks[:count], kind="stable")
    bounds = np.flatnonzero(np.diff(ranks[:count][order])) + 1
    chunks = [rows[i:i + BATCH] for rows in np.split(order, bounds) for i in range(0, len(rows), BATCH)]
    return [chunks[i] for i in np.random.default_rng(seed).permutation(len(chunks))]


async def load(store: MilvusStore, vectors: np.ndarray, thumbnail: str, ranks: np.ndarray | None, new: bool) -> float:
    """Write every vector through the store in batches(), IN_FLIGHT calls at once (``new``: as the service
    writes new images); rows/s."""
    pending = iter(enumerate(batches(len(vectors), ranks)))
    every = max(1, 100_000 // BATCH)
    started = time.perf_counter()

    async def writer() -> None:
        for i, rows in pending:
            await store.upsert(records(vectors[rows], 0, thumbnail, ranks, rows), new=new)
            if i % every == 0:
                print(f"  wrote {i * BATCH:,} rows, {i * BATCH / (time.perf_counter() - started):,.0f} rows/s", flush=True)

    await asyncio.gather(*(writer() for _ in range(IN_FLIGHT)))
    return len(vectors) / (time.perf_counter() - started)


def state_of(segment) -> str:
    return getattr(segment.state, "name", str(segment.state))


def state(store: MilvusStore, rows: int) -> dict:
    """The sealed segments (the data coordinator's list: the query node's own, list_loaded_segments, comes
    back empty for a partition-key collection on 2.3.5), those the query node lists without an index,
    and the index's own counts (rows in flushed segments)."""
    loaded = store.client.list_loaded_segments(store.name)
    persistent = store.client.list_persistent_segments(store.name)
    sealed = sorted(s.num_rows for s in persistent)
    index = store.client.describe_index(store.name, "vector")
    return {"segments_sealed": len(persistent), "segments_by_state": dict(Counter(state_of(s) for s in persistent)),
            "segments_loaded_listed": len(loaded), "rows_in_growing": rows - sum(sealed),
            "loaded_without_index": sum(1 for s in loaded if s.state_name != "Growing" and not s.index_id),
            "sealed_rows_min_median_max": [sealed[0], int(statistics.median(sealed)), sealed[-1]] if sealed else [],
            "index_total_rows": index.get("total_rows"), "index_indexed_rows": index.get("indexed_rows"),
            "index_pending_rows": index.get("pending_index_rows"), "index_state": str(index.get("state"))}


MIN_INDEXED_ROWS = 1024  # Milvus builds no index for a smaller segment (indexCoord.minSegmentNumRowsToEnableIndex)


def settled(store: MilvusStore, rows: int) -> bool:
    """Every row in a flushed segment, every segment the query node lists with its index (a segment too
    small for one stays without: small tenants' partitions hold such), and no row waiting for the index."""
    persistent = store.client.list_persistent_segments(store.name)
    loaded = store.client.list_loaded_segments(store.name)
    index = store.client.describe_index(store.name, "vector")
    return (sum(s.num_rows for s in persistent) >= rows and all(state_of(s) == "Flushed" for s in persistent)
            and all(s.state_name != "Growing" and (s.index_id or s.num_rows < MIN_INDEXED_ROWS) for s in loaded)
            and not index.get("pending_index_rows") and int(index.get("indexed_rows") or 0) >= rows)


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


@dataclass(frozen=True)
class Search:
    """One kind of search: the tenant it acts for (None: every tenant), its conditions, the rows it may return."""

    tenant: str | None
    conditions: list[Condition]
    rows: np.ndarray


async def searches(store: MilvusStore, queries: np.ndarray, truth: np.ndarray, search: Search, in_flight: int) -> dict:
    """Every query through the store's search (the gateway's parameters and output fields); latency per
    call, recall@10 against truth, throughput."""
    await store.search(search.tenant, queries[:1], K, search.conditions)  # warm-up
    latencies: list[float] = []
    found: dict[int, list[str]] = {}
    pending = iter(range(len(queries)))

    async def searcher() -> None:
        for i in pending:
            start = time.perf_counter()
            (hits,) = await store.search(search.tenant, queries[i:i + 1], K, search.conditions)
            latencies.append((time.perf_counter() - start) * 1000)
            found[i] = [record.id for record, _ in hits]

    started = time.perf_counter()
    await asyncio.gather(*(searcher() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    wanted = min(K, len(search.rows))
    recall = np.mean([len({int(h, 16) for h in found[i]} & set(truth[i][:wanted].tolist())) / wanted
                      for i in range(len(queries))])
    q = statistics.quantiles(latencies, n=100)
    return {"in_flight": in_flight, "p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2), "p99_ms": round(q[98], 2),
            "searches_per_s": round(len(queries) / elapsed, 1), "recall_at_10": round(float(recall), 4)}


async def measure(store: MilvusStore, phase: str, rows: int, queries: np.ndarray, plan_of: dict[str, Search],
                  truths: dict[str, np.ndarray], efs: list[int], default_ef: int, default_phase: str) -> list[dict]:
    snapshot = state(store, rows)
    print(f"{phase}: {json.dumps(snapshot)}", flush=True)
    results = []
    # Growing rows are searched without the HNSW graph (ef does not apply): the breadths only once sealed.
    swept = [name for name in SWEPT if name in plan_of]
    plan = [(ef, name, 1) for name in swept for ef in (efs if phase != "loaded" else [default_ef])]
    plan += [(default_ef, name, n) for name in plan_of for n in (1, IN_FLIGHT) if not (n == 1 and name in swept)]
    for ef, name, in_flight in plan:
        store.options = replace(store.options, hnsw_ef=ef)
        result = await searches(store, queries, truths[name], plan_of[name], in_flight)
        results.append({"phase": phase, "ef": ef, "filter": name, "rows_searched": len(plan_of[name].rows), **result,
                        "gateway_default": ef == default_ef and phase == default_phase, **snapshot})
        print(json.dumps({k: results[-1][k] for k in ("phase", "ef", "filter", "rows_searched", "in_flight", "p50_ms",
                                                    "p95_ms", "p99_ms", "searches_per_s", "recall_at_10",
                                                    "gateway_default")}), flush=True)
    return results


def settings(uri: str, collection: str, declared: dict[str, str]) -> Settings:
    # the flush is the benchmark's (the gateway's own comes 5 s after a bulk load: GATEWAY_FLUSH_AFTER_ROWS)
    return Settings(_env_file=None, milvus_uri=uri, collection=collection, index_type="HNSW", store_timeout_s=120,
                    flush_after_rows=0, filter_fields=declared)


async def ingest(uri: str, shape: str, vectors: np.ndarray, ranks: np.ndarray, thumbnail: str, round_: int) -> float:
    """Rows/s writing ``vectors`` into a new collection of one shape (dropped afterwards): "today" (no
    partition key, every record the default tenant's, no declared field: upserts, as before tenants) or
    "tenants" (the partition key, every row's tenant, the declared field: the service's writes of new records)."""
    tenants = shape == "tenants"
    store = build_store(settings(uri, f"ingest_{shape}_{round_}", DECLARED if tenants else {}), DIM)
    if not tenants:
        store.partitions = None  # the tenant an ordinary field, as on Milvus Lite: no partition key
    await store.start()
    try:
        return await load(store, vectors, thumbnail, ranks if tenants else None, new=tenants)
    finally:
        await asyncio.to_thread(store.client.drop_collection, store.name)
        await store.close()


async def run(args: argparse.Namespace) -> dict:
    from local_servers.milvus_server import MilvusServer

    vectors, queries = dataset(args.vectors, args.queries)
    ranks = tenant_ranks(args.vectors, args.tenants)
    sizes = tenant_sizes(args.vectors, args.tenants)
    shard = np.arange(args.vectors) % SHARDS
    chosen = {"large": 1, "median": args.tenants // 2, "tiny": args.tenants}
    plan_of = {"none": Search(None, [], np.arange(args.vectors))}
    plan_of |= {f"tenant:{size}": Search(tenant_name(rank), [], np.flatnonzero(ranks == rank)) for size, rank in chosen.items()}
    kept = {"declared:1%": shard < 10, "declared:0.1%": shard == 0, "json:1%": shard < 10}
    plan_of |= {name: Search(None, check(FILTERS[name], DECLARED), np.flatnonzero(kept[name])) for name in FILTERS}
    truths = {name: search.rows[exact_top_k(vectors[search.rows], queries, min(K, len(search.rows)))]
              for name, search in plan_of.items()}
    default_ef = Settings().hnsw_ef
    efs = sorted({default_ef, *args.ef})
    workdir = Path(tempfile.mkdtemp(prefix="vector-tier-"))
    server = MilvusServer(workdir / "milvus").start()
    result: dict = {"machine": machine(), "vectors": args.vectors, "queries": args.queries, "dim": DIM,
                    "thumbnail_bytes": args.thumbnail_bytes, "batch": BATCH, "in_flight_writes": IN_FLIGHT,
                    "gateway_default_ef": default_ef, "milvus_config": server.config, "tenants": args.tenants,
                    "tenant_zipf_exponent": ZIPF, "tenant_partitions": Settings().tenant_partitions,
                    "largest_tenant_share": round(float(sizes[0]) / args.vectors, 4),
                    "tenant_rows": {size: int(sizes[rank - 1]) for size, rank in chosen.items()},
                    "declared_fields": DECLARED, "rows": []}
    thumbnail = "A" * args.thumbnail_bytes
    try:
        if args.ingest_rows:
            part, part_ranks = vectors[:args.ingest_rows], tenant_ranks(args.ingest_rows, args.tenants)
            rates: dict[str, list[float]] = {"today": [], "tenants": []}
            for round_, shape in enumerate(("today", "tenants", "tenants", "today", "today", "tenants")):
                rates[shape].append(round(await ingest(server.uri, shape, part, part_ranks, thumbnail, round_)))
                print(f"ingest {shape}: {rates[shape][-1]:,} rows/s ({args.ingest_rows:,} rows)", flush=True)
            result["ingest"] = {"rows": args.ingest_rows, "rows_per_s": rates, "tenants_over_today": round(
                statistics.mean(rates["tenants"]) / statistics.mean(rates["today"]), 3)}
        store = build_store(settings(server.uri, "images", DECLARED), DIM)
        await store.start()
        result["upsert_rows_per_s"] = round(await load(store, vectors, thumbnail, ranks, new=True))
        result["tenants_capability"] = store.capabilities.tenants
        result["declared_capability"] = store.capabilities.declared_fields
        print(f"wrote {args.vectors:,} rows at {result['upsert_rows_per_s']:,} rows/s", flush=True)

        async def measured(phase: str) -> None:
            if phase in args.phases:
                result["rows"] += await measure(store, phase, args.vectors, queries, plan_of, truths, efs, default_ef,
                                                "quiet")

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
        started = time.perf_counter()
        counted = await store.tenants()
        result["list_tenants_s"] = round(time.perf_counter() - started, 2)
        assert len(counted) == args.tenants and sum(counted.values()) == args.vectors, "tenants() disagrees with the load"
        await store.close()
    finally:
        server.stop()
    return result


def table(result: dict) -> str:
    ingest = result.get("ingest")
    lines = [f"{result['vectors']:,} vectors of {result['tenants']:,} tenants (Zipf {result['tenant_zipf_exponent']}: the"
             f" largest {result['largest_tenant_share']:.1%} of rows; rows of the tenants searched: {result['tenant_rows']}),"
             f" thumbnails of {result['thumbnail_bytes']} bytes; writes {result['upsert_rows_per_s']:,} rows/s"
             f" ({result['batch']} per call, {result['in_flight_writes']} in flight); flush {result.get('flush_s')} s, settled"
             f" {result.get('flushed_to_settled_s')} s later, quiet {result.get('flushed_to_quiet_s')} s after the flush;"
             f" tenants: {result.get('tenants_capability')}; declared: {result.get('declared_capability')}"
             f"; listing the tenants {result.get('list_tenants_s')} s", ""]
    if ingest:
        lines += [f"Ingest side by side, {ingest['rows']:,} rows a round: today's shape {ingest['rows_per_s']['today']} rows/s,"
                  f" with tenants {ingest['rows_per_s']['tenants']} rows/s: tenants/today {ingest['tenants_over_today']}", ""]
    lines += ["| phase | segments (growing rows) | ef | filter | rows searched | in flight | recall@10 | p50 ms | p95 ms"
              " | p99 ms | searches/s | default |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['phase']} | {r['segments_sealed']} ({r['rows_in_growing']:,}) | {r['ef']} | {r['filter']} |"
              f" {r['rows_searched']:,} | {r['in_flight']} | {r['recall_at_10']:.4f} | {r['p50_ms']} | {r['p95_ms']} |"
              f" {r['p99_ms']} | {r['searches_per_s']} | {'yes' if r['gateway_default'] else ''} |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--ef", type=int, nargs="*", default=[64, 128, 256, 512])
    parser.add_argument("--thumbnail-bytes", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--ingest-rows", type=int, default=100_000, help="rows per side-by-side ingest round (0: none)")
    parser.add_argument("--phases", nargs="+", default=["quiet"], choices=["loaded", "flushed", "quiet"],
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
