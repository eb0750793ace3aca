"""The service: every operation the HTTP and gRPC servers and the CLI offer, over an Inference and a
VectorStore. Built once per process (gateway.wiring) and shared by all requests."""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .caption_queue import CaptionWorker, QueueOptions
from .errors import ErrorKind, ServiceError, invalid
from .filters import Condition, FilterCondition, check
from .images import PreparedImage, from_decoded, prepare, tier_decodes
from .locks import KeyedLocks
from .metadata import check_metadata
from .protocols import CaptionInputs, CaptionQueueStats, Feature, Inference, ModelInfo, TierDecoding, VectorStore
from .records import (
    CaptionState,
    Embedded,
    Embeddings,
    Hit,
    ImageRecord,
    Indexed,
    Page,
    TextHit,
    Upload,
    is_image_id,
    record_key,
)
from .tenants import check_tenant
from .text_ranking import candidate_pool, fuse, hybrid

DEFAULT_K = 10  # results when a request does not say (every transport)
DEFAULT_PAGE_SIZE = 50  # records per listing page when a request does not say
QUEUE_STATS_TTL_S = 5.0  # how long the caption queue's counts are reused (readiness, metrics)
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """Every request limit the service checks. Built from Settings (gateway.wiring.limits), where each
    one's default is; transports read them from here to document, and to bound what they read."""

    max_upload_bytes: int
    max_request_bytes: int  # every upload of one request together
    max_pixels: int
    max_files_per_request: int
    max_k: int
    max_list_limit: int
    max_embedding_inputs: int  # texts and images in one embeddings call
    max_query_chars: int  # a text search query, or a text to embed


@dataclass(frozen=True)
class CaptionQueueing:
    """Where pending captions wait (``inputs``), how workers take them, and whether one runs here."""

    inputs: CaptionInputs
    options: QueueOptions
    worker_here: bool


def spool(inputs: CaptionInputs, items: list[tuple[str, np.ndarray]]) -> None:
    for key, pixels in items:
        inputs.put(key, pixels)


def unspool(inputs: CaptionInputs, keys: list[str]) -> None:
    for key in keys:
        inputs.discard(key)


def forget_all(inputs: CaptionInputs, keys: list[str]) -> None:
    for key in keys:
        inputs.forget(key)


