"""Core error kinds -> gRPC status codes, and what every failed call carries in its trailing metadata:
``x-request-id``, ``error-code`` (the stable code the HTTP API puts in error.code), ``retry-after``
(seconds, where retrying helps) and the standard rich status (``grpc-status-details-bin``: a
google.rpc.Status with ErrorInfo, reason = the code, and RetryInfo)."""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2

from ...core.errors import ErrorKind, ServiceError

STATUS = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT, ErrorKind.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND, ErrorKind.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED, ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED, ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED, ErrorKind.MISCONFIGURED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}
DOMAIN = "imagesearch.v1"


def trailing_metadata(exc: ServiceError, request_id: str) -> tuple[tuple[str, str | bytes], ...]:
    code = STATUS[exc.kind]
    details = [error_details_pb2.ErrorInfo(reason=exc.code, domain=DOMAIN)]
    entries: list[tuple[str, str | bytes]] = [("x-request-id", request_id), ("error-code", exc.code)]
    if exc.retry_after:
        details.append(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=int(exc.retry_after))))
        entries.append(("retry-after", str(int(exc.retry_after))))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=exc.message)
    for detail in details:
        status.details.add().Pack(detail)
    entries.append(("grpc-status-details-bin", status.SerializeToString()))
    return tuple(entries)
