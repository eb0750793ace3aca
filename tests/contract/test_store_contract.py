"""One contract for every VectorStore: the in-memory store (the fast subset), Milvus Lite and the
Milvus 2.3.5 server (integration), each checked against brute force over the same records: reads,
every filter operator on plain fields, undeclared metadata keys (values of every JSON kind, missing
keys, lists) and declared ones (typed fields: keyword, integer, float, boolean, keyword list; missing
values), ``in`` lists of mixed types, ANDs, paging, upserts of the same id, deletes, keyword search
where the store's capabilities say it has it, the caption queue's reads (due records, counts), and
tenants: a second tenant holds records with the same ids, which no read of the first ever sees.

The reference is written here, condition by condition, as the rules of gateway.core.filters state
them, independently of the in-memory store's own evaluation. Milvus collections use FLAT (exact)
search, so results compare exactly; HNSW's recall is bench/vector_tier.py's business."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from gateway.backends.memory import InMemoryStore
from gateway.core.filters import check, validate
from gateway.core.protocols import VectorStore
from gateway.core.records import CaptionJob, ImageRecord, record_key
from gateway.settings import Settings
from gateway.wiring import build_store

DIM = 8
N = 64
TENANT, OTHER = "t1", "other-tenant"  # every test reads TENANT's records; OTHER holds records of the same ids
DECLARED = {"album": "keyword", "flag": "boolean", "year": "integer", "score": "float", "tags": "keyword_list"}
SCORES: list[float | int] = [0.5, 1, -2.25, 10 ** 12, 3]
TAGS = [["cat", "dog"], [], ["dog"], ["bird", "cat", "x"]]
LABELS: list[list] = [["a", 1], ["b"], [], [True, "a"]]  # an undeclared list key
NUMBERS: list[object] = [1, 1.0, 2.5, -3, 0, 1e-4, 7, 10 ** 12]
OTHERS: list[object] = ["1", "a", True, False, None, [1, 2], {"x": 1}]
ALBUMS = ["a", "b", "c"]
CAPTIONS = ["red bicycle on a street", "blue car parked", "red car", "dog on grass", "", "bicycle bell"]
names = (f"c{i}" for i in itertools.count())


def records() -> list[ImageRecord]:
    """N records of TENANT whose metadata holds every kind of value under "n", the declared keys (with
    values of their types) and an undeclared list, each key missing from some."""
    rng = np.random.default_rng(11)
    values = NUMBERS + OTHERS
    out = []
    for i in range(N):
        metadata: dict = {"album": ALBUMS[i % 3], "flag": i % 4 == 0, "year": 2000 + i % 7, "score": SCORES[i % 5],
                          "tags": TAGS[i % 4], "labels": LABELS[i % 4]}
        for key, missing in (("n", i % 9 == 8), ("album", i % 5 == 0), ("flag", i % 11 == 0), ("year", i % 6 == 0),
                             ("score", i % 4 == 1), ("tags", i % 7 == 0), ("labels", i % 5 == 3)):
            if key == "n" and not missing:
                metadata["n"] = values[i % len(values)]
            elif missing:
                metadata.pop(key, None)
        vector = rng.normal(size=DIM).astype(np.float32)
        out.append(ImageRecord(f"{i:032x}", CAPTIONS[i % len(CAPTIONS)], f"photo-{i % 7}.jpg", metadata, 1_700_000_000 + i,
                               f"{i % 4:016x}", vector / np.linalg.norm(vector), f"thumbnail-{i}", tenant=TENANT))
    return out


def others(stored: list[ImageRecord]) -> list[ImageRecord]:
    """OTHER's records: the same ids (the same bytes uploaded by another tenant), other vectors, captions,
    metadata and states, so any leak shows in every result."""
    rng = np.random.default_rng(12)
    out = []
    for record in stored[:24]:
        vector = rng.normal(size=DIM).astype(np.float32)
        out.append(ImageRecord(record.id, "red bicycle of another tenant", record.source, {"album": "a", "flag": True},
                               record.created_at, record.phash, vector / np.linalg.norm(vector), "other-thumbnail",
                               "done", tenant=OTHER))
    return out


def kind(value: object) -> str | None:
    return "bool" if isinstance(value, bool) else "number" if isinstance(value, (int, float)) else (
        "str" if isinstance(value, str) else None)


def same(held: object, value: object) -> bool:
    return kind(held) is not None and kind(held) == kind(value) and held == value


def meta(key: str) -> Callable[[ImageRecord], object]:
    return lambda r: r.metadata.get(key)


def number(held: object) -> bool:
    return kind(held) == "number"


# (conditions as a request gives them, the reference predicate)
CASES: list[tuple[list[dict], Callable[[ImageRecord], bool]]] = [
    ([{"field": "metadata.album", "value": "a"}], lambda r: same(meta("album")(r), "a")),
    ([{"field": "metadata.album", "op": "ne", "value": "a"}], lambda r: not same(meta("album")(r), "a")),
    ([{"field": "metadata.n", "value": 1}], lambda r: same(meta("n")(r), 1)),
    ([{"field": "metadata.n", "value": 2.5}], lambda r: same(meta("n")(r), 2.5)),
    ([{"field": "metadata.n", "value": "1"}], lambda r: same(meta("n")(r), "1")),
    ([{"field": "metadata.n", "value": True}], lambda r: same(meta("n")(r), True)),
    ([{"field": "metadata.n", "op": "ne", "value": 1}], lambda r: not same(meta("n")(r), 1)),
    ([{"field": "metadata.n", "op": "gt", "value": 0}], lambda r: number(meta("n")(r)) and meta("n")(r) > 0),
    ([{"field": "metadata.n", "op": "gte", "value": 1}], lambda r: number(meta("n")(r)) and meta("n")(r) >= 1),
    ([{"field": "metadata.n", "op": "lt", "value": 0.001}], lambda r: number(meta("n")(r)) and meta("n")(r) < 0.001),
    ([{"field": "metadata.n", "op": "lte", "value": -3}], lambda r: number(meta("n")(r)) and meta("n")(r) <= -3),
    ([{"field": "metadata.n", "op": "gt", "value": 10 ** 11}], lambda r: number(meta("n")(r)) and meta("n")(r) > 10 ** 11),
    ([{"field": "metadata.n", "op": "in", "value": [1, 7]}], lambda r: any(same(meta("n")(r), v) for v in (1, 7))),
    ([{"field": "metadata.n", "op": "in", "value": [2.5, -3]}], lambda r: any(same(meta("n")(r), v) for v in (2.5, -3))),
    ([{"field": "metadata.n", "op": "in", "value": [1, 2.5, "a", False]}],
     lambda r: any(same(meta("n")(r), v) for v in (1, 2.5, "a", False))),
    ([{"field": "metadata.flag", "value": True}], lambda r: same(meta("flag")(r), True)),
    ([{"field": "metadata.missing", "value": 1}], lambda r: False),
    ([{"field": "metadata.missing", "op": "ne", "value": 1}], lambda r: True),
    ([{"field": "source", "value": "photo-3.jpg"}], lambda r: r.source == "photo-3.jpg"),
    ([{"field": "source", "op": "in", "value": ["photo-1.jpg", "photo-2.jpg"]}],
     lambda r: r.source in ("photo-1.jpg", "photo-2.jpg")),
    ([{"field": "source", "op": "ne", "value": "photo-0.jpg"}], lambda r: r.source != "photo-0.jpg"),
    ([{"field": "created_at", "op": "gte", "value": 1_700_000_050}], lambda r: r.created_at >= 1_700_000_050),
    ([{"field": "created_at", "op": "lt", "value": 1_700_000_010}], lambda r: r.created_at < 1_700_000_010),
    ([{"field": "id", "op": "in", "value": [f"{3:032x}", f"{40:032x}", "f" * 32]}],
     lambda r: r.id in (f"{3:032x}", f"{40:032x}")),
    ([{"field": "phash", "value": f"{1:016x}"}], lambda r: r.phash == f"{1:016x}"),
    ([{"field": "metadata.album", "value": "b"}, {"field": "metadata.flag", "value": True}],
     lambda r: same(meta("album")(r), "b") and same(meta("flag")(r), True)),
    ([{"field": "metadata.album", "op": "in", "value": ["a", "c"]}, {"field": "created_at", "op": "lte", "value": 1_700_000_030}],
     lambda r: any(same(meta("album")(r), v) for v in ("a", "c")) and r.created_at <= 1_700_000_030),
    # declared fields (typed in Milvus): the same meaning, missing values included
    ([{"field": "metadata.flag", "op": "ne", "value": True}], lambda r: not same(meta("flag")(r), True)),
    ([{"field": "metadata.flag", "op": "in", "value": [False]}], lambda r: same(meta("flag")(r), False)),
    ([{"field": "metadata.album", "op": "ne", "value": "b"}], lambda r: not same(meta("album")(r), "b")),
    ([{"field": "metadata.year", "value": 2003}], lambda r: same(meta("year")(r), 2003)),
    ([{"field": "metadata.year", "op": "ne", "value": 2003}], lambda r: not same(meta("year")(r), 2003)),
    ([{"field": "metadata.year", "op": "in", "value": [2001, 2005]}], lambda r: meta("year")(r) in (2001, 2005)),
    ([{"field": "metadata.year", "op": "lt", "value": 2003}], lambda r: number(meta("year")(r)) and meta("year")(r) < 2003),
    ([{"field": "metadata.year", "op": "lte", "value": 2003}], lambda r: number(meta("year")(r)) and meta("year")(r) <= 2003),
    ([{"field": "metadata.year", "op": "gt", "value": 2004}], lambda r: number(meta("year")(r)) and meta("year")(r) > 2004),
    ([{"field": "metadata.score", "op": "lt", "value": 1}], lambda r: number(meta("score")(r)) and meta("score")(r) < 1),
    ([{"field": "metadata.score", "op": "gte", "value": 1}], lambda r: number(meta("score")(r)) and meta("score")(r) >= 1),
    ([{"field": "metadata.score", "op": "in", "value": [1, 0.5]}],
     lambda r: number(meta("score")(r)) and meta("score")(r) in (1, 0.5)),
    ([{"field": "metadata.score", "value": 10 ** 12}], lambda r: same(meta("score")(r), 10 ** 12)),
    ([{"field": "metadata.score", "op": "ne", "value": 3}], lambda r: not same(meta("score")(r), 3)),
    ([{"field": "metadata.tags", "op": "contains", "value": "cat"}], lambda r: "cat" in (meta("tags")(r) or [])),
    ([{"field": "metadata.tags", "op": "contains_any", "value": ["bird", "dog"]}],
     lambda r: bool({"bird", "dog"} & set(meta("tags")(r) or []))),
    # lists in the JSON metadata
    ([{"field": "metadata.labels", "op": "contains", "value": "a"}], lambda r: "a" in (meta("labels")(r) or [])),
    ([{"field": "metadata.labels", "op": "contains_any", "value": ["b", "zzz"]}],
     lambda r: bool({"b", "zzz"} & set(meta("labels")(r) or []))),
    ([{"field": "metadata.n", "op": "contains", "value": 2}], lambda r: isinstance(meta("n")(r), list) and 2 in meta("n")(r)),
    ([{"field": "metadata.album", "value": "a"}, {"field": "metadata.year", "op": "gte", "value": 2002},
      {"field": "metadata.tags", "op": "contains", "value": "dog"}],
     lambda r: same(meta("album")(r), "a") and number(meta("year")(r)) and meta("year")(r) >= 2002
     and "dog" in (meta("tags")(r) or [])),
]


def milvus_store(uri: str) -> VectorStore:
    settings = Settings(_env_file=None, milvus_uri=uri, collection=next(names), index_type="FLAT", flush_after_rows=0,
                        filter_fields=DECLARED)
    return build_store(settings, DIM)


@pytest.fixture(params=[
    "memory",
    pytest.param("lite", marks=pytest.mark.integration),
    pytest.param("server", marks=[pytest.mark.integration, pytest.mark.milvus_server]),
], scope="module")
def make_store(request, tmp_path_factory) -> Callable[[], VectorStore]:
    """A factory of empty, started stores of one kind."""
    if request.param == "memory":
        return lambda: InMemoryStore(keyword_search=True, max_window=16384)
    if request.param == "lite":
        uri = str(tmp_path_factory.mktemp("contract") / "contract.db")
        return lambda: milvus_store(uri)
    server = request.getfixturevalue("milvus_server")
    return lambda: milvus_store(server.uri)


def on_filled_store(make_store, scenario: Callable[[VectorStore, list[ImageRecord]], Awaitable[None]]) -> None:
    """``scenario(store, records)`` on a new store holding records() (written in two upserts) and OTHER's
    records of the same ids."""
    async def run() -> None:
        store, stored = make_store(), records()
        await store.start()
        try:
            await store.upsert(stored[:40])
            await store.upsert(others(stored))
            await store.upsert(stored[40:])
            await scenario(store, stored)
        finally:
            await store.close()

    asyncio.run(run())


def test_reads_return_what_was_written(make_store):
    async def scenario(store: VectorStore, stored: list[ImageRecord]) -> None:
        assert await store.count(TENANT) == N
        wanted = [stored[5].id, stored[50].id, "e" * 32]
        got = {r.id: r for r in await store.get(TENANT, wanted, with_vectors=True)}
        assert set(got) == {stored[5].id, stored[50].id}
        for record in (stored[5], stored[50]):
            mine = got[record.id]
            assert (mine.caption, mine.source, mine.metadata, mine.created_at, mine.phash) == \
                (record.caption, record.source, record.metadata, record.created_at, record.phash)
            np.testing.assert_allclose(mine.vector, record.vector, atol=1e-6)
        assert all(r.vector is None for r in await store.get(TENANT, [stored[5].id]))
        assert await store.thumbnail(TENANT, stored[7].id) == "thumbnail-7" and await store.thumbnail(TENANT, "e" * 32) is None
        exported = {r.id: r for r in await store.all_records(TENANT)}
        assert set(exported) == {r.id for r in stored} and all(r.vector is not None for r in exported.values())
        pages = [r.id for offset in range(0, N, 10) for r in await store.list_records(TENANT, 10, offset)]
        assert pages == sorted(r.id for r in stored)
        assert store.capabilities.max_window == 16384

    on_filled_store(make_store, scenario)


def test_every_filter_selects_what_brute_force_selects_in_cosine_order(make_store):
    async def scenario(store: VectorStore, stored: list[ImageRecord]) -> None:
        query = np.random.default_rng(5).normal(size=(1, DIM)).astype(np.float32)
        query /= np.linalg.norm(query)
        for conditions, keeps in CASES:
            expected = sorted((r for r in stored if keeps(r)), key=lambda r: -float(r.vector @ query[0]))
            (hits,) = await store.search(TENANT, query, N, check(validate(conditions), DECLARED))
            assert [r.id for r, _ in hits] == [r.id for r in expected], conditions
            np.testing.assert_allclose([s for _, s in hits], [float(r.vector @ query[0]) for r in expected], atol=1e-5)
        (top,) = await store.search(TENANT, query, 3)
        assert len(top) == 3

    on_filled_store(make_store, scenario)


def test_an_upsert_of_the_same_id_replaces_and_a_delete_removes(make_store):
    async def scenario(store: VectorStore, stored: list[ImageRecord]) -> None:
        first = stored[0]
        again = ImageRecord(first.id, "a new caption", "renamed.jpg", {"album": "z"}, first.created_at, first.phash,
                            first.vector, "new-thumbnail", tenant=TENANT)
        await store.upsert([again])
        assert await store.count(TENANT) == N
        (got,) = await store.get(TENANT, [first.id])
        assert (got.caption, got.source, got.metadata) == ("a new caption", "renamed.jpg", {"album": "z"})
        await store.delete(TENANT, stored[1].id)
        assert await store.get(TENANT, [stored[1].id]) == [] and await store.count(TENANT) == N - 1
        (hits,) = await store.search(TENANT, stored[1].vector[None], N)
        assert stored[1].id not in [r.id for r, _ in hits] and len(hits) == N - 1

    on_filled_store(make_store, scenario)


def test_keyword_search_finds_the_captions_holding_a_word_where_the_store_has_it(make_store):
    async def scenario(store: VectorStore, stored: list[ImageRecord]) -> None:
        feature = store.capabilities.keyword_search
        if not feature.on:
            assert "has no BM25 full-text search" in feature.reason  # the 2.3 server
            return
        for word, conditions in (("bicycle", []), ("red", [{"field": "metadata.flag", "value": True}]), ("zebra", [])):
            checked = check(validate(conditions))
            wanted = {r.id for r in stored if word in r.caption.split() and all(
                same(r.metadata.get(c["field"].split(".", 1)[1]), c["value"]) for c in conditions)}
            found = await store.search_captions(TENANT, word, N, checked)
            assert {r.id for r, _ in found} == wanted, word
            assert all(score > 0 and r.vector is not None for r, score in found)
            assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)

    on_filled_store(make_store, scenario)


def test_the_caption_queue_reads_the_due_records_whole_and_counts_by_state(make_store):
    async def scenario(store: VectorStore, stored: list[ImageRecord]) -> None:
        now = 1_800_000_000_000
        jobs = {0: ("pending", CaptionJob()), 1: ("pending", CaptionJob(1, "w", now + 60_000)),  # leased
                2: ("pending", CaptionJob(1, "", 0, now + 60_000)), 3: ("pending", CaptionJob(2, "old", now - 1, now)),
                4: ("failed", CaptionJob(5)), 5: ("none", CaptionJob())}
        changed = [ImageRecord(stored[i].id, "", stored[i].source, stored[i].metadata, 1_700_000_000 + i, stored[i].phash,
                               stored[i].vector, stored[i].thumbnail, state, "why" if state == "failed" else "", job,
                               tenant=TENANT)
                   for i, (state, job) in jobs.items()]
        await store.upsert(changed)
        due = {r.id: r for r in await store.captions_due(10, now)}
        assert set(due) == {stored[0].id, stored[3].id}  # not leased, not waiting for a retry
        for i in (0, 3):
            record = due[stored[i].id]
            assert record.thumbnail == stored[i].thumbnail and record.caption_state == "pending"
            np.testing.assert_allclose(record.vector, stored[i].vector, atol=1e-6)
            assert record.job == jobs[i][1]
        assert len(await store.captions_due(1, now)) == 1
        (failed,) = await store.get(TENANT, [stored[4].id], strong=True)
        assert (failed.caption_state, failed.caption_error, failed.job.attempts) == ("failed", "why", 5)
        stats = await store.caption_queue()
        assert (stats.pending, stats.failed, stats.oldest_pending_at) == (4, 1, 1_700_000_000)
        pending = check(validate([{"field": "caption_state", "value": "pending"}]))
        (hits,) = await store.search(TENANT, stored[0].vector[None], N, pending)
        assert {r.id for r, _ in hits} == {stored[i].id for i in range(4)}

    on_filled_store(make_store, scenario)


def test_reads_beside_rewrites_of_the_same_records_never_miss_them(make_store):
    """The caption queue rewrites records (its claims, its captions) while clients read them: no read may
    fall between the two halves of an upsert (Milvus Lite's upsert is a delete and an insert)."""
    async def scenario(store: VectorStore, stored: list[ImageRecord]) -> None:
        rewritten = stored[:2]
        done = asyncio.Event()

        async def rewrite() -> None:
            for _ in range(30):
                await store.upsert(rewritten)
            done.set()

        async def read() -> tuple[int, int, int]:
            reads = short_counts = misses = 0
            while not done.is_set() or reads < 20:
                reads += 1
                short_counts += await store.count(TENANT) != N
                misses += len(await store.get(TENANT, [rewritten[0].id])) != 1
            return reads, short_counts, misses

        _, (reads, short_counts, misses) = await asyncio.gather(rewrite(), read())
        assert (short_counts, misses) == (0, 0), f"{reads} reads"

    on_filled_store(make_store, scenario)


def test_tenants_are_counted_listed_and_deleted_and_never_seen_by_each_other(make_store):
    async def scenario(store: VectorStore, stored: list[ImageRecord]) -> None:
        theirs = others(stored)
        assert await store.tenants() == {TENANT: N, OTHER: len(theirs)}
        assert (await store.count(TENANT), await store.count(OTHER), await store.count(None)) == (N, len(theirs), N + len(theirs))
        for tenant, kept in ((TENANT, stored), (OTHER, theirs)):
            (got,) = await store.get(tenant, [stored[0].id], with_vectors=True)  # one id, two records
            mine = next(r for r in kept if r.id == stored[0].id)
            assert (got.tenant, got.caption, got.key) == (tenant, mine.caption, record_key(tenant, mine.id))
            np.testing.assert_allclose(got.vector, mine.vector, atol=1e-6)
            assert await store.thumbnail(tenant, stored[0].id) == mine.thumbnail
            assert sorted(await store.ids(tenant)) == sorted(r.id for r in kept)
        assert await store.get(OTHER, [stored[40].id]) == [] and await store.thumbnail(OTHER, stored[40].id) is None
        listed = await store.list_records(OTHER, 100, 0)
        assert [r.id for r in listed] == sorted(r.id for r in theirs) and {r.tenant for r in listed} == {OTHER}
        (everyone,) = await store.search(None, stored[0].vector[None], 2 * N)
        assert {r.key for r, _ in everyone} == {r.key for r in stored + theirs}
        await store.delete(OTHER, stored[1].id)  # only OTHER's record of that id
        assert len(await store.get(TENANT, [stored[1].id])) == 1 and await store.get(OTHER, [stored[1].id]) == []
        assert await store.delete_tenant(OTHER) == len(theirs) - 1
        assert await store.tenants() == {TENANT: N} and await store.count(OTHER) == 0
        assert await store.count(TENANT) == N and len(await store.all_records(TENANT)) == N

    on_filled_store(make_store, scenario)
