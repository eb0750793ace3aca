"""The two things the service needs from outside: something that runs the models, and a vector store.
Implementations live in gateway.backends (the in-memory store among them, for fast tests)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..runtime.preprocess import PixelSpec
from ..runtime.text import TextSpec
from .filters import Condition
from .records import ImageRecord


@dataclass(frozen=True)
class EmbeddingModel:
    """Which checkpoint made a collection's vectors: its fingerprint (export.sources: a hub commit, or the
    hashes of a folder's files) decides, the source names it in messages. Vectors of two checkpoints live
    in two embedding spaces: one collection holds one."""

    fingerprint: str
    source: str


@dataclass(frozen=True)
class ModelInfo:
    """What the models take and give (read from the files the export wrote)."""

    clip_pixels: PixelSpec
    blip_pixels: PixelSpec | None  # None: captions are off
    embedding_dim: int
    text: TextSpec
    sources: dict[str, str]  # model -> the checkpoint it was exported from
    precisions: dict[str, str] = field(default_factory=dict)  # model -> fp32, fp16 or int8 (as exported)
    embedding_model: EmbeddingModel | None = None  # clip_image's checkpoint (None: not known)
    family: str = "clip"  # the embedding towers' family: clip or siglip (SigLIP and SigLIP 2)
    # SigLIP: sigmoid(scale * cosine + bias) is the chance a text matches an image (None: CLIP, softmax-trained)
    match_logit: tuple[float, float] | None = None

    def scores(self) -> str:
        """What a search score means, for operators."""
        said = f"{self.family}: scores are cosines"
        if self.match_logit is None:
            return said
        scale, bias = self.match_logit
        sign = "-" if bias < 0 else "+"
        return (f"{said}; a text matches an image with probability sigmoid({scale:.4g} * cosine {sign} {abs(bias):.4g})"
                f" (even odds at cosine {-bias / scale:.3f})")

    def precision(self) -> str:
        """The models' precisions for operators: "fp32", or each model's where they differ."""
        kinds = set(self.precisions.values())
        if len(kinds) <= 1:
            return next(iter(kinds), "fp32")
        return ", ".join(f"{model} {kind}" for model, kind in self.precisions.items())

    def mismatched_sources(self, clip_model: str, blip_model: str, text_model: str | None = None) -> list[str]:
        wanted = {"clip_image": clip_model, "clip_text": text_model or clip_model, "blip_caption": blip_model}
        return [f"{model} was exported from {source}, not {wanted[model]}"
                for model, source in self.sources.items() if source != wanted[model]]


class Inference(Protocol):
    """Runs the models. Arrays carry a leading batch axis; failures are ServiceErrors
    (UNAVAILABLE, TIMEOUT, INTERNAL)."""

    info: ModelInfo

    async def embed_images(self, pixels: np.ndarray) -> np.ndarray: ...

    async def embed_texts(self, texts: list[str]) -> np.ndarray: ...

    def count_tokens(self, texts: list[str]) -> int: ...

    async def caption(self, pixels: np.ndarray) -> list[str]: ...

    async def check_ready(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class DecodedImage:
    """What the inference tier made of an encoded image (gateway.runtime.tier_decode): uint8 (H, W, 3)."""

    clip_pixels: np.ndarray
    blip_pixels: np.ndarray | None  # when asked for
    record_pixels: np.ndarray | None  # when asked for: the image reduced for the hash and the thumbnail


class TierDecoding(Protocol):
    """Decoding on the inference tier (GATEWAY_DECODE=inference): the gateway sends a JPEG's bytes
    (preprocess.Header.plain_jpeg). A file the tier cannot decode is INVALID_ARGUMENT invalid_image;
    other failures as Inference's."""

    async def decode_encoded(self, data: bytes, blip: bool, record: bool) -> DecodedImage: ...

    async def embed_encoded(self, data: bytes) -> np.ndarray:
        """The image's CLIP embedding (D,), decoded and embedded in one call."""
        ...


@dataclass(frozen=True)
class Feature:
    """Whether a store can do something, and why not where it cannot."""

    on: bool
    reason: str = ""

    def describe(self) -> str:
        return "on" if self.on else f"off: {self.reason}"


@dataclass(frozen=True)
class CaptionQueueStats:
    pending: int
    failed: int
    oldest_pending_at: int | None  # created_at (Unix s) of the oldest pending record, among at most max_window read


@dataclass(frozen=True)
class StoreCapabilities:
    """What differs between stores (Milvus Lite, a 2.3 or 2.5 server, the in-memory store), as the
    service needs to know it. Read after ``start``: a store learns some of it from its server."""

    keyword_search: Feature  # search_captions works (Milvus 2.5+ and Lite: BM25 over the captions)
    max_window: int | None  # the largest offset + limit list_records takes (None: no limit)
    vector_search: str  # how vectors are searched, for operators ("exact (FLAT)", "approximate (HNSW, ef 512)")
    tenants: str = "filtered per tenant"  # how a tenant's records are kept apart, for operators
    declared_fields: str = "evaluated per record"  # how declared filter fields are searched, for operators


