"""imagesearch.v1.ImageSearch: each handler turns its message into core calls and the result into
its reply. Keys, request ids, deadlines, errors and metrics are the interceptor's (interceptor.py)."""

from __future__ import annotations

from google.protobuf import empty_pb2

from ...api import image_search_pb2 as pb
from ...api import image_search_pb2_grpc as pb_grpc
from ...core.errors import ErrorKind, ServiceError, invalid
from ...core.records import Upload
from ...core.service import DEFAULT_K, DEFAULT_PAGE_SIZE, ImageSearchService
from ..access import acting_tenant
from .messages import conditions_of, hit_of, image_of, indexed_of, metadata_of, text_hit_of

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ImageSearch"].full_name
# the service operation each method calls (its scope: gateway.server.access.SCOPE_OF)
OPERATIONS = {
    "EmbedImage": "embed_image", "IndexImages": "index_images", "SearchImage": "search_image", "SearchSimilar": "similar",
    "SearchText": "search_text", "GetImage": "get", "GetThumbnail": "thumbnail", "DeleteImage": "delete",
    "ListImages": "list_images", "ListTenants": "tenants", "GetTenant": "count", "DeleteTenant": "delete_tenant",
}


def k_of(request) -> int:
    return request.k if request.HasField("k") else DEFAULT_K


def min_score_of(request) -> float | None:
    return request.min_score if request.HasField("min_score") else None


def offset_of(page_token: str) -> int:
    if not page_token:
        return 0
    if not page_token.isdigit():
        raise invalid("page_token is not one this service gave", "invalid_page_token")
    return int(page_token)


class ImageSearchServicer(pb_grpc.ImageSearchServicer):
    def __init__(self, service: ImageSearchService):
        self.service = service

    async def EmbedImage(self, request: pb.EmbedImageRequest, context) -> pb.EmbedImageResponse:
        embedded = await self.service.embed_image(request.image)
        return pb.EmbedImageResponse(description=embedded.caption, embedding=embedded.vector.tolist())

    async def IndexImages(self, request_iterator, context) -> pb.IndexImagesResponse:
        """Reads the stream with the HTTP route's limits: files per request, bytes per file and per request."""
        limits, received, captions, wait_for_caption = self.service.limits, 0, None, False
        uploads: list[Upload] = []
        async for message in request_iterator:
            if len(uploads) == limits.max_files_per_request:
                self.service.check_batch(len(uploads) + 1)
            received += len(message.image)
            if received > limits.max_request_bytes:
                raise ServiceError(ErrorKind.TOO_LARGE, f"the images of one call exceed {limits.max_request_bytes:,} bytes")
            if not uploads:
                captions = message.captions if message.HasField("captions") else None
                wait_for_caption = message.wait_for_caption
            uploads.append(Upload(message.name, message.image, metadata_of(message)))
        done = await self.service.index_images(acting_tenant(), uploads, captions, wait_for_caption)
        return pb.IndexImagesResponse(images=[indexed_of(d) for d in done])

    async def SearchImage(self, request: pb.SearchImageRequest, context) -> pb.SearchImageResponse:
        hits = await self.service.search_image(acting_tenant(), request.image, k_of(request), conditions_of(request.filters),
                                               min_score_of(request))
        return pb.SearchImageResponse(results=[hit_of(h) for h in hits])

    async def SearchSimilar(self, request: pb.SearchSimilarRequest, context) -> pb.SearchImageResponse:
        hits = await self.service.similar(acting_tenant(), request.id, k_of(request), conditions_of(request.filters),
                                          min_score_of(request))
        return pb.SearchImageResponse(results=[hit_of(h) for h in hits])

    async def SearchText(self, request: pb.SearchTextRequest, context) -> pb.SearchTextResponse:
        hits = await self.service.search_text(acting_tenant(), request.query, k_of(request), conditions_of(request.filters),
                                              min_score_of(request))
        return pb.SearchTextResponse(results=[text_hit_of(h) for h in hits])

    async def GetImage(self, request: pb.GetImageRequest, context) -> pb.Image:
        record = await self.service.get(acting_tenant(), request.id, with_vector=request.include_embedding)
        return image_of(record, request.include_embedding)

    async def GetThumbnail(self, request: pb.GetThumbnailRequest, context) -> pb.Thumbnail:
        return pb.Thumbnail(jpeg=await self.service.thumbnail(acting_tenant(), request.id))

    async def DeleteImage(self, request: pb.DeleteImageRequest, context) -> empty_pb2.Empty:
        await self.service.delete(acting_tenant(), request.id)
        return empty_pb2.Empty()

    async def ListImages(self, request: pb.ListImagesRequest, context) -> pb.ListImagesResponse:
        page = await self.service.list_images(acting_tenant(), request.page_size or DEFAULT_PAGE_SIZE,
                                              offset_of(request.page_token))
        after = page.offset + len(page.records)
        more = len(page.records) == page.limit and after < page.total
        return pb.ListImagesResponse(images=[image_of(r) for r in page.records], total_size=page.total,
                                     next_page_token=str(after) if more else "")

    async def ListTenants(self, request: pb.ListTenantsRequest, context) -> pb.ListTenantsResponse:
        tenants = await self.service.tenants()
        return pb.ListTenantsResponse(tenants=[pb.Tenant(tenant=name, images=count) for name, count in tenants.items()])

    async def GetTenant(self, request: pb.GetTenantRequest, context) -> pb.Tenant:
        return pb.Tenant(tenant=request.tenant, images=await self.service.count(request.tenant))

    async def DeleteTenant(self, request: pb.DeleteTenantRequest, context) -> pb.DeleteTenantResponse:
        return pb.DeleteTenantResponse(tenant=request.tenant, deleted=await self.service.delete_tenant(request.tenant))
