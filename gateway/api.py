"""HTTP routes: parse and check the request, call gateway.service, shape the response."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path as FilePath
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from . import service
from .access import requires
from .filters import Condition, parse_json, render
from .errors import BadRequest, ErrorBody, InvalidParameters, NotFound, PayloadTooLarge, UnsupportedMediaType
from .store import ID_PATTERN, ImageRecord

router = APIRouter()
PAGE = FilePath(__file__).with_name("static") / "index.html"
ImageId = Annotated[str, Path(pattern=ID_PATTERN, description="32 hex digits", examples=["9f2c1e0d4b7a8c6e5f3a2b1c0d9e8f7a"])]
EmbeddingFormat = Literal["float", "base64"]
ACCEPTED_TYPES = ("image/", "application/octet-stream")
ERRORS = {code: {"model": ErrorBody, "description": text} for code, text in (
    (400, "undecodable or truncated image, empty query"), (401, "no API key, or an unknown one"),
    (403, "the API key lacks the route's scope"), (413, "upload or image too large"),
    (415, "not an image content type"), (422, "invalid parameters or filter"),
    (503, "Triton or Milvus unavailable (Retry-After set)"), (504, "Triton or Milvus deadline exceeded"),
    (429, "rate limit exceeded (Retry-After set)"))}


def encode_vector(vector: np.ndarray, fmt: EmbeddingFormat) -> list[float] | str:
    vector = np.asarray(vector, np.float32)
    return base64.b64encode(vector.tobytes()).decode() if fmt == "base64" else vector.tolist()


class EmbedImageResponse(BaseModel):
    description: str = Field(description="BLIP caption", examples=["a man in a red jacket standing on a bridge"])
    embedding_vector: list[float] | str = Field(description="CLIP embedding, L2-normalised (base64 float32 on request)")


class ImageOut(BaseModel):
    id: str = Field(description="first 128 bits of SHA-256 of the image bytes, hex", examples=["9f2c1e0d4b7a8c6e5f3a2b1c0d9e8f7a"])
    caption: str
    source: str = Field(description="file name given at upload")
    metadata: dict
    created_at: int = Field(description="unix seconds")
    phash: str = Field(description="perceptual hash (64-bit, hex): equal or close hashes mean near-duplicates")
    embedding: list[float] | str | None = None

    @classmethod
    def of(cls, record: ImageRecord, fmt: EmbeddingFormat | None = None) -> "ImageOut":
        embedding = encode_vector(record.vector, fmt) if fmt and record.vector is not None else None
        return cls(id=record.id, caption=record.caption, source=record.source, metadata=record.metadata,
                   created_at=record.created_at, phash=record.phash, embedding=embedding)


class IndexedImage(ImageOut):
    created: bool = Field(description="false when the same bytes were already indexed (nothing was written)")


class IndexResponse(BaseModel):
    images: list[IndexedImage]


class ImageList(BaseModel):
    images: list[ImageOut]
    limit: int
    offset: int
    total: int


class SearchHit(ImageOut):
    score: float = Field(description="ranking score (CLIP cosine; text search adds the caption match)")


class TextSearchHit(SearchHit):
    clip_score: float
    caption_match: float = Field(description="share of the query's words found in the caption, 0..1")


class SearchResponse(BaseModel):
    results: list[SearchHit]


class TextSearchResponse(BaseModel):
    results: list[TextSearchHit]


class TextSearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=1000, examples=["man in red jacket"])
    k: int = Field(10, ge=1, le=1000)
    filters: list[Condition] = Field(default_factory=list)


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    content_type = (upload.content_type or "application/octet-stream").lower()
    if not content_type.startswith(ACCEPTED_TYPES):
        raise UnsupportedMediaType(f"{upload.filename or 'upload'}: {content_type} is not an image type")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"{upload.filename or 'upload'} is larger than {limit:,} bytes")
    return data


MAX_METADATA_CHARS, MAX_METADATA_DEPTH = 16_384, 8


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _check_json_value(value, level: int = 1) -> None:
    if level > MAX_METADATA_DEPTH:
        raise BadRequest(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for child in value:
            _check_json_value(child, level + 1)
    elif isinstance(value, float) and not math.isfinite(value) or isinstance(value, int) and abs(value) >= 2 ** 63:
        raise BadRequest("metadata numbers must be finite and integers must fit in 64 bits")


def parse_metadata(text: str | None) -> dict:
    """The metadata form field: a JSON object Milvus can store and filter on (finite numbers,
    64-bit integers, at most MAX_METADATA_CHARS characters and MAX_METADATA_DEPTH levels)."""
    if not text:
        return {}
    if len(text) > MAX_METADATA_CHARS:
        raise BadRequest(f"metadata is longer than {MAX_METADATA_CHARS:,} characters")
    try:
        meta = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise BadRequest("metadata must be a JSON object")
    _check_json_value(meta)
    return meta


def check_k(request: Request, k: int) -> int:
    limit = request.app.state.settings.max_k
    if not 1 <= k <= limit:
        raise BadRequest(f"k must be in 1..{limit}")
    return k


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def search_page() -> HTMLResponse:
    """The search page: text or image queries, results with thumbnails, captions and scores; uploads."""
    return HTMLResponse(PAGE.read_text())


@router.post("/embed-image/", openapi_extra=requires("search"), response_model=EmbedImageResponse, responses=ERRORS, tags=["compatible"],
             summary="Caption and embed one image (the original service's endpoint)")
async def embed_image(request: Request, file: Annotated[UploadFile, File(description="the image")],
                      embedding_format: EmbeddingFormat = "float") -> EmbedImageResponse:
    state = request.app.state
    data = await read_upload(file, state.settings.max_upload_bytes)
    (prepared,) = await service.prepare_all([data], state.inference, state.settings.max_pixels,
                                            blip=state.settings.captions)
    vectors, captions = await service.embed_and_caption([prepared], state.inference, state.settings.captions)
    return EmbedImageResponse(description=captions[0], embedding_vector=encode_vector(vectors[0], embedding_format))


@router.post("/v1/images", openapi_extra=requires("write"), response_model=IndexResponse, responses=ERRORS, tags=["images"],
             summary="Index images (idempotent: the same bytes give the same id and no second record)")
async def index_images(request: Request, files: Annotated[list[UploadFile], File(description="one or more images")],
                       metadata: Annotated[str | None, Form(description="JSON object stored with every image",
                                                            examples=['{"album": "holiday"}'])] = None) -> IndexResponse:
    state = request.app.state
    if len(files) > state.settings.max_files_per_request:
        raise PayloadTooLarge(f"at most {state.settings.max_files_per_request} files per request")
    meta = parse_metadata(metadata)
    uploads = [(f.filename or "", await read_upload(f, state.settings.max_upload_bytes)) for f in files]
    done = await service.index_images(uploads, meta, state.inference, state.store, state.settings.max_pixels,
                                      state.settings.captions)
    return IndexResponse(images=[IndexedImage(**ImageOut.of(d.record).model_dump(), created=d.created) for d in done])


@router.get("/v1/images/{image_id}", openapi_extra=requires("search"), response_model=ImageOut, responses=ERRORS | {404: {"model": ErrorBody}},
            tags=["images"], summary="One indexed image")
async def get_image(request: Request, image_id: ImageId, include_embedding: bool = False,
                    embedding_format: EmbeddingFormat = "float") -> ImageOut:
    records = await request.app.state.store.get([image_id], with_vectors=include_embedding)
    if not records:
        raise NotFound(f"no image with id {image_id!r}")
    return ImageOut.of(records[0], embedding_format if include_embedding else None)


@router.get("/v1/images/{image_id}/thumbnail", openapi_extra=requires("search"), response_class=Response, tags=["images"],
            responses={200: {"content": {"image/jpeg": {}}, "description": "a JPEG of at most 192x192 px"},
                       404: {"model": ErrorBody}} | {c: ERRORS[c] for c in (401, 403, 422, 429, 503)},
            summary="The thumbnail stored at index time")
async def get_thumbnail(request: Request, image_id: ImageId) -> Response:
    encoded = await request.app.state.store.thumbnail(image_id)
    if not encoded:
        raise NotFound(f"no thumbnail for image {image_id!r}")
    return Response(base64.b64decode(encoded), media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})


@router.delete("/v1/images/{image_id}", openapi_extra=requires("admin"), status_code=204, responses=ERRORS | {404: {"model": ErrorBody}},
               tags=["images"], summary="Delete an indexed image")
async def delete_image(request: Request, image_id: ImageId) -> Response:
    if not await request.app.state.store.delete(image_id):
        raise NotFound(f"no image with id {image_id!r}")
    return Response(status_code=204)


MAX_LIST_WINDOW = 16384  # Milvus refuses queries with offset + limit above this


@router.get("/v1/images", openapi_extra=requires("search"), response_model=ImageList, responses=ERRORS, tags=["images"],
            summary=f"List indexed images (offset + limit at most {MAX_LIST_WINDOW}, Milvus's query window)")
async def list_images(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                      offset: Annotated[int, Query(ge=0, le=MAX_LIST_WINDOW - 1)] = 0) -> ImageList:
    if offset + limit > MAX_LIST_WINDOW:
        raise InvalidParameters(f"offset + limit must be at most {MAX_LIST_WINDOW}")
    store = request.app.state.store
    records = await store.list(limit, offset)
    return ImageList(images=[ImageOut.of(r) for r in records], limit=limit, offset=offset, total=await store.count())


def hit(record: ImageRecord, score: float) -> SearchHit:
    return SearchHit(**ImageOut.of(record).model_dump(), score=score)


@router.post("/v1/search/image", openapi_extra=requires("search"), response_model=SearchResponse, responses=ERRORS, tags=["search"],
             summary="Images most similar to an uploaded image")
async def search_by_image(request: Request, file: Annotated[UploadFile, File()], k: Annotated[int, Form()] = 10,
                          filter: Annotated[str | None, Form(description="JSON list of conditions")] = None) -> SearchResponse:
    state = request.app.state
    expression = render(parse_json(filter))
    data = await read_upload(file, state.settings.max_upload_bytes)
    hits = await service.search_image(data, check_k(request, k), expression, state.inference, state.store,
                                      state.settings.max_pixels)
    return SearchResponse(results=[hit(r, s) for r, s in hits])


async def _text_search(request: Request, query: str, k: int, conditions: list) -> TextSearchResponse:
    state = request.app.state
    hits = await service.search_text(query, check_k(request, k), render(conditions), state.inference,
                                     state.store, state.settings.caption_weight, state.settings.max_k)
    return TextSearchResponse(results=[TextSearchHit(**hit(h.record, h.score).model_dump(), clip_score=h.clip_score,
                                                     caption_match=h.caption_match) for h in hits])


@router.get("/v1/search/text", openapi_extra=requires("search"), response_model=TextSearchResponse, responses=ERRORS, tags=["search"],
            summary="Images that match a text")
async def search_text_get(request: Request, q: Annotated[str, Query(min_length=1, max_length=1000)], k: int = 10,
                          filter: Annotated[str | None, Query(description="JSON list of conditions")] = None
                          ) -> TextSearchResponse:
    return await _text_search(request, q, k, parse_json(filter))


@router.post("/v1/search/text", openapi_extra=requires("search"), response_model=TextSearchResponse, responses=ERRORS, tags=["search"],
             summary="Images that match a text")
async def search_text_post(request: Request, body: TextSearchRequest) -> TextSearchResponse:
    return await _text_search(request, body.query, body.k, body.filters)
