"""One client interface, two implementations: the service in this process (embedded: in-process
ONNX Runtime + Milvus, as ``make serve`` runs it) or a running gateway's HTTP API. Both return the
core's types and raise ServiceError. Each acts for one tenant: the one it is made with (the embedded
client: the default tenant unless named; a gateway's: the key's, or the one an operator key names in
X-Tenant)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import Protocol

import httpx
import numpy as np

from ..core.errors import ErrorKind, ServiceError
from ..core.filters import FilterCondition
from ..core.records import DEFAULT_TENANT, Hit, ImageRecord, Indexed, TextHit, Upload
from ..core.service import ImageSearchService


class Client(Protocol):
    async def exists(self, image_id: str) -> bool: ...

    async def index(self, files: list[tuple[str, bytes]], metadata: dict, captions: bool | None,
                    wait_for_caption: bool = False) -> list[Indexed]: ...

    async def search_image(self, data: bytes, k: int, conditions: list[FilterCondition],
                           min_score: float | None = None) -> list[Hit]: ...

    async def search_text(self, query: str, k: int, conditions: list[FilterCondition],
                          min_score: float | None = None) -> list[TextHit]: ...

    async def similar(self, image_id: str, k: int, conditions: list[FilterCondition],
                      min_score: float | None = None) -> list[Hit]: ...

    async def thumbnail(self, image_id: str) -> bytes | None: ...

    async def finish_captions(self, progress: bool) -> str | None:
        """Wait until the captions this client queued are written, where they are written in this process
        (the embedded stack); what became of them, or None where a gateway captions them."""
        ...

    async def tenants(self) -> dict[str, int]: ...

    async def delete_tenant(self, tenant: str) -> int: ...

    async def close(self) -> None: ...


class EmbeddedClient:
    """The service itself, in this process, acting for ``tenant`` (None: the default tenant; every tenant
    for exports)."""

    def __init__(self, service: ImageSearchService, tenant: str | None = None):
        self.service, self.named_tenant = service, tenant
        self.tenant = tenant or DEFAULT_TENANT

    async def exists(self, image_id: str) -> bool:
        return await self.service.exists(self.tenant, image_id)

    async def index(self, files: list[tuple[str, bytes]], metadata: dict, captions: bool | None,
                    wait_for_caption: bool = False) -> list[Indexed]:
        return await self.service.index_images(self.tenant, [Upload(name, data, metadata) for name, data in files],
                                               captions, wait_for_caption)

    async def finish_captions(self, progress: bool) -> str | None:
        """The queue drained by this process's worker (the embedded store is this process's alone)."""
        from tqdm import tqdm

        worker = self.service.worker
        if worker is None or not (stats := await self.service.store.caption_queue()).pending:
            return None
        bar = tqdm(total=stats.pending, unit="img", desc="captioning", disable=not progress, file=sys.stderr)
        start = worker.counts.captioned + worker.counts.failed
        while (stats := await self.service.store.caption_queue()).pending:
            bar.n = worker.counts.captioned + worker.counts.failed - start
            bar.refresh()
            await asyncio.sleep(0.5)
        bar.n = worker.counts.captioned + worker.counts.failed - start
        bar.close()
        return f"captioned {worker.counts.captioned - start}, caption failed {stats.failed} (GET /v1/images: caption_error)"

    async def search_image(self, data: bytes, k: int, conditions: list[FilterCondition],
                           min_score: float | None = None) -> list[Hit]:
        return await self.service.search_image(self.tenant, data, k, conditions, min_score)

    async def search_text(self, query: str, k: int, conditions: list[FilterCondition],
                          min_score: float | None = None) -> list[TextHit]:
        return await self.service.search_text(self.tenant, query, k, conditions, min_score)

    async def similar(self, image_id: str, k: int, conditions: list[FilterCondition],
                      min_score: float | None = None) -> list[Hit]:
        return await self.service.similar(self.tenant, image_id, k, conditions, min_score)

    async def thumbnail(self, image_id: str) -> bytes | None:
        try:
            return await self.service.thumbnail(self.tenant, image_id)
        except ServiceError as exc:
            if exc.kind is ErrorKind.NOT_FOUND:
                return None
            raise

    async def all_records(self) -> list[ImageRecord]:
        """Every record with its vector, of the tenant named or of every tenant (export-faiss)."""
        return await self.service.all_records(self.named_tenant)

    async def tenants(self) -> dict[str, int]:
        return await self.service.tenants()

    async def delete_tenant(self, tenant: str) -> int:
        return await self.service.delete_tenant(tenant)

    @property
    def embedding_dim(self) -> int:
        return self.service.model_info.embedding_dim

    async def close(self) -> None:
        await self.service.close()


def record_of(body: dict) -> ImageRecord:
    embedding = body.get("embedding")
    vector = None if embedding is None else (np.frombuffer(base64.b64decode(embedding), np.float32)
                                            if isinstance(embedding, str) else np.asarray(embedding, np.float32))
    return ImageRecord(body["id"], body["caption"], body["source"], body["metadata"], body["created_at"], body["phash"], vector,
                       caption_state=body.get("caption_state", "done"), caption_error=body.get("caption_error", ""))


CONSISTENCY_HEADER = "X-Consistency-Token"  # (gateway.server.http.app's: the CLI does not import the server)

# what a gateway's HTTP status says about the failure, for callers that decide by kind
KIND_OF_STATUS = {400: ErrorKind.INVALID_ARGUMENT, 401: ErrorKind.UNAUTHENTICATED, 403: ErrorKind.PERMISSION_DENIED,
                  404: ErrorKind.NOT_FOUND, 413: ErrorKind.TOO_LARGE, 415: ErrorKind.UNSUPPORTED_MEDIA_TYPE,
                  422: ErrorKind.INVALID_REQUEST, 429: ErrorKind.RATE_LIMITED, 503: ErrorKind.UNAVAILABLE,
                  504: ErrorKind.TIMEOUT}


class HttpClient:
    """A running gateway's HTTP API."""

    def __init__(self, url: str, api_key: str | None = None, tenant: str | None = None):
        headers = {**({"X-API-Key": api_key} if api_key else {}), **({"X-Tenant": tenant} if tenant else {})}
        self.client = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=600, headers=headers)
        self.token: str | None = None  # the latest write's consistency token: later reads see that write

    async def _call(self, method: str, path: str, missing_ok: bool = False, **kwargs) -> httpx.Response:
        headers = {CONSISTENCY_HEADER: self.token} if self.token else {}
        try:
            response = await self.client.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceError(ErrorKind.UNAVAILABLE, f"the gateway at {self.client.base_url} cannot be reached: {exc}") from exc
        if response.status_code >= 400 and not (missing_ok and response.status_code == 404):
            try:
                error = response.json()["error"]
                code, message = error["code"], error["message"]
            except (ValueError, KeyError, TypeError):
                code, message = None, f"HTTP {response.status_code}: {response.text[:200]}"
            raise ServiceError(KIND_OF_STATUS.get(response.status_code, ErrorKind.INTERNAL), message, code)
        self.token = response.headers.get(CONSISTENCY_HEADER, self.token)
        return response

    async def exists(self, image_id: str) -> bool:
        return (await self._call("GET", f"/v1/images/{image_id}", missing_ok=True)).status_code == 200

    async def index(self, files: list[tuple[str, bytes]], metadata: dict, captions: bool | None,
                    wait_for_caption: bool = False) -> list[Indexed]:
        form = {"metadata": json.dumps(metadata), **({} if captions is None else {"captions": str(captions).lower()}),
                **({"wait_for_caption": "true"} if wait_for_caption else {})}
        response = await self._call("POST", "/v1/images", data=form,
                                    files=[("files", (n, d, "application/octet-stream")) for n, d in files])
        return [Indexed(record_of(image), image["created"]) for image in response.json()["images"]]

    async def search_image(self, data: bytes, k: int, conditions: list[FilterCondition],
                           min_score: float | None = None) -> list[Hit]:
        form = {"k": str(k), "filter": json.dumps([c.model_dump() for c in conditions]),
                **({} if min_score is None else {"min_score": repr(min_score)})}
        response = await self._call("POST", "/v1/search/image", files={"file": ("query", data, "application/octet-stream")},
                                    data=form)
        return [Hit(record_of(hit), hit["score"]) for hit in response.json()["results"]]

    async def search_text(self, query: str, k: int, conditions: list[FilterCondition],
                          min_score: float | None = None) -> list[TextHit]:
        response = await self._call("POST", "/v1/search/text", json={
            "query": query, "k": k, "filters": [c.model_dump() for c in conditions], "min_score": min_score})
        return [TextHit(record_of(hit), hit["score"], hit["clip_score"], hit["caption_match"], hit["keyword_score"],
                        hit["rank_score"])
                for hit in response.json()["results"]]

    async def similar(self, image_id: str, k: int, conditions: list[FilterCondition],
                      min_score: float | None = None) -> list[Hit]:
        params = {"k": k, "filter": json.dumps([c.model_dump() for c in conditions]),
                  **({} if min_score is None else {"min_score": repr(min_score)})}
        response = await self._call("GET", f"/v1/images/{image_id}/similar", params=params)
        return [Hit(record_of(hit), hit["score"]) for hit in response.json()["results"]]

    async def thumbnail(self, image_id: str) -> bytes | None:
        response = await self._call("GET", f"/v1/images/{image_id}/thumbnail", missing_ok=True)
        return response.content if response.status_code == 200 else None

    async def finish_captions(self, progress: bool) -> str | None:
        return None  # the gateway's caption queue writes them

    async def tenants(self) -> dict[str, int]:
        return {t["tenant"]: t["images"] for t in (await self._call("GET", "/v1/tenants")).json()["tenants"]}

    async def delete_tenant(self, tenant: str) -> int:
        return (await self._call("DELETE", f"/v1/tenants/{tenant}")).json()["deleted"]

    async def close(self) -> None:
        await self.client.aclose()
