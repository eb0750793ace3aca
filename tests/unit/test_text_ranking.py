"""Text search ranking: CLIP cosine plus a weighted share of the query's words found in the caption."""

from __future__ import annotations

import pytest

from gateway.core.records import ImageRecord
from gateway.core.text_ranking import candidate_pool, fuse, words


def record(image_id: str, caption: str) -> ImageRecord:
    return ImageRecord(image_id, caption, image_id + ".jpg", {}, 0, "")


def test_words_are_lowercase_content_words():
    assert words("A Man in the RED jacket, on a bike!") == {"man", "red", "jacket", "bike"}


def test_a_caption_naming_the_query_breaks_a_near_tie_but_clip_decides_otherwise():
    hits = [(record("a", "a dog on grass"), 0.30), (record("b", "a man in a red jacket"), 0.25),
            (record("c", "red jacket on a hanger"), 0.10)]
    fused = fuse("man in red jacket", hits, 0.1, k=3)
    assert [h.record.id for h in fused] == ["b", "a", "c"]
    assert fused[0].caption_match == pytest.approx(1.0) and fused[0].score == pytest.approx(0.35)
    assert fused[2].caption_match == pytest.approx(2 / 3) and fused[2].clip_score == pytest.approx(0.10)
    assert [h.record.id for h in fuse("man in red jacket", hits, 0.0, k=2)] == ["a", "b"]  # pure CLIP


def test_the_pool_is_wider_than_k_only_when_captions_count():
    assert candidate_pool(5, 0.1, 1000) == 50 and candidate_pool(100, 0.1, 1000) == 400
    assert candidate_pool(400, 0.1, 1000) == 1000 and candidate_pool(7, 0.0, 1000) == 7


def test_a_query_of_stop_words_only_has_no_caption_match():
    (hit,) = fuse("the of a", [(record("a", "the cat"), 0.5)], 0.1, k=1)
    assert hit.caption_match == 0 and hit.score == pytest.approx(0.5)
