"""Keys, scopes and rate limits, decided from headers alone (the transports' shared access control)."""

from __future__ import annotations

import pytest

from gateway.core.errors import ErrorKind, ServiceError
from gateway.server.access import AccessControl, TokenBuckets, hash_key, presented_key
from gateway.settings import Settings

READER, ADMIN = "isk_reader_0123456789abcdef", "isk_admin_0123456789abcdef"


def access(**settings) -> AccessControl:
    keys = [{"name": "reader", "sha256": hash_key(READER), "scopes": ["search"]},
            {"name": "admin", "sha256": hash_key(ADMIN), "scopes": ["admin"], "rate_per_s": 1, "burst": 1}]
    return AccessControl(Settings(_env_file=None, api_keys=keys, **settings))


def refusal(control: AccessControl, headers: dict, scope: str) -> ServiceError:
    with pytest.raises(ServiceError) as refused:
        control.authorize(headers, "10.0.0.1", scope)  # type: ignore[arg-type]
    return refused.value


def test_token_buckets_refill_at_the_rate_and_cap_at_the_burst():
    buckets = TokenBuckets(max_buckets=2)
    assert [buckets.take("a", 2.0, 3, 0.0) for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a", 2.0, 3, 0.0) == pytest.approx(0.5)
    assert buckets.take("a", 2.0, 3, 0.5) == 0  # one token back after 1/rate
    assert buckets.take("a", 2.0, 3, 100.0) == 0 and buckets.buckets["a"][0] == pytest.approx(2.0)  # capped at 3
    buckets.take("b", 1, 1, 0.0)
    buckets.take("c", 1, 1, 0.0)
    assert list(buckets.buckets) == ["b", "c"]  # the least recently used is forgotten


def test_keys_come_from_bearer_or_x_api_key():
    assert presented_key({"authorization": "Bearer  abc "}) == "abc"
    assert presented_key({"authorization": "bearer abc"}) == "abc"
    assert presented_key({"x-api-key": " k "}) == "k"
    assert presented_key({"authorization": "Basic xyz"}) is None and presented_key({}) is None


def test_scopes_decide_and_admin_implies_every_scope():
    control = access()
    assert control.authorize({"x-api-key": READER}, "c", "search").name == "reader"
    denied = refusal(control, {"x-api-key": READER}, "write")
    assert denied.kind is ErrorKind.PERMISSION_DENIED and denied.code == "forbidden"
    assert control.authorize({"authorization": f"Bearer {ADMIN}"}, "c", "write").name == "admin"


def test_missing_and_unknown_keys_are_unauthenticated_with_their_own_codes():
    control = access()
    missing = refusal(control, {}, "search")
    assert missing.kind is ErrorKind.UNAUTHENTICATED and missing.code == "missing_api_key"
    unknown = refusal(control, {"x-api-key": "isk_nope"}, "search")
    assert unknown.kind is ErrorKind.UNAUTHENTICATED and unknown.code == "invalid_api_key"


def test_per_key_rate_limit_refuses_with_a_retry_delay():
    control = access()
    control.authorize({"x-api-key": ADMIN}, "c", "search")
    limited = refusal(control, {"x-api-key": ADMIN}, "search")
    assert limited.kind is ErrorKind.RATE_LIMITED and limited.retry_after == 1
    assert control.authorize({"x-api-key": READER}, "c", "search")  # another key has its own bucket


def test_anonymous_callers_everything_without_keys_nothing_with_keys_unless_granted():
    open_door = AccessControl(Settings(_env_file=None))
    assert open_door.authorize({}, "c", "admin").name == "anonymous"
    # without keys configured, a presented key is accepted and ignored (OpenAI's SDK always sends one)
    assert open_door.authorize({"authorization": "Bearer sk-anything"}, "c", "admin").name == "anonymous"
    assert refusal(access(), {}, "search").message == "this route needs an API key with the 'search' scope"
    granted = access(anonymous_scopes=["search"], anonymous_rate_limit_per_s=1, rate_limit_burst=1)
    assert granted.authorize({}, "10.0.0.1", "search").name == "anonymous"
    assert granted.authorize({}, "10.0.0.2", "search")  # buckets per client address
    assert refusal(granted, {}, "search").kind is ErrorKind.RATE_LIMITED  # 10.0.0.1's second request
    assert refusal(granted, {}, "write").kind is ErrorKind.UNAUTHENTICATED
