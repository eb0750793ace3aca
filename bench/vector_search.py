"""Vector search at 100k and 1M vectors: latency and recall@10 against exact brute force, on Milvus
Lite (the embedded default) and on the Milvus server process, with the gateway's index settings.

    python -m bench.vector_search --sizes 100000 1000000 --out bench/results/vector-search

Vectors resemble CLIP embeddings rather than uniform noise (uniform random vectors are the worst
case for graph indexes and say little about real collections): unit vectors in a narrow cone
around a shared direction (CLIP image embeddings have a mean pairwise cosine around 0.5), grouped in
clusters of uneven size (concepts), with per-point noise. Queries are fresh draws from the same
process. Ground truth: exact cosine top-10 by numpy over all vectors.

Per configuration: insert rate (INSERT_BATCH rows per call), index build time, then single-query latency
(sequential, p50/p95/p99) and recall@10 over the queries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

DIM, K = 512, 10
CONFIGS = {  # name -> (where, index type, build params, search params to try); the gateway's defaults first
    "lite-FLAT": ("lite", "FLAT", {}, [{}]),
    "lite-IVF_FLAT": ("lite", "IVF_FLAT", {"nlist": 1024}, [{"nprobe": 16}, {"nprobe": 64}]),
    "server-HNSW": ("server", "HNSW", {"M": 16, "efConstruction": 200}, [{"ef": 64}, {"ef": 128}]),
    "server-IVF_FLAT": ("server", "IVF_FLAT", {"nlist": 1024}, [{"nprobe": 16}, {"nprobe": 64}]),
}


def clip_like(n: int, rng: np.random.Generator, centres: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """n unit vectors: a cluster centre (drawn by weight) plus isotropic noise, normalised."""
    which = rng.choice(len(centres), size=n, p=weights)
    points = centres[which] + rng.standard_normal((n, DIM), dtype=np.float32) * np.float32(0.4 / np.sqrt(DIM))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def dataset(n: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(DIM).astype(np.float32)
    shared /= np.linalg.norm(shared)
    clusters = max(n // 100, 10)
    centres = shared + rng.standard_normal((clusters, DIM)).astype(np.float32) * np.float32(0.8 / np.sqrt(DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.pareto(1.5, clusters) + 1
    weights /= weights.sum()
    vectors = np.concatenate([clip_like(min(100_000, n - i), rng, centres, weights) for i in range(0, n, 100_000)])
    return vectors, clip_like(queries, rng, centres, weights)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    scores = np.concatenate([queries @ vectors[i:i + 200_000].T for i in range(0, len(vectors), 200_000)], axis=1)
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)


def describe(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    rng = np.random.default_rng(1)
    sample = vectors[rng.choice(len(vectors), 2000, replace=False)]
    pairwise = sample @ sample.T
    nearest = np.einsum("qd,qkd->qk", queries, vectors[truth])
    return {"mean_pairwise_cosine": round(float(pairwise[np.triu_indices(2000, 1)].mean()), 3),
            "mean_top1_cosine": round(float(nearest[:, 0].mean()), 3),
            "mean_top10_cosine": round(float(nearest[:, -1].mean()), 3)}


# Rows per insert call. Milvus Lite 2.5.1 copies the whole call's vector array once per row while it
# slices the call (InsertTask -> SliceFieldData -> GetField, seen in gdb), so its cost grows with the
# square of the batch: 100k vectors took over 30 min in 10k-row calls, 500-row calls ingest ~9k rows/s.
INSERT_BATCH = {"lite": 500, "server": 10_000}


def load(client, collection: str, vectors: np.ndarray, batch: int) -> float:
    """A fresh collection holding the vectors (`batch`-row inserts, then flush); returns rows per second."""
    from pymilvus import DataType

    if client.has_collection(collection):
        client.drop_collection(collection)
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    client.create_collection(collection, schema=schema, consistency_level="Session")  # as the gateway reads
    start = time.perf_counter()
    for i in range(0, len(vectors), batch):
        client.insert(collection, [{"id": i + j, "vector": v} for j, v in enumerate(vectors[i:i + batch])])
    client.flush(collection)
    return len(vectors) / (time.perf_counter() - start)


def run_config(client, collection: str, name: str, queries: np.ndarray, truth: np.ndarray) -> list[dict]:
    """(Re)build the config's index on the loaded collection, then each search setting: single-query
    latency and recall@10 (one row each)."""
    where, index_type, build, searches = CONFIGS[name]
    client.release_collection(collection)
    for existing in client.list_indexes(collection):
        client.drop_index(collection, existing)
    index = client.prepare_index_params()
    index.add_index("vector", index_type=index_type, metric_type="COSINE", params=build)
    start = time.perf_counter()
    client.create_index(collection, index)
    client.load_collection(collection)
    built = time.perf_counter() - start
    rows = []
    # Every setting with Session reads (the gateway's default); the gateway's own setting (the first)
    # again with Strong reads on a server, where Strong waits for a time tick.
    runs = [(search, "Session") for search in searches] + ([(searches[0], "Strong")] if where == "server" else [])
    for search, consistency in runs:
        params = {"metric_type": "COSINE", "params": search}
        client.search(collection, data=[queries[0].tolist()], limit=K, search_params=params)  # warm-up
        latencies, hits = [], []
        for query in queries:
            start = time.perf_counter()
            (result,) = client.search(collection, data=[query.tolist()], limit=K, search_params=params,
                                      consistency_level=consistency)
            latencies.append((time.perf_counter() - start) * 1000)
            hits.append([r["id"] for r in result])
        recall = np.mean([len(set(h) & set(t)) / K for h, t in zip(hits, truth.tolist())])
        q = statistics.quantiles(latencies, n=100)
        rows.append({"config": name, "index": index_type, "build_params": build, "search_params": search,
                     "consistency": consistency,
                     "index_build_s": round(built, 1), "p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2),
                     "p99_ms": round(q[98], 2), "recall_at_10": round(float(recall), 4)})
    return rows


def main(argv: list[str] | None = None) -> None:
    from pymilvus import MilvusClient

    from local_servers.milvus_server import MilvusServer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--where", nargs="+", default=["lite", "server"], choices=["lite", "server"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="vector-search-"))
    for size in args.sizes:
        vectors, queries = dataset(size, args.queries)
        start = time.perf_counter()
        truth = exact_top_k(vectors, queries)
        brute_ms = (time.perf_counter() - start) * 1000 / len(queries)  # batched matmul + partial sort
        shape = describe(vectors, queries, truth)
        print(f"{size:,} vectors: {shape}; numpy brute force {brute_ms:.2f} ms/query (batched)", flush=True)
        for where in args.where:
            names = [n for n in args.configs if CONFIGS[n][0] == where]
            if not names:
                continue
            server = MilvusServer(workdir / f"server-{size}").start() if where == "server" else None
            try:
                client = MilvusClient(server.uri if server else str(workdir / f"lite-{size}.db"))
                rate = load(client, "bench", vectors, INSERT_BATCH[where])
                print(f"{where}: inserted {size:,} vectors at {rate:,.0f} rows/s", flush=True)
                for name in names:
                    for row in run_config(client, "bench", name, queries, truth):
                        results.append({"vectors": size, "where": where, **shape, "insert_rows_per_s": round(rate),
                                        "exact_numpy_ms_per_query": round(brute_ms, 2), **row})
                        print(json.dumps(results[-1]), flush=True)
                    (args.out / "vector_search.json").write_text(json.dumps(results, indent=2))
                client.close()
            finally:
                if server:
                    server.stop()
    lines = ["| vectors | config | recall@10 | p50 ms | p95 ms | p99 ms | insert rows/s | index build s |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['vectors']:,} | {r['config']} {r['search_params'] or ''} {r['consistency']} | {r['recall_at_10']:.4f} |"
              f" {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['insert_rows_per_s']:,} | {r['index_build_s']} |"
              for r in results]
    (args.out / "vector_search.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
