"""The original one-file service's endpoint, kept compatible."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from ..access import requires
from ..dependencies import Service
from ..schemas import ERRORS, EmbeddingFormat, EmbedImageResponse, encode_vector
from ..uploads import read_upload

router = APIRouter(tags=["compatible"])


@router.post("/embed-image/", openapi_extra=requires("embed_image"), response_model=EmbedImageResponse, responses=ERRORS,
             summary="Caption and embed one image (the original service's endpoint)")
async def embed_image(service: Service, file: Annotated[UploadFile, File(description="the image")],
                      embedding_format: EmbeddingFormat = "float") -> EmbedImageResponse:
    embedded = await service.embed_image(await read_upload(file, service.limits.max_upload_bytes))
    return EmbedImageResponse(description=embedded.caption, embedding_vector=encode_vector(embedded.vector, embedding_format))
