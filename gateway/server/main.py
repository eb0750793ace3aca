"""Serve the gateway: uvicorn for HTTP, the gRPC server beside it (settings from GATEWAY_* environment
variables)."""

from __future__ import annotations

import asyncio
import errno
import socket
import sys

import uvicorn
from fastapi import FastAPI

from ..settings import Settings
from .allocator import keep_freed_buffers
from .http.app import create_app
from .logging import configure_logging


class GatewayServer(uvicorn.Server):
    """uvicorn, with the gRPC server draining from the moment HTTP does (SIGTERM), not after HTTP's drain."""

    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets=None) -> None:
        serving = getattr(self.app.state, "serving", None)  # set once the lifespan has started
        drained = asyncio.ensure_future(serving.drain()) if serving else None
        await super().shutdown(sockets)  # HTTP's drain, then the lifespan's end, which awaits the same gRPC drain
        if drained:
            await drained


def port_in_use(host: str, port: int) -> bool:
    """Whether binding host:port fails because something listens there (checked before the models load)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and gRPC bind
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def main() -> None:
    settings = Settings()
    for port, setting in ((settings.port, "GATEWAY_PORT"), (settings.grpc_port, "GATEWAY_GRPC_PORT")):
        if port and port_in_use(settings.host, port):
            sys.exit(f"error: port {port} is in use ({setting}={port}): stop what listens there, or set {setting}"
                     f" to a free port{' (0: no gRPC server)' if setting == 'GATEWAY_GRPC_PORT' else ''}")
    configure_logging(settings.log_level)
    if settings.inference_mode == "triton":
        keep_freed_buffers()
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            timeout_graceful_shutdown=settings.shutdown_grace_s, forwarded_allow_ips=settings.forwarded_allow_ips)
    GatewayServer(config, app).run()
