"""/v1/images: index, read, list, delete, thumbnails."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from ....core.filters import parse_json
from ....core.metadata import parse_metadata
from ....core.records import Upload
from ....core.service import DEFAULT_K, DEFAULT_PAGE_SIZE
from ..access import requires
from ..dependencies import Service, Tenant
from ..schemas import (
    ERRORS,
    K_DESCRIPTION,
    LIMIT_DESCRIPTION,
    MIN_SCORE_IMAGE,
    NOT_FOUND,
    EmbeddingFormat,
    ImageId,
    ImageList,
    ImageOut,
    IndexedImage,
    IndexResponse,
    SearchHit,
    SearchResponse,
)
from ..uploads import read_upload

router = APIRouter(prefix="/v1/images", tags=["images"])


@router.post("", openapi_extra=requires("index_images"), response_model=IndexResponse, responses=ERRORS,
             summary="Index images (idempotent: the same bytes give the same id and no second record)")
async def index_images(service: Service, tenant: Tenant,
                       files: Annotated[list[UploadFile], File(description="one or more images")],
                       metadata: Annotated[str | None, Form(description="JSON object stored with every image",
                                                            examples=['{"album": "holiday"}'])] = None,
                       captions: Annotated[bool | None, Form(
                           description="caption with BLIP (default: the gateway's GATEWAY_CAPTIONS); false skips it")] = None,
                       wait_for_caption: Annotated[bool, Form(
                           description="answer once captioned, the caption in the reply (default: once embedded and"
                           ' stored, searchable at once, caption_state "pending" until the caption queue has it)')] = False
                       ) -> IndexResponse:
    meta = parse_metadata(metadata)
    uploads = [Upload(f.filename or "", await read_upload(f, service.limits.max_upload_bytes), meta) for f in files]
    done = await service.index_images(tenant, uploads, captions, wait_for_caption)
    return IndexResponse(images=[IndexedImage.of_indexed(d) for d in done])


@router.get("/{image_id}", openapi_extra=requires("get"), response_model=ImageOut, responses=ERRORS | NOT_FOUND,
            summary="One indexed image")
async def get_image(service: Service, tenant: Tenant, image_id: ImageId, include_embedding: bool = False,
                    embedding_format: EmbeddingFormat = "float") -> ImageOut:
    record = await service.get(tenant, image_id, with_vector=include_embedding)
    return ImageOut.of(record, embedding_format if include_embedding else None)


@router.get("/{image_id}/thumbnail", openapi_extra=requires("thumbnail"), response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "a JPEG of at most 192x192 px"}} | NOT_FOUND
            | {c: ERRORS[c] for c in (401, 403, 422, 429, 503)}, summary="The thumbnail stored at index time")
async def get_thumbnail(service: Service, tenant: Tenant, image_id: ImageId) -> Response:
    # private: the same URL is another tenant's image (or none) under another key; shared caches must not keep it
    return Response(await service.thumbnail(tenant, image_id), media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=86400", "Vary": "Authorization, X-API-Key, X-Tenant"})


@router.get("/{image_id}/similar", openapi_extra=requires("similar"), response_model=SearchResponse,
            responses=ERRORS | NOT_FOUND, summary="Stored images most like a stored one (its own vector: no upload, no model)")
async def similar_images(service: Service, tenant: Tenant, image_id: ImageId,
                         k: Annotated[int, Query(description=K_DESCRIPTION)] = DEFAULT_K,
                         filter: Annotated[str | None, Query(description="JSON list of conditions")] = None,
                         min_score: Annotated[float | None, Query(description=MIN_SCORE_IMAGE)] = None) -> SearchResponse:
    hits = await service.similar(tenant, image_id, k, parse_json(filter), min_score)
    return SearchResponse(results=[SearchHit.of_hit(h) for h in hits])


@router.delete("/{image_id}", openapi_extra=requires("delete"), status_code=204, responses=ERRORS | NOT_FOUND,
               summary="Delete an indexed image")
async def delete_image(service: Service, tenant: Tenant, image_id: ImageId) -> Response:
    await service.delete(tenant, image_id)
    return Response(status_code=204)


@router.get("", openapi_extra=requires("list_images"), response_model=ImageList, responses=ERRORS,
            summary="List indexed images, in id order")
async def list_images(service: Service, tenant: Tenant,
                      limit: Annotated[int, Query(description=LIMIT_DESCRIPTION)] = DEFAULT_PAGE_SIZE,
                      offset: Annotated[int, Query(description="records to skip, >= 0")] = 0) -> ImageList:
    page = await service.list_images(tenant, limit, offset)
    return ImageList(images=[ImageOut.of(r) for r in page.records], limit=page.limit, offset=page.offset, total=page.total)
