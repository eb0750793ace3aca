"""The errors the gateway turns into HTTP responses, and the one JSON shape they all take.

    {"error": {"code": "image_too_large", "message": "...", "request_id": "..."}}
"""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    retry_after: int | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class InvalidImage(GatewayError):
    status, code = 400, "invalid_image"


class PayloadTooLarge(GatewayError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(GatewayError):
    status, code = 415, "unsupported_media_type"


class InvalidFilter(GatewayError):
    status, code = 422, "invalid_filter"


class InvalidParameters(GatewayError):
    status, code = 422, "invalid_request"


class NotFound(GatewayError):
    status, code = 404, "not_found"


class DependencyUnavailable(GatewayError):
    """Triton or Milvus cannot be reached: the client may retry after a moment."""

    status, code, retry_after = 503, "dependency_unavailable", 5


class DependencyTimeout(GatewayError):
    status, code = 504, "dependency_timeout"


class StoreConfigError(RuntimeError):
    """The collection cannot be used with these models (e.g. another embedding dimension): fail at start."""
