"""The errors of the service, typed by kind. Transports map a kind to their own codes at their edge
(HTTP: gateway.server.http.errors; gRPC: gateway.server.grpc.errors); nothing here knows either.

``code`` is the stable machine-readable name clients see (``invalid_image``, ``rate_limited``, ...);
several codes may share a kind. ``message`` is safe to show to the caller.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(str, Enum):
    # The line between the two (docs/api.md, Errors): INVALID_REQUEST when the request does not have the
    # API's shape (a parameter of the wrong type or form, a filter that is no list of conditions, an id
    # that is not 32 hex digits, a page outside its bounds); INVALID_ARGUMENT when a request of the
    # right shape holds content the service cannot use (an undecodable image, refused metadata, an
    # empty or overlong query, k out of range, a non-finite min_score).
    INVALID_ARGUMENT = "invalid_argument"
    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"  # upload, image (pixels) or batch over a limit
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAUTHENTICATED = "unauthenticated"  # no usable API key
    PERMISSION_DENIED = "permission_denied"  # the key lacks the scope
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"  # Triton or Milvus cannot be reached: retry later
    TIMEOUT = "timeout"  # a dependency did not answer within its deadline
    MISCONFIGURED = "misconfigured"  # the deployment cannot serve as configured (found at start-up)
    INTERNAL = "internal"


DEFAULT_CODES = {
    ErrorKind.INVALID_ARGUMENT: "bad_request", ErrorKind.INVALID_REQUEST: "invalid_request",
    ErrorKind.NOT_FOUND: "not_found", ErrorKind.TOO_LARGE: "payload_too_large",
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type", ErrorKind.UNAUTHENTICATED: "missing_api_key",
    ErrorKind.PERMISSION_DENIED: "forbidden", ErrorKind.RATE_LIMITED: "rate_limited",
    ErrorKind.UNAVAILABLE: "dependency_unavailable", ErrorKind.TIMEOUT: "dependency_timeout",
    ErrorKind.MISCONFIGURED: "misconfigured", ErrorKind.INTERNAL: "internal_error",
}
RETRY_AFTER_S = 5  # what an unavailable dependency tells clients to wait


class ServiceError(Exception):
    def __init__(self, kind: ErrorKind, message: str, code: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.message = kind, message
        self.code = code or DEFAULT_CODES[kind]
        self.retry_after = retry_after if retry_after is not None else (RETRY_AFTER_S if kind is ErrorKind.UNAVAILABLE else None)

    def __repr__(self) -> str:
        return f"ServiceError({self.kind.value}, {self.code!r}, {self.message!r})"


def invalid(message: str, code: str | None = None) -> ServiceError:
    return ServiceError(ErrorKind.INVALID_ARGUMENT, message, code)


def unavailable(message: str) -> ServiceError:
    return ServiceError(ErrorKind.UNAVAILABLE, message)


def timeout(message: str) -> ServiceError:
    return ServiceError(ErrorKind.TIMEOUT, message)
