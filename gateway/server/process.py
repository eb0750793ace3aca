"""The serving process's lifetime, whatever serves HTTP: the service built and started, the gRPC
server beside it (GATEWAY_GRPC_PORT), both stopped in order (gRPC drains its calls in flight, then the
service closes its backends)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..core.service import ImageSearchService
from ..settings import Settings
from ..wiring import build_service
from .access import AccessControl
from .grpc.server import GrpcServer
from .metrics import worker_metrics

log = logging.getLogger("gateway")


@dataclass
class RunningGateway:
    service: ImageSearchService
    grpc: GrpcServer | None
    grace_s: float

    async def drain(self) -> None:
        """Stop taking gRPC calls and finish those in flight (HTTP's server drains its own)."""
        if self.grpc:
            await self.grpc.stop(self.grace_s)


@asynccontextmanager
async def serving(settings: Settings, access: AccessControl, service: ImageSearchService | None = None
                  ) -> AsyncIterator[RunningGateway]:
    """``service`` built from ``settings`` when not given; ``access`` shared by every transport (one
    rate limit per key, whichever transport the key calls)."""
    service = service or build_service(settings)
    for mismatch in service.model_info.mismatched_sources(settings.clip_model, settings.blip_model, settings.text_model):
        log.warning("model repository %s: %s (CLIP_MODEL / TEXT_MODEL / BLIP_MODEL); serving the repository as it is",
                    settings.model_repository, mismatch)
    await service.start()
    service.start_worker()
    grpc_server = None
    with worker_metrics(service.worker):
        try:
            if settings.grpc_port:
                grpc_server = GrpcServer(service, access, settings.host, settings.grpc_port)
                await grpc_server.start()
            log.info("gateway ready", extra={"fields": {
                "url": f"http://{settings.host}:{settings.port}", "inference": settings.inference_mode,
                **({"grpc": f"{settings.host}:{grpc_server.port}"} if grpc_server else {}),
                **({"triton": settings.triton_url} if settings.inference_mode == "triton" else {}),
                "milvus": settings.milvus_uri, "collection": settings.collection, "models": service.model_info.sources}})
            yield RunningGateway(service, grpc_server, settings.shutdown_grace_s)
        finally:
            if grpc_server:
                await grpc_server.stop(settings.shutdown_grace_s)
            await service.close()
            log.info("gateway stopped")
