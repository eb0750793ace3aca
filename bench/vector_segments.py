"""How a Milvus server's segment count sets search latency: one collection, the same rows, searched one
query at a time, for a given segment size (dataCoord.segment.maxSize).

    python -m bench.vector_segments --vectors 150000 --segment-max-mb 64
    python -m bench.vector_segments --vectors 150000 --segment-max-mb 1024

Rows are written through the gateway's store (500 per upsert, 1,000-byte thumbnails), flushed, and
searched once every segment is sealed and indexed and the server is idle: raw pymilvus searches
without output fields (Bounded and Session reads) and the store's own search (its output fields),
with recall@10 against exact cosine top-10 (numpy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.vector_search import DIM, K, dataset, exact_top_k
from bench.vector_tier import records, state, wait_quiet, wait_settled
from gateway.settings import Settings
from gateway.wiring import build_store
from local_servers.milvus_server import MilvusServer


def quantiles(latencies: list[float]) -> str:
    q = statistics.quantiles(latencies, n=100)
    return f"p50 {q[49]:.2f} p95 {q[94]:.2f} p99 {q[98]:.2f} ms"


async def run(args: argparse.Namespace) -> None:
    vectors, queries = dataset(args.vectors, args.queries)
    truth = exact_top_k(vectors, queries)
    server = MilvusServer(Path(tempfile.mkdtemp()) / "milvus", config={"dataCoord.segment.maxSize": args.segment_max_mb})
    server.start()
    try:
        store = build_store(Settings(_env_file=None, milvus_uri=server.uri, collection="images", index_type="HNSW",
                                     store_timeout_s=120, flush_after_rows=0), DIM)
        await store.start()
        started = time.perf_counter()
        for start in range(0, args.vectors, 500):
            await store.upsert(records(vectors[start:start + 500], start, "A" * 1000))
        print(f"segment max {args.segment_max_mb} MB, {args.vectors:,} rows: ingest {time.perf_counter() - started:.0f} s")
        await asyncio.to_thread(store.client.flush, store.name)
        print(f"settled {await wait_settled(store, args.vectors):.0f} s, quiet {await wait_quiet(server):.0f} s later")
        print(json.dumps(state(store, args.vectors)))
        params = {"metric_type": "COSINE", "params": {"ef": store.options.hnsw_ef}}
        for consistency in ("Bounded", "Session"):
            latencies = []
            for query in queries:
                begun = time.perf_counter()
                store.client.search(store.name, [query.tolist()], anns_field="vector", limit=K, search_params=params,
                                    consistency_level=consistency)
                latencies.append((time.perf_counter() - begun) * 1000)
            print(f"raw search, no output fields, {consistency}: {quantiles(latencies)}")
        latencies, recall = [], []
        for i in range(len(queries)):
            begun = time.perf_counter()
            (hits,) = await store.search(None, queries[i:i + 1], K)
            latencies.append((time.perf_counter() - begun) * 1000)
            recall.append(len({int(record.id, 16) for record, _ in hits} & set(truth[i].tolist())) / K)
        print(f"store search (ef {store.options.hnsw_ef}): {quantiles(latencies)}, recall@10 {np.mean(recall):.3f}")
        await store.close()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=150_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--segment-max-mb", type=int, required=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
