"""What the service stores per image, how an image gets its id, and whose it is.

Every record belongs to one tenant (gateway.core.tenants). Its id is the content hash of its bytes in
every tenant, so the same bytes in two tenants are two records with one id: the pair (tenant, id), its
``key``, is what stores, locks and the caption spool hold records by."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ID_PATTERN = r"^[0-9a-f]{32}$"  # pymilvus pastes ids into an expression: only ever pass ids of this form
_ID = re.compile(ID_PATTERN)


def content_id(data: bytes) -> str:
    """The record id of an image: the first 128 bits of SHA-256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()[:32]


def is_image_id(value: str) -> bool:
    return bool(_ID.match(value))


DEFAULT_TENANT = "default"  # every record without keys, and every key bound to no other tenant
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # no ".", no "/": keys and file names stay unambiguous
_TENANT = re.compile(TENANT_PATTERN)


def is_tenant_name(value: str) -> bool:
    return bool(_TENANT.match(value))


def record_key(tenant: str, image_id: str) -> str:
    """What a record is held by: its id in the default tenant (so records and caption spools made before
    tenants keep their keys), ``<id>.<tenant>`` in any other."""
    return image_id if tenant == DEFAULT_TENANT else f"{image_id}.{tenant}"


# pending: embedded and searchable, its caption queued; done: captioned; failed: captioning gave up
# (caption_error says why); none: not captioned (captions off for it)
CaptionState = Literal["pending", "done", "failed", "none"]
CAPTION_STATES: tuple[CaptionState, ...] = ("pending", "done", "failed", "none")


@dataclass(frozen=True)
class CaptionJob:
    """The caption queue's bookkeeping on a record (gateway.core.caption_queue): attempts made, the
    worker holding it and until when (Unix ms), and the earliest next attempt after a failure."""

    attempts: int = 0
    lease_owner: str = ""
    lease_until_ms: int = 0
    retry_at_ms: int = 0


@dataclass
class ImageRecord:
    id: str
    caption: str
    source: str
    metadata: dict
    created_at: int
    phash: str
    vector: np.ndarray | None = field(default=None, repr=False)
    thumbnail: str = field(default="", repr=False)  # base64 JPEG, at most THUMBNAIL_SIZE px
    caption_state: CaptionState = "done"
    caption_error: str = ""  # why captioning failed (caption_state "failed")
    job: CaptionJob = field(default_factory=CaptionJob, repr=False)
    tenant: str = DEFAULT_TENANT

    @property
    def key(self) -> str:
        return record_key(self.tenant, self.id)


@dataclass
class Upload:
    """One image to index: its bytes, the name it is stored under, the metadata stored with it."""

    name: str
    data: bytes
    metadata: dict = field(default_factory=dict)


@dataclass
class Indexed:
    record: ImageRecord
    created: bool  # False: the same bytes were already stored (nothing was written)


@dataclass
class Hit:
    record: ImageRecord
    score: float  # cosine similarity for image search


@dataclass
class TextHit(Hit):
    """``score``: clip_score + caption weight * caption_match (what min_score cuts)."""

    clip_score: float  # cosine similarity of the text and image embeddings
    caption_match: float  # share of the query's words found in the caption, 0..1
    keyword_score: float = 0.0  # BM25 of the caption for the query (0: not a keyword hit, or keyword search off)
    rank_score: float = 0.0  # the order of results: reciprocal rank fusion with keyword search, else score


@dataclass
class Embedded:
    caption: str
    vector: np.ndarray


@dataclass
class Embeddings:
    vectors: np.ndarray  # (inputs, dim) float32, L2-normalised
    text_tokens: int  # tokens the texts took (what OpenAI-style usage reports)


@dataclass
class Page:
    records: list[ImageRecord]
    limit: int
    offset: int
    total: int
