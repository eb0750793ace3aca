"""Text search latency with its two retrieval paths one after the other or at once, side by side in
one run: the same service, Milvus Lite collection and queries, the two orders interleaved per round.

    python -m bench.text_search_paths --repository .cache/clip-repo --records 20000 --out bench/results/text-search-paths

- sequential (the order before the store-interface change): CLIP's text embedding and the keyword
  (BM25) search at once, then CLIP's vector search once both are done;
- concurrent (today's ImageSearchService.search_text): CLIP's embedding then its vector search, while
  the keyword search runs.
Both fuse the same two rankings (checked: the same ids for every query). One query at a time, so
the figures are latency, not throughput. Needs an exported CLIP (captions are not used: the records'
captions are written here from a small vocabulary).
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

from bench.machine import machine, write_results
from gateway.core.records import DEFAULT_TENANT, ImageRecord
from gateway.core.service import ImageSearchService
from gateway.core.text_ranking import candidate_pool, hybrid
from gateway.settings import Settings
from gateway.wiring import build_service

WORDS = ["red", "blue", "green", "dog", "cat", "bicycle", "car", "street", "beach", "mountain", "man", "woman", "child",
         "jacket", "tree", "house", "boat", "river", "snow", "city", "night", "sunset", "field", "horse"]
K = 10


def filled_records(count: int, dim: int, seed: int = 0) -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [ImageRecord(f"{i:032x}", "a " + " ".join(rng.choice(WORDS, 5)), f"{i}.jpg", {}, i, "0" * 16, vectors[i], "")
            for i in range(count)]


async def sequential(service: ImageSearchService, query: str) -> list[str]:
    """The order text search had before: the keyword search beside the embedding, then CLIP's search."""
    pool = candidate_pool(K, 1.0, service.limits.max_k)
    vectors, keyword_hits = await asyncio.gather(service.inference.embed_texts([query]),
                                                 service.store.search_captions(DEFAULT_TENANT, query, pool, []))
    clip_hits = (await service.store.search(DEFAULT_TENANT, vectors, pool, []))[0]
    return [h.record.id for h in hybrid(query, vectors[0], clip_hits, keyword_hits, service.caption_weight)[:K]]


async def concurrent(service: ImageSearchService, query: str) -> list[str]:
    return [h.record.id for h in await service.search_text(DEFAULT_TENANT, query, K)]


ORDERS = {"sequential": sequential, "concurrent": concurrent}


async def run(args: argparse.Namespace) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="text-search-paths-"))
    settings = Settings(_env_file=None, model_repository=args.repository, captions=False, milvus_uri=str(folder / "images.db"))
    service = build_service(settings)
    await service.start()
    assert service.keyword_feature.on, service.features()
    records = filled_records(args.records, service.model_info.embedding_dim)
    for start in range(0, len(records), 1000):
        await service.store.upsert(records[start:start + 1000])
    rng = np.random.default_rng(1)
    queries = [" ".join(rng.choice(WORDS, 3)) for _ in range(args.queries)]
    for query in queries[:5]:  # warm-up, and the two orders agree
        assert await sequential(service, query) == await concurrent(service, query), query
    latencies: dict[str, list[float]] = {name: [] for name in ORDERS}
    rounds: list[dict[str, float]] = []
    for round_index in range(args.rounds):
        order = list(ORDERS) if round_index % 2 == 0 else list(reversed(ORDERS))
        medians = {}
        for name in order:
            spent = []
            for query in queries:
                started = time.perf_counter()
                await ORDERS[name](service, query)
                spent.append((time.perf_counter() - started) * 1000)
            latencies[name] += spent
            medians[name] = round(statistics.median(spent), 2)
        rounds.append(medians)
        print(json.dumps({"round": round_index + 1, **medians}), flush=True)
    await service.close()
    rows = []
    for name, values in latencies.items():
        q = statistics.quantiles(values, n=100)
        rows.append({"order": name, "p50_ms": round(q[49], 2), "p90_ms": round(q[89], 2), "p99_ms": round(q[98], 2),
                     "round_medians_ms": [r[name] for r in rounds]})
    p50 = {row["order"]: row["p50_ms"] for row in rows}
    return {"machine": machine(), "records": args.records, "queries": args.queries, "rounds": args.rounds, "k": K,
            "store": "Milvus Lite (FLAT, BM25)", "repository": str(args.repository),
            "models": service.model_info.sources, "rows": rows,
            "sequential_over_concurrent_p50": round(p50["sequential"] / p50["concurrent"], 3)}


def markdown(result: dict) -> str:
    lines = [f"# Text search: the two retrieval paths one after the other vs at once ({result['machine']['date']})", "",
             f"{result['machine']['cpu']}, {result['machine']['cores']} cores; {result['store']}, {result['records']:,}"
             f" records, {result['queries']} queries one at a time, {result['rounds']} interleaved rounds, k {result['k']}.",
             "", "| order | p50 ms | p90 ms | p99 ms | median per round (ms) |", "|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['order']} | {row['p50_ms']} | {row['p90_ms']} | {row['p99_ms']} |"
                     f" {', '.join(map(str, row['round_medians_ms']))} |")
    lines += ["", f"sequential / concurrent p50: {result['sequential_over_concurrent_p50']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True, help="a model repository with clip_image and clip_text")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    write_results(args.out, "text_search_paths", result, markdown(result))


if __name__ == "__main__":
    main()
