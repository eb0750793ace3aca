"""Keyword search: captions as a retrieval path of their own (Milvus BM25), fused with CLIP by
reciprocal rank, on a real Milvus Lite; the fallback to the caption re-rank on the Milvus 2.3.5 server
(no BM25); the migration of a collection made before keyword search. Vectors and captions are chosen
(the text 'model' is the fakes' deterministic one: what is under test is the store and the ranking)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.backends.milvus import MilvusStore, migration
from gateway.backends.milvus.schema import create_collection
from gateway.cli.main import main as cli
from gateway.core.filters import FilterCondition
from gateway.core.records import DEFAULT_TENANT, ImageRecord
from gateway.core.service import ImageSearchService
from gateway.core.text_ranking import RRF_K
from gateway.settings import Settings
from gateway.wiring import build_store, service_over
from tests.support.fakes import FakeInference, unit, unit_settings

pytestmark = pytest.mark.integration
QUERY = "red bicycle"
DIM = 8


def chosen_records(query_vector: np.ndarray) -> tuple[list[ImageRecord], ImageRecord]:
    """30 records whose vectors lie close to the query's and whose captions share none of its words,
    and one whose caption names the query over a vector pointing away from it."""
    rng = np.random.default_rng(7)
    near = [ImageRecord(f"{i:032x}", f"a photo of a dog number {i}", f"dog-{i}.jpg", {"album": "dogs"}, i, "0" * 16,
                        unit(query_vector + rng.normal(size=DIM) * 0.3), "") for i in range(30)]
    named = ImageRecord("f" * 32, "a red bicycle leaning on a wall", "bicycle.jpg", {"album": "street"}, 99, "0" * 16,
                        unit(-query_vector + rng.normal(size=DIM) * 0.1), "")
    return near, named


def store_at(uri: str, dim: int = DIM, **settings) -> MilvusStore:
    return build_store(Settings(_env_file=None, milvus_uri=uri, **settings), dim)


async def started(store: MilvusStore, keyword_search: bool = True) -> ImageSearchService:
    service = service_over(unit_settings(keyword_search=keyword_search), FakeInference(dim=DIM), store)
    await service.start()
    return service


def test_a_caption_naming_the_query_is_found_over_an_unrelated_vector(tmp_path):
    asyncio.run(caption_over_unrelated_vector(store_at(str(tmp_path / "images.db"))))


async def caption_over_unrelated_vector(lite_store: MilvusStore) -> None:
    service = await started(lite_store)
    assert service.features()["keyword_search"] == "on"
    query_vector = FakeInference(dim=DIM).text_vector(QUERY)
    near, named = chosen_records(query_vector)
    await lite_store.upsert([*near, named])

    hits = await service.search_text(DEFAULT_TENANT, QUERY, 5)
    clip_order = sorted([*near, named], key=lambda r: float(r.vector @ query_vector), reverse=True)
    assert clip_order[-1].id == named.id  # CLIP alone ranks it last of 31
    assert len(hits) == 5 and named.id in [h.record.id for h in hits]
    hit = next(h for h in hits if h.record.id == named.id)
    assert hit.keyword_score > 0 and hit.caption_match == 1.0
    assert hit.clip_score == pytest.approx(float(named.vector @ query_vector), abs=1e-5)
    assert hit.score == pytest.approx(hit.clip_score + 0.1)  # what min_score cuts: CLIP + caption weight
    # the only keyword hit: CLIP rank 31 + keyword rank 1; the others: their CLIP rank only
    assert hit.rank_score == pytest.approx(1 / (RRF_K + 31) + 1 / (RRF_K + 1))
    others = [h for h in hits if h.record.id != named.id]
    assert [h.record.id for h in others] == [r.id for r in clip_order[:4]]
    assert all(h.keyword_score == 0 for h in others)
    assert [h.rank_score for h in hits] == sorted((h.rank_score for h in hits), reverse=True)

    # min_score means CLIP + caption weight, with or without keywords: the far vector falls below 0.5
    kept = await service.search_text(DEFAULT_TENANT, QUERY, 5, min_score=0.5)
    assert named.id not in [h.record.id for h in kept] and all(h.score >= 0.5 for h in kept)
    # a filter applies to both paths
    dogs = await service.search_text(DEFAULT_TENANT, QUERY, 5, [FilterCondition(field="metadata.album", value="dogs")])
    assert named.id not in [h.record.id for h in dogs] and len(dogs) == 5
    # keyword search off: CLIP's candidates re-ranked, and the bicycle is not among them
    plain = await started(lite_store, keyword_search=False)
    assert plain.features()["keyword_search"] == "off: GATEWAY_KEYWORD_SEARCH=false"
    assert named.id not in [h.record.id for h in await plain.search_text(DEFAULT_TENANT, QUERY, 5)]
    await lite_store.close()


def test_the_milvus_2_3_server_falls_back_to_the_caption_re_rank(milvus_server):
    asyncio.run(server_fallback(milvus_server.uri))


async def server_fallback(uri: str) -> None:
    store = store_at(uri, collection="keywords_fallback", read_consistency="Strong")
    try:
        service = await started(store)
        assert service.features()["keyword_search"].startswith("off: Milvus v2.3.5")
        assert "has no BM25 full-text search" in service.features()["keyword_search"]
        query_vector = FakeInference(dim=DIM).text_vector(QUERY)
        near, named = chosen_records(query_vector)
        await store.upsert([*near, named])
        hits = await service.search_text(DEFAULT_TENANT, QUERY, 5)
        expected = sorted(near, key=lambda r: float(r.vector @ query_vector), reverse=True)[:5]
        assert [h.record.id for h in hits] == [r.id for r in expected]
        assert all(h.keyword_score == 0 and h.rank_score == h.score for h in hits)
    finally:
        store.client.drop_collection("keywords_fallback")
        await store.close()


@pytest.mark.parametrize("interrupted", [False, True], ids=["whole", "resumed-after-the-drop"])
def test_a_collection_made_before_keyword_search_is_migrated_by_the_cli(tmp_path, model_repository, monkeypatch, capsys,
                                                                        interrupted):
    from gateway.backends.repository import read_model_info

    dim = read_model_info(model_repository, captions=False).embedding_dim
    uri = str(tmp_path / "old.db")
    records = asyncio.run(old_collection(uri, dim))
    if interrupted:
        asyncio.run(interrupt_after_the_drop(uri, dim))
    for name, value in {"GATEWAY_MILVUS_URI": uri, "GATEWAY_MODEL_REPOSITORY": str(model_repository),
                        "GATEWAY_CAPTIONS": "false"}.items():
        monkeypatch.setenv(name, value)
    assert cli(["migrate"]) == 0
    assert "copied 1200 records" in capsys.readouterr().out
    assert cli(["migrate"]) == 0 and "nothing to do" in capsys.readouterr().out
    asyncio.run(check_migrated(uri, dim, records))


async def interrupt_after_the_drop(uri: str, dim: int) -> None:
    """What a migration stopped right after dropping the old collection leaves; a gateway then refuses
    to start (rather than serve an empty collection) and names what to run."""
    from gateway.core.errors import ServiceError

    store = store_at(uri, dim)
    await store.start()
    create_collection(store.client, migration.staged("images"), dim, "FLAT", False, "Session", None, {}, None)
    migration.copy(store.client, "images", migration.staged("images"), {})
    store.client.drop_collection("images")
    await store.close()
    with pytest.raises(ServiceError, match="run `image-search migrate` again to finish it"):
        await store_at(uri, dim).start()


async def old_collection(uri: str, dim: int) -> list[ImageRecord]:
    """A Lite collection with the schema every collection had before keyword search, 1200 records."""
    old = store_at(uri, dim)
    await old.start()
    old.client.drop_collection("images")
    create_collection(old.client, "images", dim, "FLAT", False, "Session", None, {}, None)  # (recording no model either)
    old.client.load_collection("images")
    rng = np.random.default_rng(3)
    records = [ImageRecord(f"{i:032x}", f"caption {i} of a red bicycle" if i % 7 == 0 else f"caption {i}", f"{i}.jpg",
                           {"n": i}, i, "0" * 16, unit(rng.normal(size=dim)), f"thumb{i}") for i in range(1200)]
    for start in range(0, len(records), 300):
        await old.upsert(records[start:start + 300])
    await old.close()
    store = store_at(uri, dim)
    await store.start()
    assert "run `image-search migrate`" in store.capabilities.keyword_search.reason
    await store.close()
    return records


async def check_migrated(uri: str, dim: int, records: list[ImageRecord]) -> None:
    store = store_at(uri, dim)
    await store.start()
    try:
        assert store.capabilities.keyword_search.on and not store.client.has_collection("images_migrating")
        copied = {r.id: r for r in await store.all_records(None)}
        assert set(copied) == {r.id for r in records}
        for record in records[::97]:
            got = copied[record.id]
            assert (got.caption, got.source, got.metadata, got.created_at) == (record.caption, record.source,
                                                                                record.metadata, record.created_at)
            np.testing.assert_allclose(got.vector, record.vector, atol=1e-6)
            assert await store.thumbnail(DEFAULT_TENANT, record.id) == record.thumbnail
        found = await store.search_captions(DEFAULT_TENANT, "bicycle", 500)
        assert {r.id for r, _ in found} == {r.id for r in records if "bicycle" in r.caption}
    finally:
        await store.close()


def test_keyword_search_on_an_empty_collection_or_without_captions_finds_nothing_and_fails_nothing(tmp_path):
    """Found by CI: Milvus Lite refuses a BM25 query while no caption holds a word (average length 0)."""
    async def scenario() -> None:
        store = store_at(str(tmp_path / "empty.db"))
        service = await started(store)
        assert await service.search_text(DEFAULT_TENANT, QUERY, 5) == []
        near, _ = chosen_records(FakeInference(dim=DIM).text_vector(QUERY))
        await store.upsert([ImageRecord(r.id, "", r.source, r.metadata, r.created_at, r.phash, r.vector, "") for r in near])
        hits = await service.search_text(DEFAULT_TENANT, QUERY, 5)
        assert len(hits) == 5 and all(h.keyword_score == 0 for h in hits)
        await store.close()

    asyncio.run(scenario())
