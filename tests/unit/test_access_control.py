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


ACME, OPS = "isk_acme_0123456789abcdef", "isk_ops_0123456789abcdef"


def tenants_access(**settings) -> AccessControl:
    keys = [{"name": "reader", "sha256": hash_key(READER), "scopes": ["search"]},
            {"name": "acme", "sha256": hash_key(ACME), "scopes": ["admin"], "tenant": "acme"},
            {"name": "ops", "sha256": hash_key(OPS), "scopes": ["search"], "operator": True}]
    return AccessControl(Settings(_env_file=None, api_keys=keys, **settings))


def acting(control: AccessControl, headers: dict, operator_only: bool = False) -> str:
    principal = control.authorize(headers, "c", "search", operator_only)
    return principal.acting_for(headers.get("x-tenant"))


def refused_acting(control: AccessControl, headers: dict) -> ServiceError:
    with pytest.raises(ServiceError) as refused:
        acting(control, headers)
    return refused.value


def test_a_key_acts_for_its_tenant_and_an_operator_key_for_the_one_it_names():
    control = tenants_access()
    assert acting(control, {"x-api-key": READER}) == "default"  # a key bound to no tenant: the default one
    assert acting(control, {"x-api-key": ACME}) == "acme"
    assert acting(control, {"x-api-key": ACME, "x-tenant": "acme"}) == "acme"  # naming its own: fine
    other = refused_acting(control, {"x-api-key": ACME, "x-tenant": "globex"})
    assert other.kind is ErrorKind.PERMISSION_DENIED and "acts for its own tenant only" in other.message
    assert refused_acting(control, {"x-api-key": READER, "x-tenant": "acme"}).kind is ErrorKind.PERMISSION_DENIED
    assert acting(control, {"x-api-key": OPS, "x-tenant": "globex"}) == "globex"
    unnamed = refused_acting(control, {"x-api-key": OPS})
    assert unnamed.kind is ErrorKind.INVALID_REQUEST and unnamed.code == "invalid_tenant" and "X-Tenant" in unnamed.message
    granted = tenants_access(anonymous_scopes=["search"])  # anonymous callers beside keys: the default tenant only
    assert acting(granted, {}) == "default"
    assert refused_acting(granted, {"x-tenant": "acme"}).kind is ErrorKind.UNAUTHENTICATED


def test_only_operator_keys_reach_the_operations_across_tenants():
    control = tenants_access()
    assert control.authorize({"x-api-key": OPS}, "c", "search", operator_only=True).operator
    denied = refusal_operator(control, {"x-api-key": ACME})
    assert denied.kind is ErrorKind.PERMISSION_DENIED and "is not an operator key" in denied.message
    assert refusal_operator(control, {}).kind is ErrorKind.UNAUTHENTICATED


def refusal_operator(control: AccessControl, headers: dict) -> ServiceError:
    with pytest.raises(ServiceError) as refused:
        control.authorize(headers, "c", "search", operator_only=True)
    return refused.value


def test_without_keys_the_one_user_acts_for_the_default_tenant_or_any_it_names():
    open_door = AccessControl(Settings(_env_file=None))
    assert acting(open_door, {}) == "default" and acting(open_door, {"x-tenant": "acme"}) == "acme"
    assert open_door.authorize({}, "c", "search", operator_only=True).operator


@pytest.mark.parametrize("entry,problem", [
    ({"tenant": "acme", "operator": True}, "give it no tenant"),
    ({"tenant": "ac me"}, "String should match pattern"),
    ({"tenant": "x" * 65}, "String should match pattern"),
])
def test_key_entries_bind_one_valid_tenant_or_none(entry, problem):
    with pytest.raises(ValueError, match=problem):
        Settings(_env_file=None, api_keys=[{"name": "k", "sha256": hash_key("k"), "scopes": ["search"], **entry}])