class VectorStore(Protocol):
    """One collection of image records, searched by cosine similarity, shared by tenants: every read and
    delete names the tenant it acts for and sees only that tenant's records (a record of another tenant
    is absent); records carry their tenant into upsert. ``conditions`` are checked filters
    (gateway.core.filters), ANDed; each store evaluates them with the meaning stated there. Ids are
    checked by the service. Writes report their consistency token and reads honour the call's
    (gateway.core.consistency) where the store has timestamps. Failures are ServiceErrors (UNAVAILABLE,
    TIMEOUT, MISCONFIGURED)."""

    capabilities: StoreCapabilities

    async def start(self) -> None: ...

    async def upsert(self, records: list[ImageRecord], new: bool = False) -> None:
        """Each record written, replacing the tenant's record of its id; ``new``: the caller knows none of
        them is stored (a store may write them faster)."""
        ...

    async def get(self, tenant: str, ids: list[str], with_vectors: bool = False, strong: bool = False
                  ) -> list[ImageRecord]:
        """The tenant's records of those ids that exist; ``strong``: seeing every acknowledged write,
        whichever client made it (slower on a server; reads otherwise see this client's own writes and
        those up to the call's consistency token, gateway.core.consistency)."""
        ...

    async def thumbnail(self, tenant: str, record_id: str, strong: bool = False) -> str | None: ...

    async def delete(self, tenant: str, record_id: str) -> None: ...

    async def list_records(self, tenant: str, limit: int, offset: int) -> list[ImageRecord]:
        """The tenant's records in id order (offset + limit at most capabilities.max_window)."""
        ...

    async def all_records(self, tenant: str | None) -> list[ImageRecord]:
        """Every record of the tenant (None: of every tenant) with its vector (exports)."""
        ...

    async def count(self, tenant: str | None) -> int:
        """The tenant's records (None: every tenant's)."""
        ...

    async def search(self, tenant: str | None, vectors: np.ndarray, k: int, conditions: Sequence[Condition] = ()
                     ) -> list[list[tuple[ImageRecord, float]]]:
        """Per query vector, the tenant's k nearest records meeting the conditions, with their cosines,
        best first (tenant None: across every tenant; operators' tools such as bench/vector_tier.py)."""
        ...

    async def search_captions(self, tenant: str, text: str, k: int, conditions: Sequence[Condition] = ()
                              ) -> list[tuple[ImageRecord, float]]:
        """The tenant's k records whose captions best match the text's words (BM25 or the store's own
        measure, higher is better), with their vectors; only where capabilities.keyword_search is on."""
        ...

    async def ids(self, tenant: str, conditions: Sequence[Condition] = ()) -> list[str]:
        """The ids of the tenant's records meeting the conditions (every record read: a scan)."""
        ...

    async def tenants(self) -> dict[str, int]:
        """Every tenant holding records, with its count (a scan of the tenant field)."""
        ...

    async def delete_tenant(self, tenant: str) -> int:
        """Every record of the tenant deleted; how many there were."""
        ...

    async def captions_due(self, limit: int, now_ms: int) -> list[ImageRecord]:
        """Up to ``limit`` records of any tenant whose caption is pending, whose lease has expired and whose
        retry time has come at ``now_ms``: whole records (vector and thumbnail too: the queue writes them
        back), read strongly."""
        ...

    async def caption_queue(self) -> CaptionQueueStats: ...

    async def migrate(self) -> int | None:
        """Instead of ``start``: connect and bring a collection made by an older version to the current
        schema, finishing an interrupted migration (an admin operation; writers paused). The records
        the collection holds afterwards, None when there was nothing to do."""
        ...

    async def check_ready(self) -> None: ...

    async def close(self) -> None: ...


class CaptionInputs(Protocol):
    """Where BLIP's input waits for a pending caption (a folder shared by gateways and captioners), and
    the marks deletes leave so that no worker writes a deleted record back (gateway.core.caption_queue),
    by record key (gateway.core.records.record_key). Blocking calls (run them in a thread)."""

    def put(self, key: str, pixels: np.ndarray) -> None: ...

    def get(self, key: str) -> np.ndarray | None: ...

    def discard(self, key: str) -> None:
        """The input removed once its caption is written (or given up)."""
        ...

    def forget(self, key: str) -> None:
        """A delete: the input removed and a mark left that the record was deleted."""
        ...

    def was_deleted(self, key: str) -> bool: ...

    def sweep(self, older_than_s: float) -> int:
        """Marks older than that removed; the number removed."""
        ...
