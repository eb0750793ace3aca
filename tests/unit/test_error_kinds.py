"""One table per transport from core error kinds to its codes, covering every kind."""

from __future__ import annotations

from gateway.core.errors import DEFAULT_CODES, ErrorKind, ServiceError
from gateway.server.http.errors import STATUS, error_response


def test_every_kind_has_an_http_status_and_a_default_code():
    assert set(STATUS) == set(ErrorKind) == set(DEFAULT_CODES)
    assert {STATUS[k] for k in (ErrorKind.INVALID_ARGUMENT, ErrorKind.UNAVAILABLE, ErrorKind.TIMEOUT)} == {400, 503, 504}


def test_unavailable_carries_a_retry_delay_and_others_do_not():
    assert ServiceError(ErrorKind.UNAVAILABLE, "down").retry_after == 5
    assert ServiceError(ErrorKind.NOT_FOUND, "gone").retry_after is None
    assert ServiceError(ErrorKind.RATE_LIMITED, "slow down", retry_after=3).retry_after == 3


def test_http_error_responses_have_the_documented_shape_and_headers():
    response = error_response(ServiceError(ErrorKind.UNAUTHENTICATED, "no key"))
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.body == b'{"error":{"code":"missing_api_key","message":"no key","request_id":null}}'
    limited = error_response(ServiceError(ErrorKind.RATE_LIMITED, "slow down", retry_after=2))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
