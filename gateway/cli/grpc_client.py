"""The Client interface (gateway.cli.clients) over a running gateway's gRPC API (``--url
grpc://host:50051``): batches go as one client stream each, one message per image."""

from __future__ import annotations

import json

import grpc
import numpy as np

from ..api import image_search_pb2 as pb
from ..api import image_search_pb2_grpc as pb_grpc
from ..api.structs import to_python, value_of
from ..core.errors import ErrorKind, ServiceError
from ..core.filters import FilterCondition
from ..core.records import Hit, ImageRecord, Indexed, TextHit

# what a gateway's status code says about the failure, for callers that decide by kind
KIND_OF_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorKind.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND: ErrorKind.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorKind.TOO_LARGE, grpc.StatusCode.UNAUTHENTICATED: ErrorKind.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: ErrorKind.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE: ErrorKind.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorKind.TIMEOUT,
}
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
TIMEOUT_S = 600


def record_of(image: pb.Image) -> ImageRecord:
    vector = np.asarray(image.embedding, np.float32) if len(image.embedding) else None
    state = image.caption_state or ("done" if image.caption else "none")  # (a gateway from before the caption queue)
    return ImageRecord(image.id, image.caption, image.source, to_python(image.metadata), image.created_at, image.phash,
                       vector, caption_state=state, caption_error=image.caption_error)  # type: ignore[arg-type]


def condition_of(condition: FilterCondition) -> pb.Condition:
    return pb.Condition(field=condition.field, op=condition.op, value=value_of(condition.value))


class GrpcClient:
    def __init__(self, target: str, api_key: str | None = None, tenant: str | None = None):
        self.target = target
        self.channel = grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                                                                  ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
        self.stub = pb_grpc.ImageSearchStub(self.channel)
        self.metadata = ((("x-api-key", api_key),) if api_key else ()) + ((("x-tenant", tenant),) if tenant else ())
        self.token: str | None = None  # the latest write's consistency token: later reads see that write

    async def _call(self, method, request, missing_ok: bool = False):
        metadata = self.metadata + ((("x-consistency-token", self.token),) if self.token else ())
        try:
            call = method(request, metadata=metadata, timeout=TIMEOUT_S)
            reply = await call
            self.token = dict(await call.trailing_metadata() or ()).get("x-consistency-token", self.token)
            return reply
        except grpc.aio.AioRpcError as exc:
            if missing_ok and exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            code = dict(exc.trailing_metadata() or ()).get("error-code")
            kind = ErrorKind.RATE_LIMITED if code == "rate_limited" else KIND_OF_CODE.get(exc.code(), ErrorKind.INTERNAL)
            message = exc.details() or exc.code().name
            if exc.code() == grpc.StatusCode.UNAVAILABLE and code is None:
                message = f"the gateway at {self.target} cannot be reached: {message}"
            raise ServiceError(kind, message, code if isinstance(code, str) else None) from exc

    async def exists(self, image_id: str) -> bool:
        return await self._call(self.stub.GetImage, pb.GetImageRequest(id=image_id), missing_ok=True) is not None

    async def index(self, files: list[tuple[str, bytes]], metadata: dict, captions: bool | None,
                    wait_for_caption: bool = False) -> list[Indexed]:
        text = json.dumps(metadata)
        messages = [pb.IndexImagesRequest(image=data, name=name, metadata_json=text) for name, data in files]
        if captions is not None and messages:
            messages[0].captions = captions
        if messages:
            messages[0].wait_for_caption = wait_for_caption
        reply = await self._call(self.stub.IndexImages, iter(messages))
        return [Indexed(record_of(done.image), done.created) for done in reply.images]

    async def search_image(self, data: bytes, k: int, conditions: list[FilterCondition],
                           min_score: float | None = None) -> list[Hit]:
        request = pb.SearchImageRequest(image=data, k=k, filters=[condition_of(c) for c in conditions], min_score=min_score)
        reply = await self._call(self.stub.SearchImage, request)
        return [Hit(record_of(hit.image), hit.score) for hit in reply.results]

    async def search_text(self, query: str, k: int, conditions: list[FilterCondition],
                          min_score: float | None = None) -> list[TextHit]:
        request = pb.SearchTextRequest(query=query, k=k, filters=[condition_of(c) for c in conditions], min_score=min_score)
        reply = await self._call(self.stub.SearchText, request)
        return [TextHit(record_of(hit.image), hit.score, hit.clip_score, hit.caption_match, hit.keyword_score, hit.rank_score)
                for hit in reply.results]

    async def similar(self, image_id: str, k: int, conditions: list[FilterCondition],
                      min_score: float | None = None) -> list[Hit]:
        request = pb.SearchSimilarRequest(id=image_id, k=k, filters=[condition_of(c) for c in conditions], min_score=min_score)
        reply = await self._call(self.stub.SearchSimilar, request)
        return [Hit(record_of(hit.image), hit.score) for hit in reply.results]

    async def thumbnail(self, image_id: str) -> bytes | None:
        reply = await self._call(self.stub.GetThumbnail, pb.GetThumbnailRequest(id=image_id), missing_ok=True)
        return reply.jpeg if reply is not None else None

    async def finish_captions(self, progress: bool) -> str | None:
        return None  # the gateway's caption queue writes them

    async def tenants(self) -> dict[str, int]:
        reply = await self._call(self.stub.ListTenants, pb.ListTenantsRequest())
        return {t.tenant: t.images for t in reply.tenants}

    async def delete_tenant(self, tenant: str) -> int:
        return (await self._call(self.stub.DeleteTenant, pb.DeleteTenantRequest(tenant=tenant))).deleted

    async def close(self) -> None:
        await self.channel.close()
