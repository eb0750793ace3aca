"""Text search ranking: CLIP similarity, with caption words breaking near-ties."""

from __future__ import annotations

import re

from .records import ImageRecord, TextHit

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
    fused = []
    for record, clip_score in hits:
        overlap = len(wanted & words(record.caption)) / len(wanted) if wanted else 0.0
        fused.append(TextHit(record, clip_score + caption_weight * overlap, clip_score, overlap))
    fused.sort(key=lambda h: h.score, reverse=True)
    return fused[:k]
