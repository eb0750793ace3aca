"""python -m gateway: serve the API with uvicorn (settings from GATEWAY_* environment variables)."""

import uvicorn

from .app import configure_logging, create_app
from .settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=settings.shutdown_grace_s, forwarded_allow_ips=settings.forwarded_allow_ips)


if __name__ == "__main__":
    main()
