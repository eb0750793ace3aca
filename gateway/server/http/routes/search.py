"""/v1/search: by image, by text."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile

from ....core.filters import parse_json
from ....core.service import DEFAULT_K
from ..access import requires
from ..dependencies import Service, Tenant
from ..schemas import (
    ERRORS,
    K_DESCRIPTION,
    MIN_SCORE_IMAGE,
    MIN_SCORE_TEXT,
    QUERY_DESCRIPTION,
    SearchHit,
    SearchResponse,
    TextSearchRequest,
    TextSearchResponse,
)
from ..uploads import read_upload

router = APIRouter(prefix="/v1/search", tags=["search"])


@router.post("/image", openapi_extra=requires("search_image"), response_model=SearchResponse, responses=ERRORS,
             summary="Images most similar to an uploaded image")
async def search_by_image(service: Service, tenant: Tenant, file: Annotated[UploadFile, File()],
                          k: Annotated[int, Form(description=K_DESCRIPTION)] = DEFAULT_K,
                          filter: Annotated[str | None, Form(description="JSON list of conditions")] = None,
                          min_score: Annotated[float | None, Form(description=MIN_SCORE_IMAGE)] = None) -> SearchResponse:
    conditions = parse_json(filter)
    hits = await service.search_image(tenant, await read_upload(file, service.limits.max_upload_bytes), k, conditions,
                                      min_score)
    return SearchResponse(results=[SearchHit.of_hit(h) for h in hits])


@router.get("/text", openapi_extra=requires("search_text"), response_model=TextSearchResponse, responses=ERRORS,
            summary="Images that match a text")
async def search_text_get(service: Service, tenant: Tenant, q: Annotated[str, Query(description=QUERY_DESCRIPTION)],
                          k: Annotated[int, Query(description=K_DESCRIPTION)] = DEFAULT_K,
                          filter: Annotated[str | None, Query(description="JSON list of conditions")] = None,
                          min_score: Annotated[float | None, Query(description=MIN_SCORE_TEXT)] = None
                          ) -> TextSearchResponse:
    return TextSearchResponse.of(await service.search_text(tenant, q, k, parse_json(filter), min_score))


@router.post("/text", openapi_extra=requires("search_text"), response_model=TextSearchResponse, responses=ERRORS,
             summary="Images that match a text")
async def search_text_post(service: Service, tenant: Tenant, body: TextSearchRequest) -> TextSearchResponse:
    return TextSearchResponse.of(await service.search_text(tenant, body.query, body.k, body.filters, body.min_score))
