"""POST /v1/embeddings in OpenAI's schema, so clients written for OpenAI (its SDKs, LangChain,
LlamaIndex) get CLIP embeddings unchanged: a string is a text, a ``data:image/...;base64,`` URI is an
image; texts as text search embeds them, images as /embed-image/ does."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ....core.errors import invalid
from ..access import requires
from ..dependencies import Service
from ..schemas import ERRORS, EmbeddingFormat, encode_vector
from ..uploads import image_in_data_uri

router = APIRouter(tags=["embeddings"])


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # as OpenAI's API: an unknown field is refused, not ignored
    input: str | list[str] = Field(description='texts, and images as "data:image/...;base64,..." URIs',
                                   examples=[["a red bicycle", "data:image/png;base64,iVBORw0KGgo..."]])
    model: str | None = Field(None, description="accepted and named in the response; the gateway serves one CLIP model")
    encoding_format: EmbeddingFormat = Field("float", description="base64: little-endian float32, as OpenAI's clients decode")
    dimensions: int | None = Field(None, description="refused unless the model's own dimension")
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int = Field(description="CLIP tokens of the texts (images count none)")
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


@router.post("/v1/embeddings", openapi_extra=requires("embeddings"), response_model=EmbeddingsResponse, responses=ERRORS,
             summary="CLIP embeddings of texts and images, in OpenAI's request and response schema")
async def create_embeddings(service: Service, body: EmbeddingsRequest) -> EmbeddingsResponse:
    info = service.model_info
    if body.dimensions is not None and body.dimensions != info.embedding_dim:
        raise invalid(f"dimensions must be {info.embedding_dim}, the model's (it cannot be shortened)")
    texts = [body.input] if isinstance(body.input, str) else body.input
    images = [image_in_data_uri(text, f"input[{i}]") for i, text in enumerate(texts)]
    inputs = [text if image is None else image for text, image in zip(texts, images)]
    done = await service.embeddings(inputs)
    return EmbeddingsResponse(data=[Embedding(index=i, embedding=encode_vector(v, body.encoding_format))
                                    for i, v in enumerate(done.vectors)],
                              model=body.model or info.sources["clip_image"],
                              usage=Usage(prompt_tokens=done.text_tokens, total_tokens=done.text_tokens))
