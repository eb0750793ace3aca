"""The FastAPI application: lifespan (the service, and the gRPC server beside it:
gateway.server.process), middleware (request ids, access, CORS, logs, metrics), routers, error handlers."""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.formparsers import MultiPartParser

from ...core.consistency import consistency
from ...core.errors import ServiceError
from ...core.service import ImageSearchService
from ...settings import Settings
from ..access import AccessControl
from ..logging import REQUEST_ID
from ..metrics import REQUEST_SECONDS
from ..process import serving
from .access import AccessMiddleware, with_security_schemes
from .dependencies import KnownFieldsOnly
from .errors import error_response, install_error_handlers
from .routes import compat, docs, embeddings, images, operations, page, search, tenants

log = logging.getLogger("gateway")
CONSISTENCY_HEADER = "X-Consistency-Token"  # writes answer with it; reads that send it see those writes
ROUTERS = (page.router, compat.router, images.router, search.router, embeddings.router, tenants.router)


def create_app(settings: Settings | None = None, service: ImageSearchService | None = None) -> FastAPI:
    """The HTTP API over ``service`` (built from ``settings`` at start-up when not given)."""
    settings = settings or Settings()
    access = AccessControl(settings)  # reads the key file now: a broken one fails at start, not per request

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with serving(settings, access, service) as running:  # uvicorn drains HTTP requests before this exits
            app.state.service, app.state.serving = running.service, running
            yield

    # Response models are serialised by pydantic-core (Rust) straight to JSON bytes: FastAPI now
    # deprecates ORJSONResponse, which that path makes redundant.
    app = FastAPI(title="image-search gateway", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Caption, embed, index and search images: CLIP + BLIP on Triton or in-process "
                              "ONNX Runtime, vectors in Milvus. Every error is `{\"error\": {code, message, "
                              "request_id}}`.")
    # Uploads stay in memory (the service reads each one whole anyway) instead of passing through a 1 MiB
    # spooled temporary file: a 4 MB photo over HTTP cost ~8 ms more CPU written out and read back
    # (bench/tier_decode.py's set-up). Starlette's parser reads this class setting; the body limit holds.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_upload_bytes)
    for router in ROUTERS:  # 413 as our JSON error; unknown fields refused on every API route
        app.include_router(router, max_body_size=settings.max_request_bytes, dependencies=[KnownFieldsOnly])
    app.include_router(operations.router)
    docs.install(app)  # /docs and /redoc from packaged assets (no CDN)
    app.openapi = lambda: with_security_schemes(app, access)  # type: ignore[method-assign]
    log.info("access", extra={"fields": {"api_keys": len(access.keys), "anonymous_scopes": sorted(access.anonymous.scopes)}})
    if not access.keys:
        log.info("no API keys configured: keys that clients present are accepted and ignored (GATEWAY_API_KEYS to require them)")
    # innermost first: access control runs inside the request context (request id, metrics, log line)
    scoped = [route for router in ROUTERS for route in router.routes]  # (FastAPI wraps included routers)
    app.add_middleware(AccessMiddleware, access=access, routes=scoped, on_refusal=error_response)

    @app.middleware("http")
    async def request_context(request: Request, call_next):
        request_id = (request.headers.get("x-request-id") or uuid.uuid4().hex)[:64]
        token = REQUEST_ID.set(request_id)
        start = time.perf_counter()
        try:
            with consistency(request.headers.get(CONSISTENCY_HEADER)) as state:
                response = await call_next(request)
            if state.written is not None:
                response.headers[CONSISTENCY_HEADER] = str(state.written)
        except ServiceError as exc:  # a malformed consistency token
            response = error_response(exc)
        finally:
            REQUEST_ID.reset(token)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        elapsed = time.perf_counter() - start
        REQUEST_SECONDS.labels(request.method, route, response.status_code).observe(elapsed)
        response.headers["x-request-id"] = request_id
        if route not in ("/metrics", "/healthz"):
            log.info("request", extra={"fields": {"method": request.method, "route": route, "request_id": request_id,
                                                  "status": response.status_code, "seconds": round(elapsed, 4),
                                                  "principal": request.scope.get("state", {}).get("principal")}})
        return response

    if settings.cors_origins:  # outermost: preflights and refusals get CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "X-Tenant", "Content-Type", "X-Request-Id",
                                          CONSISTENCY_HEADER],
                           expose_headers=["X-Request-Id", "Retry-After", CONSISTENCY_HEADER], max_age=600)
    install_error_handlers(app)
    return app
