"""Text search ranking: CLIP similarity with caption words breaking near-ties and, where the store
searches captions by their words (BM25), the keyword hits as a second ranking fused with CLIP's."""

from __future__ import annotations

import re

import numpy as np

from .records import ImageRecord, TextHit

RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al. 2009; Milvus's RRFRanker default)

WORD = re.compile(r"[a-z0-9]+")
STOP_WORDS = frozenset(["a", "an", "the", "of", "in", "on", "at", "to", "and", "or", "with", "for", "by", "is", "are", "from"])


def words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if w not in STOP_WORDS}


def candidate_pool(k: int, caption_weight: float, max_k: int) -> int:
    """How many CLIP neighbours to fetch for a re-rank to pick k from."""
    return min(max(4 * k, 50), max_k) if caption_weight > 0 else k


def fuse(query: str, hits: list[tuple[ImageRecord, float]], caption_weight: float, k: int) -> list[TextHit]:
    """score = cosine + w * overlap, where overlap is the share of the query's content words found in
    the caption (0..1) and w is GATEWAY_CAPTION_WEIGHT. CLIP decides; captions break near-ties in
    favour of images whose caption names what was asked. w = 0 gives pure CLIP ranking."""
    wanted = words(query)
    fused = [scored(wanted, record, clip_score, caption_weight) for record, clip_score in hits]
    fused.sort(key=lambda h: h.score, reverse=True)
    return fused[:k]


def scored(wanted: set[str], record: ImageRecord, clip_score: float, caption_weight: float) -> TextHit:
    overlap = len(wanted & words(record.caption)) / len(wanted) if wanted else 0.0
    score = clip_score + caption_weight * overlap
    return TextHit(record, score, clip_score, overlap, rank_score=score)


def hybrid(query: str, query_vector: np.ndarray, clip_hits: list[tuple[ImageRecord, float]],
           keyword_hits: list[tuple[ImageRecord, float]], caption_weight: float) -> list[TextHit]:
    """Two retrieval paths in one ranking: CLIP's candidates in fuse()'s order, and the captions that
    best match the query's words (BM25, records with their vectors). rank_score = sum over the paths a
    hit is in of 1 / (RRF_K + its rank there), so a caption naming the query is found even when CLIP
    ranks its image low, and a hit both paths find comes first. ``score`` stays fuse()'s (the keyword
    hits' cosine computed from their vectors), so min_score means the same with or without keywords.
    Every candidate, best first."""
    by_clip = fuse(query, clip_hits, caption_weight, len(clip_hits))
    hits = {hit.record.id: hit for hit in by_clip}
    for rank, hit in enumerate(by_clip, 1):
        hit.rank_score = 1 / (RRF_K + rank)
    wanted = words(query)
    for rank, (record, bm25) in enumerate(keyword_hits, 1):
        if record.id not in hits:
            assert record.vector is not None, "keyword hits carry their vectors"
            hits[record.id] = scored(wanted, record, float(record.vector @ query_vector), caption_weight)
            hits[record.id].rank_score = 0.0
        hits[record.id].keyword_score = bm25
        hits[record.id].rank_score += 1 / (RRF_K + rank)
    return sorted(hits.values(), key=lambda h: h.rank_score, reverse=True)
