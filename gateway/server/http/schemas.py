"""The HTTP API's request and response bodies (pydantic models: OpenAPI schemas and serialisation)."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from ...core.filters import FilterCondition
from ...core.records import ID_PATTERN, TENANT_PATTERN, CaptionState, Hit, ImageRecord, Indexed, TextHit
from ...core.service import DEFAULT_K
from .errors import ErrorBody

ImageId = Annotated[str, Path(pattern=ID_PATTERN, description="32 hex digits", examples=["9f2c1e0d4b7a8c6e5f3a2b1c0d9e8f7a"])]
TenantName = Annotated[str, Path(description=f"a tenant name: {TENANT_PATTERN} (422 invalid_tenant otherwise)",
                                 examples=["acme"])]
EmbeddingFormat = Literal["float", "base64"]
ERRORS: dict[int | str, dict] = {code: {"model": ErrorBody, "description": text} for code, text in (
    (400, "undecodable or truncated image, empty query, k out of range, bad metadata"),
    (401, "no API key, or an unknown one"), (403, "the API key lacks the route's scope, or names another tenant"),
    (413, "upload or image too large"), (415, "not an image content type"), (422, "invalid parameters or filter"),
    (503, "Triton or Milvus unavailable (Retry-After set)"), (504, "Triton or Milvus deadline exceeded"),
    (429, "rate limit exceeded (Retry-After set)"))}
NOT_FOUND: dict[int | str, dict] = {404: {"model": ErrorBody, "description": "no such image"}}
K_DESCRIPTION = "results to return, 1..GATEWAY_MAX_K (default 1000; 400 outside)"
QUERY_DESCRIPTION = "not empty, at most GATEWAY_MAX_QUERY_CHARS (default 1000) characters (400 otherwise)"
LIMIT_DESCRIPTION = ("page size, 1..GATEWAY_MAX_LIST_LIMIT (default 1000); offset + limit at most the store's window"
                     " (16,384 on Milvus)")
MIN_SCORE_IMAGE = "only hits whose CLIP cosine (-1..1) is at least this; fewer than k are returned then"
MIN_SCORE_TEXT = "only hits whose fused score (CLIP cosine + caption weight x caption match) is at least this"


def encode_vector(vector: np.ndarray, fmt: EmbeddingFormat) -> list[float] | str:
    """A list of floats, or base64 of little-endian float32 (what OpenAI's clients decode)."""
    vector = np.asarray(vector, "<f4")
    return base64.b64encode(vector.tobytes()).decode() if fmt == "base64" else vector.tolist()


class EmbedImageResponse(BaseModel):
    description: str = Field(description="BLIP caption", examples=["a man in a red jacket standing on a bridge"])
    embedding_vector: list[float] | str = Field(description="CLIP embedding, L2-normalised (base64 float32 on request)")


class ImageOut(BaseModel):
    id: str = Field(description="first 128 bits of SHA-256 of the image bytes, hex",
                    examples=["9f2c1e0d4b7a8c6e5f3a2b1c0d9e8f7a"])
    caption: str = Field(description='BLIP caption ("" until caption_state is "done")')
    caption_state: CaptionState = Field(description='"pending": embedded and searchable, caption queued; "done";'
                                        ' "failed" (caption_error says why); "none": indexed without captions')
    caption_error: str = Field("", description='why captioning failed, or why the last attempt did (still "pending")')
    source: str = Field(description="file name given at upload")
    metadata: dict
    created_at: int = Field(description="unix seconds")
    phash: str = Field(description="perceptual hash (64-bit, hex): equal or close hashes mean near-duplicates")
    embedding: list[float] | str | None = None

    @classmethod
    def of(cls, record: ImageRecord, fmt: EmbeddingFormat | None = None) -> ImageOut:
        embedding = encode_vector(record.vector, fmt) if fmt and record.vector is not None else None
        return cls(**fields_of(record), embedding=embedding)


def fields_of(record: ImageRecord) -> dict:
    """ImageOut's fields of a record (every response model that shows a record starts from these)."""
    return {"id": record.id, "caption": record.caption, "caption_state": record.caption_state,
            "caption_error": record.caption_error, "source": record.source, "metadata": record.metadata,
            "created_at": record.created_at, "phash": record.phash}


class IndexedImage(ImageOut):
    created: bool = Field(description="false when the same bytes were already indexed (nothing was written)")

    @classmethod
    def of_indexed(cls, done: Indexed) -> IndexedImage:
        return cls(**fields_of(done.record), created=done.created)


class IndexResponse(BaseModel):
    images: list[IndexedImage]


class ImageList(BaseModel):
    images: list[ImageOut]
    limit: int
    offset: int
    total: int


class SearchHit(ImageOut):
    score: float = Field(description="ranking score (CLIP cosine; text search adds the caption match)")

    @classmethod
    def of_hit(cls, hit: Hit) -> SearchHit:
        return cls(**fields_of(hit.record), score=hit.score)


class TextSearchHit(SearchHit):
    score: float = Field(description="clip_score + GATEWAY_CAPTION_WEIGHT x caption_match (what min_score cuts)")
    clip_score: float = Field(description="cosine similarity of the text and image embeddings")
    caption_match: float = Field(description="share of the query's words found in the caption, 0..1")
    keyword_score: float = Field(description="BM25 of the caption for the query; 0 when not a keyword hit or keyword"
                                 " search is off (GET /readyz: features.keyword_search)")
    rank_score: float = Field(description="the order of results: reciprocal rank fusion of the CLIP and keyword"
                              " rankings with keyword search, else equal to score")

    @classmethod
    def of_text_hit(cls, hit: TextHit) -> TextSearchHit:
        return cls(**fields_of(hit.record), score=hit.score, clip_score=hit.clip_score, caption_match=hit.caption_match,
                   keyword_score=hit.keyword_score, rank_score=hit.rank_score)


class SearchResponse(BaseModel):
    results: list[SearchHit]


class TextSearchResponse(BaseModel):
    results: list[TextSearchHit]

    @classmethod
    def of(cls, hits: list[TextHit]) -> TextSearchResponse:
        return cls(results=[TextSearchHit.of_text_hit(h) for h in hits])


class TextSearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is refused, naming the accepted ones
    query: str = Field(examples=["man in red jacket"], description=QUERY_DESCRIPTION)
    k: int = Field(DEFAULT_K, description=K_DESCRIPTION)
    filters: list[FilterCondition] = Field(default_factory=list)
    min_score: float | None = Field(None, description="only hits whose score (CLIP cosine + caption weight x caption"
                                    " match) is at least this")


class TenantCount(BaseModel):
    tenant: str
    images: int = Field(description="the tenant's records")


class TenantList(BaseModel):
    tenants: list[TenantCount] = Field(description="every tenant holding records, by name")


class TenantDeleted(BaseModel):
    tenant: str
    deleted: int = Field(description="the records deleted")


class ReadyResponse(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]
    features: dict[str, str] = Field(description='keyword_search: "on", or "off: <why>"; vector_search: exact or'
                                     ' approximate, and how; captions: "off: <why>", or the queue ("queued: 3 pending,'
                                     ' oldest 12 s, 0 failed; a worker in this gateway")')
