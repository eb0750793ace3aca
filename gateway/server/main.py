"""Serve the gateway: uvicorn for HTTP (settings from GATEWAY_* environment variables)."""

from __future__ import annotations

import uvicorn

from ..settings import Settings
from .http.app import create_app
from .logging import configure_logging


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=settings.shutdown_grace_s, forwarded_allow_ips=settings.forwarded_allow_ips)
