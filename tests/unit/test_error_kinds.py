"""One table per transport from core error kinds to its codes, covering every kind."""

from __future__ import annotations

from gateway.core.errors import DEFAULT_CODES, ErrorKind, ServiceError
from gateway.server.grpc.errors import STATUS as GRPC_STATUS
from gateway.server.grpc.errors import trailing_metadata
from gateway.server.http.errors import STATUS, TYPE, error_response


def test_every_kind_has_an_http_status_a_grpc_code_an_openai_type_and_a_default_code():
    assert set(STATUS) == set(GRPC_STATUS) == set(TYPE) == set(ErrorKind) == set(DEFAULT_CODES)
    assert {STATUS[k] for k in (ErrorKind.INVALID_ARGUMENT, ErrorKind.UNAVAILABLE, ErrorKind.TIMEOUT)} == {400, 503, 504}


def test_unavailable_carries_a_retry_delay_and_others_do_not():
    assert ServiceError(ErrorKind.UNAVAILABLE, "down").retry_after == 5
    assert ServiceError(ErrorKind.NOT_FOUND, "gone").retry_after is None
    assert ServiceError(ErrorKind.RATE_LIMITED, "slow down", retry_after=3).retry_after == 3


def test_http_error_responses_have_the_documented_shape_and_headers():
    response = error_response(ServiceError(ErrorKind.UNAUTHENTICATED, "no key"))
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.body == (b'{"error":{"code":"missing_api_key","message":"no key","type":"authentication_error",'
                             b'"request_id":null}}')
    limited = error_response(ServiceError(ErrorKind.RATE_LIMITED, "slow down", retry_after=2))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"


def test_grpc_trailing_metadata_carries_the_code_the_request_id_and_a_retry_delay():
    from google.rpc import error_details_pb2, status_pb2

    entries = dict(trailing_metadata(ServiceError(ErrorKind.RATE_LIMITED, "slow down", retry_after=3), "req-1"))
    assert entries["x-request-id"] == "req-1" and entries["error-code"] == "rate_limited" and entries["retry-after"] == "3"
    status = status_pb2.Status.FromString(entries["grpc-status-details-bin"])
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.code == 8 and status.message == "slow down"  # RESOURCE_EXHAUSTED
    assert status.details[0].Unpack(info) and info.reason == "rate_limited" and info.domain == "imagesearch.v1"
    assert status.details[1].Unpack(retry) and retry.retry_delay.seconds == 3
    assert "retry-after" not in dict(trailing_metadata(ServiceError(ErrorKind.NOT_FOUND, "gone"), "req-2"))
