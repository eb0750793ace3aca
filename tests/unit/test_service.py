"""The core service over fakes of its two protocols: idempotent, all-or-nothing indexing, checks
shared by every transport, search and reads."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.core.errors import ErrorKind, ServiceError
from gateway.core.filters import Condition, validate
from gateway.core.records import DEFAULT_TENANT, Upload, content_id
from gateway.wiring import service_over
from tests.support.fakes import RecordingStore, drain, fake_service, unit_settings
from tests.support.images import PHOTO_JPEGS, png_header_only, unique_image


def service(captions: bool = True, **settings):
    return fake_service(captions, **settings)


def run(coroutine):
    return asyncio.run(coroutine)


async def index(core, files: list[tuple[str, bytes]], metadata: dict | None = None, captions: bool | None = None):
    """Index, then caption what that queued."""
    done = await core.index_images(DEFAULT_TENANT, [Upload(name, data, metadata or {}) for name, data in files], captions)
    await drain(core)
    return done


def kind_of(coroutine) -> ServiceError:
    with pytest.raises(ServiceError) as refused:
        run(coroutine)
    return refused.value


def test_index_embeds_captions_and_writes_once_then_the_same_bytes_write_nothing():
    core = service()
    files = [("a.png", unique_image(1)), ("b.png", unique_image(2))]
    first = run(core.index_images(DEFAULT_TENANT, [Upload(n, d, {"album": "x"}) for n, d in files], wait_for_caption=True))
    assert [d.created for d in first] == [True, True] and core.store.upserts == 1
    assert first[0].record.id == content_id(unique_image(1)) and first[0].record.caption.startswith("a picture of")
    assert len(first[0].record.phash) == 16 and first[0].record.thumbnail and first[0].record.metadata == {"album": "x"}
    calls = list(core.inference.calls)
    again = run(index(core, [("renamed.png", unique_image(1))], {"ignored": True}))
    assert not again[0].created and again[0].record.source == "a.png" and core.store.upserts == 1
    assert core.inference.calls == calls  # no model ran


def test_a_failing_model_writes_nothing():
    core = service()
    core.inference.fail = ServiceError(ErrorKind.UNAVAILABLE, "Triton is down")
    refused = kind_of(index(core, [("a.png", unique_image(3))], {}))
    assert refused.kind is ErrorKind.UNAVAILABLE and refused.retry_after == 5
    assert core.store.records == {} and core.store.upserts == 0


def test_one_bad_file_fails_the_batch_before_any_model_runs():
    core = service()
    refused = kind_of(index(core, [("good.png", unique_image(4)), ("bad.jpg", b"not an image")], {}))
    assert refused.kind is ErrorKind.INVALID_ARGUMENT and refused.code == "invalid_image"
    assert refused.message == "files[1] (bad.jpg): not a recognised image format"  # which file of the batch
    assert core.inference.calls == [] and core.store.records == {}
    bomb = kind_of(index(core, [("bomb.png", png_header_only(60_000, 60_000))], {}))
    assert bomb.kind is ErrorKind.TOO_LARGE and bomb.code == "image_too_large"


def test_concurrent_uploads_of_one_image_make_one_record():
    core = service()

    async def main():
        return await asyncio.gather(*(core.index_images(DEFAULT_TENANT, [Upload("same.png", unique_image(5))]) for _ in range(6)))

    results = run(main())
    assert sum(r[0].created for r in results) == 1 and len(core.store.records) == 1 and core.store.upserts == 1


def test_captions_can_be_skipped_per_batch_and_are_refused_when_the_gateway_has_none():
    core = service()
    (done,) = run(index(core, [("a.png", unique_image(6))], captions=False))
    assert done.record.caption == "" and ("blip_caption", 1) not in core.inference.calls
    without = service(captions=False)
    assert kind_of(index(without, [("a.png", unique_image(7))], captions=True)).kind is ErrorKind.INVALID_ARGUMENT
    assert run(index(without, [("a.png", unique_image(7))]))[0].record.caption == ""


@pytest.mark.parametrize("k", [0, -1, 1001])
def test_k_has_one_limit_for_every_search(k):
    core = service()
    for search in (core.search_text(DEFAULT_TENANT, "dog", k), core.search_image(DEFAULT_TENANT, unique_image(8), k)):
        refused = kind_of(search)
        assert refused.kind is ErrorKind.INVALID_ARGUMENT and refused.message == "k must be in 1..1000"


def test_limits_are_the_services_own():
    core = service(max_k=5, max_upload_bytes=100, max_files_per_request=2)
    assert kind_of(core.search_text(DEFAULT_TENANT, "dog", 6)).message == "k must be in 1..5"
    assert kind_of(core.search_image(DEFAULT_TENANT, unique_image(9), 1)).kind is ErrorKind.TOO_LARGE
    assert kind_of(index(core, [("a", b"x"), ("b", b"y"), ("c", b"z")])).message == "at most 2 files per request"


def test_empty_and_overlong_queries_are_invalid():
    core = service()
    assert kind_of(core.search_text(DEFAULT_TENANT, "   ", 3)).message == "the query is empty"
    assert "longer than 1000" in kind_of(core.search_text(DEFAULT_TENANT, "x" * 1001, 3)).message


def test_image_search_ranks_by_cosine_among_the_records_the_filter_keeps():
    core = service()
    photos = list(PHOTO_JPEGS.items())[:4]
    run(index(core, photos[:3], {"album": "x"}))
    run(index(core, photos[3:], {"album": "y"}))
    conditions = validate([{"field": "metadata.album", "value": "x"}])
    hits = run(core.search_image(DEFAULT_TENANT, PHOTO_JPEGS["coffee"], 4, conditions))
    assert hits[0].record.source == "coffee" and hits[0].score > 0.99  # indexed and searched at other scales
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert sorted(h.record.source for h in hits) == sorted(name for name, _ in photos[:3])
    assert core.store.searched[-1] == [Condition("metadata.album", "eq", ("x",))]


def test_text_search_fuses_caption_words_over_clip():
    core = service()
    run(index(core, [(f"{i}.png", unique_image(10 + i)) for i in range(5)]))
    query = "brightness"
    hits = run(core.search_text(DEFAULT_TENANT, query, 3))
    vector = core.inference.text_vector(query)
    for hit in hits:
        assert hit.clip_score == pytest.approx(float(np.dot(core.store.records[hit.record.id].vector, vector)), abs=1e-6)
        assert hit.caption_match == 1.0 and hit.score == pytest.approx(hit.clip_score + 0.1)


def test_reads_deletes_and_pages():
    core = service()
    done = run(index(core, [(f"{i}.png", unique_image(20 + i)) for i in range(5)]))
    image_id = done[0].record.id
    assert run(core.get(DEFAULT_TENANT, image_id)).source == "0.png"
    assert run(core.thumbnail(DEFAULT_TENANT, image_id))[:2] == b"\xff\xd8"
    page = run(core.list_images(DEFAULT_TENANT, 2, 2))
    assert page.total == 5 and len(page.records) == 2 and page.offset == 2
    run(core.delete(DEFAULT_TENANT, image_id))
    assert kind_of(core.get(DEFAULT_TENANT, image_id)).kind is ErrorKind.NOT_FOUND
    assert kind_of(core.delete(DEFAULT_TENANT, image_id)).kind is ErrorKind.NOT_FOUND
    assert kind_of(core.get(DEFAULT_TENANT, "not-an-id")).kind is ErrorKind.INVALID_REQUEST
    assert kind_of(core.list_images(DEFAULT_TENANT, 1000, 16000)).kind is ErrorKind.INVALID_REQUEST


def test_readiness_names_each_dependency():
    core = service()
    assert run(core.readiness()) == {"inference": "ok", "milvus": "ok"}
    core.inference.ready_error = ServiceError(ErrorKind.UNAVAILABLE, "Triton models not ready: clip_image")
    assert run(core.readiness()) == {"inference": "Triton models not ready: clip_image", "milvus": "ok"}


def test_min_score_keeps_exactly_the_hits_at_or_above_it():
    core = service()
    run(index(core, [(f"{i}.png", unique_image(40 + i)) for i in range(6)]))
    query = unique_image(40)
    every = run(core.search_image(DEFAULT_TENANT, query, 6))
    threshold = every[2].score  # brute force over the fake store: exact cosines
    kept = run(core.search_image(DEFAULT_TENANT, query, 6, min_score=threshold))
    assert [h.record.id for h in kept] == [h.record.id for h in every if h.score >= threshold] and len(kept) >= 3
    assert run(core.search_image(DEFAULT_TENANT, query, 6, min_score=1.5)) == []
    texts = run(core.search_text(DEFAULT_TENANT, "brightness", 6))
    assert [h.record.id for h in run(core.search_text(DEFAULT_TENANT, "brightness", 6, min_score=texts[1].score))] == \
        [h.record.id for h in texts if h.score >= texts[1].score]
    for bad in (float("nan"), float("inf")):
        assert kind_of(core.search_text(DEFAULT_TENANT, "dog", 3, min_score=bad)).message == "min_score must be a finite number"


def test_text_search_asks_both_paths_with_one_filter_where_the_store_searches_keywords():
    core = service()
    run(index(core, [("a.png", unique_image(30)), ("b.png", unique_image(31))]))
    assert core.features()["keyword_search"] == "off: the in-memory store was made without it"
    core = service_over(unit_settings(), core.inference, RecordingStore(keyword_search=True))
    run(index(core, [("a.png", unique_image(30)), ("b.png", unique_image(31))]))
    assert core.features() == {"keyword_search": "on", "vector_search": "exact (numpy brute force)",
                                "decode": "gateway", "precision": "fp32", "scores": "clip: scores are cosines",
                                "tenants": "filtered per tenant", "filter_fields": "none declared"}
    conditions = validate([{"field": "metadata.album", "value": "x"}])
    run(index(core, [("c.png", unique_image(32))], {"album": "x"}))
    core.store.searched.clear()
    hits = run(core.search_text(DEFAULT_TENANT, "brightness", 2, conditions))  # every caption: "a picture of brightness N"
    assert core.store.searched == [[Condition("metadata.album", "eq", ("x",))]] * 2  # the keyword path and CLIP's
    assert len(hits) == 1 and hits[0].keyword_score > 0 and hits[0].record.metadata == {"album": "x"}
    off = service_over(unit_settings(keyword_search=False), core.inference, core.store)
    assert off.features()["keyword_search"] == "off: GATEWAY_KEYWORD_SEARCH=false" and not off.keyword_feature.on


def test_two_tenants_hold_the_same_bytes_as_two_records_and_never_see_each_other():
    core = service(captions=False)
    photo = PHOTO_JPEGS["coffee"]

    async def main():
        (mine,) = await core.index_images("acme", [Upload("a.jpg", photo, {"owner": "acme"})])
        (theirs,) = await core.index_images("globex", [Upload("b.jpg", photo, {"owner": "globex"})])
        assert mine.created and theirs.created and mine.record.id == theirs.record.id == content_id(photo)
        (again,) = await core.index_images("acme", [Upload("c.jpg", photo)])
        assert not again.created and again.record.source == "a.jpg"  # deduplicated within a tenant only
        await core.index_images("acme", [Upload("d.png", unique_image(60))])
        assert (await core.get("globex", mine.record.id)).metadata == {"owner": "globex"}
        assert [h.record.metadata.get("owner") for h in await core.search_image("globex", photo, 10)] == ["globex"]
        assert (await core.list_images("globex", 10, 0)).total == 1 and (await core.list_images("acme", 10, 0)).total == 2
        acme_only = (await core.index_images("acme", [Upload("e.png", unique_image(61))]))[0].record.id
        for read in (core.get("globex", acme_only), core.thumbnail("globex", acme_only), core.similar("globex", acme_only, 3),
                     core.delete("globex", acme_only)):
            with pytest.raises(ServiceError) as refused:
                await read
            assert refused.value.kind is ErrorKind.NOT_FOUND
        await core.delete("globex", mine.record.id)
        assert (await core.get("acme", mine.record.id)).source == "a.jpg"
        assert await core.tenants() == {"acme": 3}
        assert await core.delete_tenant("acme") == 3 and await core.tenants() == {}

    run(main())


@pytest.mark.parametrize("name", ["", "a b", "-x", "x" * 65, "a.b", "a/b", "ten\nant"])
def test_a_tenant_name_that_is_no_name_is_refused_before_anything_runs(name):
    core = service()
    for call in (core.index_images(name, [Upload("a.png", unique_image(62))]), core.get(name, "0" * 32),
                 core.search_text(name, "dog", 3), core.list_images(name, 10, 0), core.delete_tenant(name), core.count(name)):
        refused = kind_of(call)
        assert refused.kind is ErrorKind.INVALID_REQUEST and refused.code == "invalid_tenant"
    assert core.inference.calls == [] and core.store.upserts == 0


def test_declared_keys_must_hold_their_type_at_upload_and_their_filters_carry_it():
    core = service(captions=False, filter_fields={"album": "keyword", "year": "integer"})
    assert "album (keyword), year (integer)" in core.features()["filter_fields"]
    refused = kind_of(core.index_images(DEFAULT_TENANT, [Upload("a.png", unique_image(63), {"year": "2024"})]))
    assert refused.kind is ErrorKind.INVALID_ARGUMENT and "metadata.year is a declared integer field" in refused.message
    run(core.index_images(DEFAULT_TENANT, [Upload("a.png", unique_image(63), {"year": 2024, "free": [1]})]))
    gte_2000 = validate([{"field": "metadata.year", "op": "gte", "value": 2000}])
    run(core.search_image(DEFAULT_TENANT, unique_image(63), 3, gte_2000))
    assert core.store.searched[-1] == [Condition("metadata.year", "gte", (2000,), "integer")]


def test_deleting_a_tenant_leaves_the_marks_that_keep_its_queued_captions_from_being_written_back():
    core = service()

    async def main():
        done = await core.index_images("acme", [Upload(f"{i}.png", unique_image(70 + i)) for i in range(3)])
        await core.index_images("globex", [Upload("0.png", unique_image(70))])  # the same bytes, another tenant
        assert all(d.record.caption_state == "pending" for d in done)
        assert await core.delete_tenant("acme") == 3
        assert all(core.queueing.inputs.was_deleted(d.record.key) for d in done)
        assert not core.queueing.inputs.was_deleted(f"{done[0].record.id}.globex")
        counts = await drain(core)
        assert counts.captioned == 1 and await core.tenants() == {"globex": 1}
        assert (await core.get("globex", done[0].record.id)).caption_state == "done"

    run(main())
