"""Serve the gateway: uvicorn for HTTP, the gRPC server beside it (settings from GATEWAY_* environment
variables)."""

from __future__ import annotations

import asyncio

import uvicorn
from fastapi import FastAPI

from ..settings import Settings
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


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            timeout_graceful_shutdown=settings.shutdown_grace_s, forwarded_allow_ips=settings.forwarded_allow_ips)
    GatewayServer(config, app).run()
