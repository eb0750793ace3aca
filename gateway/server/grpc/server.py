"""The gRPC server beside HTTP, on the same event loop and service: imagesearch.v1.ImageSearch, the
standard grpc.health.v1.Health (SERVING only while the service is ready) and server reflection
(grpcurl and other generic clients list and call the API without the .proto)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ...api import image_search_pb2_grpc as pb_grpc
from ...core.errors import ErrorKind, ServiceError
from ...core.service import ImageSearchService
from ..access import AccessControl
from .interceptor import ServiceInterceptor
from .servicer import SERVICE_NAME, ImageSearchServicer

log = logging.getLogger("gateway")
MESSAGE_OVERHEAD = 64 * 1024  # a message's name and metadata beside its image bytes
HEALTH_INTERVAL_S = 5.0  # how often Watch subscribers hear about readiness changes
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class ReadinessHealth(health.aio.HealthServicer):
    """grpc.health.v1.Health whose status, for the server ("") and for ImageSearch, is the service's
    readiness (the checks of /readyz): computed at each Check, and every HEALTH_INTERVAL_S for Watch."""

    def __init__(self, service: ImageSearchService):
        super().__init__()
        self.service = service
        self.draining = False
        self._server_status[""] = self._server_status[SERVICE_NAME] = NOT_SERVING

    async def refresh(self) -> None:
        if self.draining:
            return
        checks = await self.service.readiness()
        status = SERVING if all(state == "ok" for state in checks.values()) else NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.set(name, status)

    async def Check(self, request, context):
        await self.refresh()
        return await super().Check(request, context)

    async def drain(self) -> None:
        self.draining = True
        await self.enter_graceful_shutdown()


class GrpcServer:
    def __init__(self, service: ImageSearchService, access: AccessControl, host: str, port: int):
        """``port`` 0 picks a free one (``self.port`` says which)."""
        limits = service.limits
        self.server = grpc.aio.server(interceptors=[ServiceInterceptor(access)], options=[
            ("grpc.max_receive_message_length", limits.max_upload_bytes + MESSAGE_OVERHEAD),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a second server sharing it
        ])
        pb_grpc.add_ImageSearchServicer_to_server(ImageSearchServicer(service), self.server)
        self.health = ReadinessHealth(service)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], self.server)
        try:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as exc:  # grpc's "Failed to bind to address"
            raise ServiceError(ErrorKind.MISCONFIGURED, f"the gRPC API cannot listen on {host}:{port}"
                               f" (GATEWAY_GRPC_PORT): {exc}") from None
        self.watcher: asyncio.Task | None = None
        self.stopping: asyncio.Future | None = None

    async def start(self) -> None:
        await self.server.start()
        await self.health.refresh()
        self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            try:
                await self.health.refresh()
            except Exception:  # readiness reports failures as states; anything else must not stop the loop
                log.exception("gRPC health refresh failed")

    def stop(self, grace: float) -> asyncio.Future:
        """NOT_SERVING at once, no new calls, up to ``grace`` seconds for the calls in flight. Idempotent:
        a second call waits for the first one's drain."""
        if self.stopping is None:
            self.stopping = asyncio.ensure_future(self._stop(grace))
        return self.stopping

    async def _stop(self, grace: float) -> None:
        if self.watcher:
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watcher
        await self.health.drain()
        await self.server.stop(grace)
