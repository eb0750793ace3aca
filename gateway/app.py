"""The FastAPI application: lifespan (models and store), errors, request ids, metrics, health."""

from __future__ import annotations

import contextvars
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import api
from .access import REQUIRED_SCOPE, SECURITY_SCHEMES, AccessControl, AccessError, KeyRing
from .errors import DependencyUnavailable, ErrorBody, GatewayError
from .inference import Inference, create_inference
from .metrics import ERRORS, REQUEST_SECONDS
from .preprocess import ImageError, ImageTooLarge
from .settings import Settings
from .store import VectorStore

REQUEST_ID = contextvars.ContextVar("request_id", default=None)
log = logging.getLogger("gateway")


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": round(record.created, 3), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage(), "request_id": REQUEST_ID.get()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def error_response(status: int, code: str, message: str, retry_after: int | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    ERRORS.labels(code).inc()
    body = ErrorBody(error={"code": code, "message": message, "request_id": REQUEST_ID.get()})
    headers = {**({"Retry-After": str(retry_after)} if retry_after else {}), **(headers or {})}
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def refusal_response(exc: AccessError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers)


def with_security_schemes(app: FastAPI, keyring: KeyRing) -> dict:
    """The OpenAPI document with the API key schemes; a key is optional where anonymous callers may go."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            if REQUIRED_SCOPE in operation and keyring.anonymous.allows(operation[REQUIRED_SCOPE]):
                operation["security"].append({})
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None, inference: Inference | None = None,
               store: VectorStore | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.inference = inference or create_inference(settings)
        for mismatch in app.state.inference.info.mismatched_sources(settings.clip_model, settings.blip_model):
            log.warning("model repository %s: %s (CLIP_MODEL / BLIP_MODEL); serving the repository as it is",
                        settings.model_repository, mismatch)
        app.state.store = store or VectorStore(settings, app.state.inference.info.embedding_dim)
        await app.state.store.start()
        log.info("gateway ready", extra={"fields": {"inference": settings.inference_mode, "milvus": settings.milvus_uri}})
        try:
            yield
        finally:  # uvicorn drains in-flight requests before this runs
            await app.state.inference.close()
            await app.state.store.close()
            log.info("gateway stopped")

    # Response models are serialised by pydantic-core (Rust) straight to JSON bytes: FastAPI now
    # deprecates ORJSONResponse, which that path makes redundant.
    app = FastAPI(title="image-search gateway", version="0.1.0", lifespan=lifespan,
                  description="Caption, embed, index and search images: CLIP + BLIP on Triton or in-process "
                              "ONNX Runtime, vectors in Milvus. Every error is `{\"error\": {code, message, "
                              "request_id}}`.")
    app.state.settings = settings
    app.include_router(api.router, max_body_size=settings.max_request_bytes)  # 413 as our JSON error
    keyring = KeyRing(settings)  # reads the key file now: a broken one fails at start, not per request
    app.openapi = lambda: with_security_schemes(app, keyring)
    log.info("access", extra={"fields": {"api_keys": len(keyring.keys), "anonymous_scopes": sorted(keyring.anonymous.scopes)}})
    # innermost first: access control runs inside the request context (request id, metrics, log line)
    app.add_middleware(AccessControl, keyring=keyring, routes=api.router.routes, on_refusal=refusal_response)

    @app.middleware("http")
    async def request_context(request: Request, call_next):
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        token = REQUEST_ID.set(request_id[:64])
        start = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            REQUEST_ID.reset(token)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        elapsed = time.perf_counter() - start
        REQUEST_SECONDS.labels(request.method, route, response.status_code).observe(elapsed)
        response.headers["x-request-id"] = request_id[:64]
        if route not in ("/metrics", "/healthz"):
            log.info("request", extra={"fields": {"method": request.method, "route": route, "request_id": request_id[:64],
                                                  "status": response.status_code, "seconds": round(elapsed, 4),
                                                  "principal": request.scope.get("state", {}).get("principal")}})
        return response

    if settings.cors_origins:  # outermost: preflights and refusals get CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-Id"],
                           expose_headers=["X-Request-Id", "Retry-After"], max_age=600)

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError):
        if exc.status >= 500:
            log.warning("dependency or internal error: %s", exc.message)
        return error_response(exc.status, exc.code, exc.message, exc.retry_after)

    @app.exception_handler(ImageError)
    async def image_error(request: Request, exc: ImageError):
        if isinstance(exc, ImageTooLarge):
            return error_response(413, "image_too_large", str(exc))
        return error_response(400, "invalid_image", str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, "invalid_request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 413: "payload_too_large"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process serves HTTP")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: models can serve and Milvus answers",
             responses={503: {"model": ErrorBody}})
    async def readyz(request: Request):
        checks = {}
        for name, dependency in (("inference", request.app.state.inference), ("milvus", request.app.state.store)):
            try:
                await dependency.check_ready()
                checks[name] = "ok"
            except GatewayError as exc:
                checks[name] = exc.message
        if any(v != "ok" for v in checks.values()):
            failed = "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
            return error_response(503, DependencyUnavailable.code, failed, DependencyUnavailable.retry_after)
        return {"status": "ready", "checks": checks}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
