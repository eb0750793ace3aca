"""Text search ranking: CLIP cosine plus a weighted share of the query's words found in the caption."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.core.records import ImageRecord
from gateway.core.text_ranking import candidate_pool, fuse, hybrid, words


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


def test_hybrid_fuses_the_clip_and_keyword_rankings_by_reciprocal_rank():
    query_vector = np.array([1.0, 0.0], np.float32)
    clip = [(record("a", "a dog on grass"), 0.30), (record("b", "a man in a red jacket"), 0.25),
            (record("c", "a cat"), 0.20)]
    far = ImageRecord("d", "red jacket on a hanger", "d.jpg", {}, 0, "", np.array([-0.6, 0.8], np.float32))
    keyword = [(far, 3.2), (clip[1][0], 2.5)]  # BM25 order: d, then b
    hits = hybrid("man in red jacket", query_vector, clip, keyword, 0.1)
    by_id = {h.record.id: h for h in hits}
    # b: CLIP-path rank 1 (0.25 + 0.1) and keyword rank 2; d: keyword rank 1 only; a and c: CLIP only
    assert by_id["b"].rank_score == pytest.approx(1 / 61 + 1 / 62)
    assert by_id["d"].rank_score == pytest.approx(1 / 61) and by_id["a"].rank_score == pytest.approx(1 / 62)
    assert [h.record.id for h in hits] == ["b", "d", "a", "c"]
    # the keyword-only hit's score is computed like every other's: its cosine plus the caption bonus
    assert by_id["d"].clip_score == pytest.approx(-0.6) and by_id["d"].score == pytest.approx(-0.6 + 0.1 * 2 / 3)
    assert (by_id["d"].keyword_score, by_id["b"].keyword_score, by_id["a"].keyword_score) == (3.2, 2.5, 0.0)


def test_without_keyword_hits_the_hybrid_order_is_the_caption_re_rank():
    clip = [(record("a", "a dog on grass"), 0.30), (record("b", "a man in a red jacket"), 0.25)]
    assert [h.record.id for h in hybrid("red jacket", np.zeros(2, np.float32), clip, [], 0.1)] == \
        [h.record.id for h in fuse("red jacket", clip, 0.1, k=2)] == ["b", "a"]
