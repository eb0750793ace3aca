"""Core error kinds -> HTTP status codes, and the one JSON shape every error takes, which is also
OpenAI's (so its clients read our errors, /v1/embeddings's included):

    {"error": {"code": "image_too_large", "message": "...", "type": "invalid_request_error", "request_id": "..."}}
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...core.errors import ErrorKind, ServiceError
from ..logging import REQUEST_ID
from ..metrics import ERRORS
from .dependencies import unknown_body_fields

log = logging.getLogger("gateway")

STATUS = {
    ErrorKind.INVALID_ARGUMENT: 400, ErrorKind.INVALID_REQUEST: 422, ErrorKind.NOT_FOUND: 404,
    ErrorKind.TOO_LARGE: 413, ErrorKind.UNSUPPORTED_MEDIA_TYPE: 415, ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.PERMISSION_DENIED: 403, ErrorKind.RATE_LIMITED: 429, ErrorKind.UNAVAILABLE: 503,
    ErrorKind.TIMEOUT: 504, ErrorKind.MISCONFIGURED: 500, ErrorKind.INTERNAL: 500,
}


FILTER_LOCATIONS = {("body", "filters")}  # where a request's filter conditions are validated by their schema

# OpenAI's error types, by kind
TYPE = {kind: "invalid_request_error" for kind in ErrorKind} | {
    ErrorKind.UNAUTHENTICATED: "authentication_error", ErrorKind.PERMISSION_DENIED: "permission_error",
    ErrorKind.RATE_LIMITED: "rate_limit_error", ErrorKind.UNAVAILABLE: "server_error", ErrorKind.TIMEOUT: "server_error",
    ErrorKind.MISCONFIGURED: "server_error", ErrorKind.INTERNAL: "server_error",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    type: str = Field(description="OpenAI's error type: invalid_request_error, authentication_error, ...")
    request_id: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_response(exc: ServiceError) -> JSONResponse:
    ERRORS.labels(exc.code).inc()
    body = ErrorBody(error=ErrorDetail(code=exc.code, message=exc.message, type=TYPE[exc.kind], request_id=REQUEST_ID.get()))
    headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else {}
    if exc.kind is ErrorKind.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body.model_dump(), status_code=STATUS[exc.kind], headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        if STATUS[exc.kind] >= 500:
            log.warning("dependency or internal error: %s", exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        extra = {e["loc"][1] for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 2 and e["loc"][0] == "body"}
        if extra:
            return error_response(unknown_body_fields(request, extra))
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        # a filter that fails its schema is an invalid filter however it came (JSON body, form, query)
        in_filter = all(tuple(e["loc"][:2]) in FILTER_LOCATIONS for e in errors)
        return error_response(ServiceError(ErrorKind.INVALID_REQUEST, problems, "invalid_filter" if in_filter else None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = {404: ErrorKind.NOT_FOUND, 413: ErrorKind.TOO_LARGE}.get(exc.status_code)
        if kind is None:
            ERRORS.labels("http_error").inc()
            body = ErrorBody(error=ErrorDetail(code="http_error", message=str(exc.detail), type="invalid_request_error",
                                               request_id=REQUEST_ID.get()))
            return JSONResponse(body.model_dump(), status_code=exc.status_code)
        return error_response(ServiceError(kind, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(ServiceError(ErrorKind.INTERNAL, "internal error"))