class ImageSearchService:
    def __init__(self, inference: Inference, store: VectorStore, limits: Limits, caption_weight: float,
                 exact_decode: bool, keyword_search: bool, queueing: CaptionQueueing | None = None,
                 tier: TierDecoding | None = None, declared: Mapping[str, str] | None = None):
        """``exact_decode``: decode uploads at full size rather than at the scale their products need.
        ``keyword_search``: text search also finds captions by their words, where the store can.
        ``queueing``: uploads are answered once embedded and their captions queued (None: every upload
        waits for its caption). ``tier``: JPEGs are decoded on the inference tier (GATEWAY_DECODE=inference;
        None: every upload is decoded here). ``declared``: the declared filter fields and their types
        (gateway.core.declared). (gateway.settings.Settings documents each and has their defaults.)

        Every operation on records acts for one tenant, its first argument (gateway.core.tenants)."""
        self.inference, self.store, self.limits, self.caption_weight = inference, store, limits, caption_weight
        self.exact_decode, self.keyword_search, self.queueing, self.tier = exact_decode, keyword_search, queueing, tier
        self.declared = dict(declared or {})
        self.worker = (CaptionWorker(inference, store, queueing.inputs, queueing.options)
                       if queueing is not None and queueing.worker_here and self.captioning else None)
        self.worker_task: asyncio.Task | None = None
        self.queue_stats: tuple[float, CaptionQueueStats | None] = (0.0, None)  # (when counted, what)
        # Milvus has no unique key: concurrent upserts of one record would leave duplicate rows. Writers of
        # a record take its key's lock (one process; see the README for several gateway replicas).
        self.write_locks = KeyedLocks()

    @property
    def model_info(self) -> ModelInfo:
        return self.inference.info

    @property
    def captioning(self) -> bool:
        """Whether this gateway captions images (BLIP is loaded)."""
        return self.inference.info.blip_pixels is not None

    async def start(self) -> None:
        await self.store.start()

    def start_worker(self) -> None:
        """Run this process's caption worker (GATEWAY_CAPTION_WORKER) until close(): the serving gateway
        and the embedded CLI's index call it, once started."""
        if self.worker is not None and self.worker_task is None:
            self.worker_task = asyncio.get_running_loop().create_task(self.worker.run())

    async def close(self) -> None:
        if self.worker_task is not None:
            self.worker_task.cancel()
            await asyncio.gather(self.worker_task, return_exceptions=True)
        await self.inference.close()
        await self.store.close()

    async def readiness(self) -> dict[str, str]:
        """"ok" or what is wrong, per dependency."""
        checks = {}
        for name, dependency in (("inference", self.inference), ("milvus", self.store)):
            try:
                await dependency.check_ready()
                checks[name] = "ok"
            except ServiceError as exc:
                checks[name] = exc.message
        return checks

    @property
    def keyword_feature(self) -> Feature:
        """Whether text search also searches captions by their words, and why not where it does not."""
        return self.store.capabilities.keyword_search if self.keyword_search else Feature(False, "GATEWAY_KEYWORD_SEARCH=false")

    def features(self) -> dict[str, str]:
        """How this gateway searches, for operators (GET /readyz, with captions_feature)."""
        decode = ("inference tier (JPEG; other formats and colour-managed JPEGs here)" if self.tier is not None
                  else "gateway")
        capabilities = self.store.capabilities
        declared = ", ".join(f"{key} ({kind})" for key, kind in self.declared.items())
        return {"keyword_search": self.keyword_feature.describe(), "vector_search": capabilities.vector_search,
                "decode": decode, "precision": self.model_info.precision(), "scores": self.model_info.scores(),
                "tenants": capabilities.tenants,
                "filter_fields": f"{declared}: {capabilities.declared_fields}" if declared else "none declared"}

    async def caption_queue(self) -> CaptionQueueStats | None:
        """The queue's state, None without a queue: counts on the store, made at most every
        QUEUE_STATS_TTL_S (readiness probes and scrapes ask often; the oldest pending record takes a scan)."""
        if self.queueing is None or not self.captioning:
            return None
        counted_at, stats = self.queue_stats
        if stats is None or time.monotonic() - counted_at > QUEUE_STATS_TTL_S:
            stats = await self.store.caption_queue()
            self.queue_stats = (time.monotonic(), stats)
        return stats

    async def captions_feature(self) -> str:
        """How this gateway captions, and the queue's state."""
        if not self.captioning:
            return "off: GATEWAY_CAPTIONS=false"
        stats = await self.caption_queue()
        if stats is None:
            return "on: every upload waits for its caption"
        oldest = "" if stats.oldest_pending_at is None else f", oldest {max(0, int(time.time()) - stats.oldest_pending_at)} s"
        where = "a worker in this gateway" if self.worker is not None else "no worker here (python -m gateway.captioner)"
        return f"queued: {stats.pending} pending{oldest}, {stats.failed} failed; {where}"

    # --- checks shared by every transport ----------------------------------------------------------

    def check_k(self, k: int) -> int:
        if not 1 <= k <= self.limits.max_k:
            raise invalid(f"k must be in 1..{self.limits.max_k}")
        return k


    def check_batch(self, count: int) -> None:
        if count > self.limits.max_files_per_request:
            raise ServiceError(ErrorKind.TOO_LARGE, f"at most {self.limits.max_files_per_request} files per request")
        if count == 0:
            raise invalid("no images given")

    @staticmethod
    def check_min_score(min_score: float | None) -> float | None:
        if min_score is not None and not math.isfinite(min_score):
            raise invalid("min_score must be a finite number")
        return min_score

    def check_text(self, text: str, what: str) -> str:
        """A query text as every text embedding takes it: stripped, not empty, at most max_query_chars."""
        text = text.strip()
        if not text:
            raise invalid(f"{what} is empty")
        if len(text) > self.limits.max_query_chars:
            raise invalid(f"{what} is longer than {self.limits.max_query_chars} characters")
        return text

    @staticmethod
    def check_id(image_id: str) -> str:
        if not is_image_id(image_id):
            raise ServiceError(ErrorKind.INVALID_REQUEST, "image ids are 32 lowercase hex digits")
        return image_id

    # --- images in ---------------------------------------------------------------------------------

    async def _each_file(self, files: list[tuple[str | None, bytes]], work: Callable[[bytes], Awaitable[T]]) -> list[T]:
        """``work`` on every file at once, after the size checks, or the first refusal. A file's label (None
        for the one file of a request) names it in the refusal: "files[2] (cat.jpg): not a recognised image
        format"."""
        for label, data in files:
            if len(data) > self.limits.max_upload_bytes:
                raise ServiceError(ErrorKind.TOO_LARGE, f"{label or 'the upload'} is larger than"
                                   f" {self.limits.max_upload_bytes:,} bytes")

        async def one(label: str | None, data: bytes) -> T:
            try:
                return await work(data)
            except ServiceError as exc:
                if label is None or exc.kind not in (ErrorKind.INVALID_ARGUMENT, ErrorKind.TOO_LARGE):
                    raise
                raise ServiceError(exc.kind, f"{label}: {exc.message}", exc.code) from None

        return list(await asyncio.gather(*(one(label, data) for label, data in files)))


    async def _prepare(self, files: list[tuple[str | None, bytes]], blip: bool = False, record: bool = False
                       ) -> list[PreparedImage]:
        """Every file decoded and resized for the models (here or on the inference tier)."""
        info, max_pixels, exact = self.inference.info, self.limits.max_pixels, self.exact_decode

        async def prepared(data: bytes) -> PreparedImage:
            if self.tier is not None and tier_decodes(data, max_pixels):
                decoded = await self.tier.decode_encoded(data, blip, record)
                if record:  # the id, hash and thumbnail: a few milliseconds
                    return await asyncio.to_thread(from_decoded, data, decoded, True)
                return from_decoded(data, decoded, False)
            return await asyncio.to_thread(prepare, data, info, max_pixels, blip, record, exact)

        return await self._each_file(files, prepared)

    async def _embed_files(self, files: list[tuple[str | None, bytes]], blip: bool) -> np.ndarray:
        """CLIP embeddings of image files, (N, D): each decoded and embedded on the inference tier in one call
        where it decodes them, else decoded here at the scale that also serves BLIP when ``blip`` (the
        tier's CLIP pixels do not depend on what else it makes)."""
        info, max_pixels, exact = self.inference.info, self.limits.max_pixels, self.exact_decode

        async def embedded(data: bytes) -> np.ndarray:
            if self.tier is not None and tier_decodes(data, max_pixels):  # GATEWAY_DECODE=inference, a plain JPEG
                return await self.tier.embed_encoded(data)
            image = await asyncio.to_thread(prepare, data, info, max_pixels, blip, False, exact)
            return (await self.inference.embed_images(image.clip_pixels[None]))[0]

        return np.stack(await self._each_file(files, embedded))

    async def _embed_and_caption(self, images: list[PreparedImage], caption: bool) -> tuple[np.ndarray, list[str]]:
        embed = self.inference.embed_images(np.stack([i.clip_pixels for i in images]))
        if not caption:
            return await embed, [""] * len(images)
        captioned = self.inference.caption(np.stack([i.blip_pixels for i in images if i.blip_pixels is not None]))
        vectors, texts = await asyncio.gather(embed, captioned)
        return vectors, texts

    async def embed_image(self, data: bytes) -> Embedded:
        """The original service's operation: caption (when captions are on) and embedding of one image."""
        (prepared,) = await self._prepare([(None, data)], blip=self.captioning)
        vectors, texts = await self._embed_and_caption([prepared], self.captioning)
        return Embedded(texts[0], vectors[0])

    async def embeddings(self, inputs: Sequence[str | bytes]) -> Embeddings:
        """CLIP embeddings of texts (str, embedded as text search embeds a query) and images (bytes,
        embedded as /embed-image/ embeds them, without the caption) in one call, in input order."""
        if not inputs:
            raise invalid("input is empty")
        if len(inputs) > self.limits.max_embedding_inputs:
            raise ServiceError(ErrorKind.TOO_LARGE, f"at most {self.limits.max_embedding_inputs} inputs per request")
        texts = {i: self.check_text(item, f"input[{i}]") for i, item in enumerate(inputs) if isinstance(item, str)}
        images = {i: item for i, item in enumerate(inputs) if isinstance(item, bytes)}
        calls = {}  # input positions -> the model call for them
        if texts:
            calls[tuple(texts)] = self.inference.embed_texts(list(texts.values()))
        if images:
            # decoded as /embed-image/ decodes them (BLIP's input included), so both give the same vector
            calls[tuple(images)] = self._embed_files([(f"input[{i}]", data) for i, data in images.items()],
                                                     blip=self.captioning)
        vectors = np.empty((len(inputs), self.inference.info.embedding_dim), np.float32)
        for rows, part in zip(calls, await asyncio.gather(*calls.values())):
            vectors[list(rows)] = part
        return Embeddings(vectors, self.inference.count_tokens(list(texts.values())) if texts else 0)

    async def index_images(self, tenant: str, uploads: Sequence[Upload], captions: bool | None = None,
                           wait_for_caption: bool = False) -> list[Indexed]:
        """Index uploads into the tenant's records. Same bytes -> same id: images the tenant already stores
        are returned as they are (no inference, no write); another tenant's copy is another record. New
        images are embedded (and, with ``wait_for_caption`` or without a queue, captioned) first and
        written in one upsert at the end, so a failure anywhere writes nothing; queued captions come later
        (gateway.core.caption_queue). ``captions``: None for the service's default, False to skip BLIP for
        this batch."""
        check_tenant(tenant)
        self.check_batch(len(uploads))
        metadata = [check_metadata(u.metadata, self.declared) for u in uploads]
        if captions and not self.captioning:
            raise invalid("captions are disabled on this gateway (GATEWAY_CAPTIONS=false)")
        caption = self.captioning if captions is None else captions
        if wait_for_caption and not caption:
            raise invalid("wait_for_caption needs captions (they are off for this request or this gateway)")
        queue = self.queueing.inputs if caption and not wait_for_caption and self.queueing is not None else None
        labels = [f"files[{i}] ({u.name or 'unnamed'})" if len(uploads) > 1 else None for i, u in enumerate(uploads)]
        prepared = await self._prepare([(label, u.data) for label, u in zip(labels, uploads)], blip=caption, record=True)
        ids = sorted({p.id for p in prepared})
        # concurrent uploads of one image: the first writes, the rest find it
        async with self.write_locks.hold([record_key(tenant, i) for i in ids]):
            existing = {r.id: r for r in await self.store.get(tenant, ids)}
            fresh = {p.id: (u, meta, p) for u, meta, p in zip(uploads, metadata, prepared) if p.id not in existing}
            records: dict[str, ImageRecord] = {}
            if fresh:
                order = list(fresh.values())
                state: CaptionState = "pending" if queue is not None else ("done" if caption else "none")
                vectors, texts = await self._embed_and_caption([p for _, _, p in order], caption and queue is None)
                now = int(time.time())
                for (upload, meta, p), vector, text in zip(order, vectors, texts):
                    records[p.id] = ImageRecord(p.id, text, upload.name, meta, now, p.phash, vector, p.thumbnail, state,
                                                tenant=tenant)
                keys = [r.key for r in records.values()]
                if queue is not None:
                    await asyncio.to_thread(spool, queue, [(record_key(tenant, p.id), p.blip_input) for _, _, p in order])
                try:
                    await self.store.upsert(list(records.values()), new=True)  # (checked absent, under their locks)
                except BaseException:
                    if queue is not None:
                        await asyncio.to_thread(unspool, queue, keys)
                    raise
        return [Indexed(existing[p.id], False) if p.id in existing else Indexed(records[p.id], True) for p in prepared]

    # --- search ------------------------------------------------------------------------------------

    def _check_search(self, tenant: str, k: int, conditions: Sequence[FilterCondition], min_score: float | None
                      ) -> list[Condition]:
        check_tenant(tenant)
        self.check_k(k)
        self.check_min_score(min_score)
        return check(conditions, self.declared)

    async def search_image(self, tenant: str, data: bytes, k: int, conditions: Sequence[FilterCondition] = (),
                           min_score: float | None = None) -> list[Hit]:
        """The tenant's k stored images most similar to an image (CLIP cosine, -1..1), among those matching
        the filter and, with ``min_score``, scoring at least that (fewer than k then)."""
        checked = self._check_search(tenant, k, conditions, min_score)
        vectors = await self._embed_files([(None, data)], blip=False)
        hits = [Hit(record, score) for record, score in (await self.store.search(tenant, vectors, k, checked))[0]]
        return [h for h in hits if min_score is None or h.score >= min_score]

    async def search_text(self, tenant: str, query: str, k: int, conditions: Sequence[FilterCondition] = (),
                          min_score: float | None = None) -> list[TextHit]:
        """The tenant's images that match a text: CLIP text->image similarity re-ranked with caption word
        overlap and, where the store searches captions by their words, fused with the keyword hits
        (gateway.core.text_ranking); ``min_score`` applies to the CLIP + caption score. The keyword
        search runs while CLIP embeds the query and searches its vector."""
        checked = self._check_search(tenant, k, conditions, min_score)
        query = self.check_text(query, "the query")
        if not self.keyword_feature.on:
            vectors = await self.inference.embed_texts([query])
            pool = candidate_pool(k, self.caption_weight, self.limits.max_k)
            hits = fuse(query, (await self.store.search(tenant, vectors, pool, checked))[0], self.caption_weight, k)
            return [h for h in hits if min_score is None or h.score >= min_score]
        pool = candidate_pool(k, 1.0, self.limits.max_k)

        async def by_clip() -> tuple[np.ndarray, list[tuple[ImageRecord, float]]]:
            vectors = await self.inference.embed_texts([query])
            return vectors[0], (await self.store.search(tenant, vectors, pool, checked))[0]

        (vector, clip_hits), keyword_hits = await asyncio.gather(
            by_clip(), self.store.search_captions(tenant, query, pool, checked))
        ranked = hybrid(query, vector, clip_hits, keyword_hits, self.caption_weight)
        return [h for h in ranked if min_score is None or h.score >= min_score][:k]

    async def similar(self, tenant: str, image_id: str, k: int, conditions: Sequence[FilterCondition] = (),
                      min_score: float | None = None) -> list[Hit]:
        """The tenant's k stored images nearest one of its stored images' own vector (CLIP cosine), the
        image itself excluded; no model runs. NOT_FOUND for an id the tenant does not hold."""
        checked = self._check_search(tenant, k, conditions, min_score)
        record = await self.get(tenant, image_id, with_vector=True)
        assert record.vector is not None
        found = (await self.store.search(tenant, record.vector[None], k + 1, checked))[0]
        hits = [Hit(other, score) for other, score in found if other.id != image_id][:k]
        return [h for h in hits if min_score is None or h.score >= min_score]

    # --- records -----------------------------------------------------------------------------------

    async def get(self, tenant: str, image_id: str, with_vector: bool = False) -> ImageRecord:
        """The tenant's record. NOT_FOUND only after a strong re-read: a record another replica has just
        written, or one the store has not yet made readable after a restart, is never answered as absent;
        another tenant's record is absent."""
        check_tenant(tenant)
        records = await self.store.get(tenant, [self.check_id(image_id)], with_vectors=with_vector)
        if not records:
            records = await self.store.get(tenant, [image_id], with_vectors=with_vector, strong=True)
        if not records:
            raise ServiceError(ErrorKind.NOT_FOUND, f"no image with id {image_id!r}")
        return records[0]

    async def exists(self, tenant: str, image_id: str) -> bool:
        return bool(await self.store.get(check_tenant(tenant), [self.check_id(image_id)]))

    async def thumbnail(self, tenant: str, image_id: str) -> bytes:
        """The JPEG stored at index time."""
        check_tenant(tenant)
        encoded = (await self.store.thumbnail(tenant, self.check_id(image_id))
                   or await self.store.thumbnail(tenant, image_id, strong=True))
        if not encoded:
            raise ServiceError(ErrorKind.NOT_FOUND, f"no thumbnail for image {image_id!r}")
        return base64.b64decode(encoded)

    async def delete(self, tenant: str, image_id: str) -> None:
        """A pending caption's input goes first, leaving the mark that keeps a worker from writing the
        record back (gateway.core.caption_queue)."""
        key = record_key(check_tenant(tenant), self.check_id(image_id))
        async with self.write_locks.hold([key]):
            await self.get(tenant, image_id)
            if self.queueing is not None:
                await asyncio.to_thread(self.queueing.inputs.forget, key)
            await self.store.delete(tenant, image_id)

    async def list_images(self, tenant: str, limit: int, offset: int) -> Page:
        """The tenant's records in id order, with its total; ``offset + limit`` within the store's window."""
        check_tenant(tenant)
        if not 1 <= limit <= self.limits.max_list_limit or offset < 0:
            raise ServiceError(ErrorKind.INVALID_REQUEST, f"limit must be in 1..{self.limits.max_list_limit}, offset >= 0")
        window = self.store.capabilities.max_window
        if window is not None and offset + limit > window:
            raise ServiceError(ErrorKind.INVALID_REQUEST, f"offset + limit must be at most {window}")
        records = await self.store.list_records(tenant, limit, offset)
        return Page(records, limit, offset, await self.store.count(tenant))

    async def all_records(self, tenant: str | None) -> list[ImageRecord]:
        """Every record of the tenant (None: of every tenant) with its vector (for exports)."""
        return await self.store.all_records(None if tenant is None else check_tenant(tenant))

    # --- tenants (operators) -----------------------------------------------------------------------

    async def tenants(self) -> dict[str, int]:
        """Every tenant holding records, with its count, by name."""
        return dict(sorted((await self.store.tenants()).items()))

    async def count(self, tenant: str) -> int:
        return await self.store.count(check_tenant(tenant))

    async def delete_tenant(self, tenant: str) -> int:
        """Every record of the tenant deleted; how many there were. Its pending captions' inputs go first,
        each leaving the mark that keeps a worker from writing its record back, as a single delete does."""
        check_tenant(tenant)
        if self.queueing is not None:
            pending = await self.store.ids(tenant, check([FilterCondition(field="caption_state", value="pending")]))
            await asyncio.to_thread(forget_all, self.queueing.inputs, [record_key(tenant, i) for i in pending])
        return await self.store.delete_tenant(tenant)
