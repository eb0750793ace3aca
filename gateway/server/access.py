"""Who may call what, and how often: API keys, scopes, rate limits, for every transport.

- Keys are presented as `Authorization: Bearer <key>` or `X-API-Key: <key>` (HTTP headers, gRPC
  metadata) and stored hashed (SHA-256 hex; keys are 256-bit random tokens, so a fast hash is
  enough). `python -m gateway.server.access new-key --name NAME --scopes search,write` prints a
  fresh key and the entry to configure.
- Scopes: `search` (searches, reads, /embed-image/), `write` (index images), `admin` (delete;
  admin implies every scope). ``SCOPE_OF`` gives each operation's, for every transport.
- Tenants (gateway.core.tenants): a key is bound to one tenant (its `tenant`, the default tenant when
  it names none) and acts for it alone; an operator key (`operator: true`) acts for the tenant each
  request names in `X-Tenant` (HTTP header, gRPC metadata `x-tenant`) and alone may list, count and
  delete tenants (``OPERATOR_ONLY``). A key naming a tenant other than its own is PERMISSION_DENIED;
  an operator key naming none where an operation acts for a tenant is INVALID_REQUEST
  ``invalid_tenant``. Without keys configured, callers act for the default tenant, or the one they name
  (nothing separates callers there: the embedded default, one user).
- UNAUTHENTICATED when no usable key was presented (none, or an unknown one); PERMISSION_DENIED
  when the key is valid but lacks the scope. Anonymous callers get `anonymous_scopes` (every scope
  when no key is configured, none otherwise, unless set). With no key configured, a presented key
  is accepted and ignored (the caller is anonymous): clients that always send one (OpenAI's SDK,
  a copied snippet) work against the embedded default.
- Token buckets per key (anonymous callers: per client address): RATE_LIMITED with a retry delay.

The transports call ``AccessControl.authorize`` before they read a request body. The key itself is
never logged or echoed; logs name the key (`principal`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace

from ..core.errors import ErrorKind, ServiceError
from ..core.tenants import DEFAULT_TENANT
from ..settings import SCOPES, ApiKey, ScopeName, Settings

# The scope each operation of the service needs, by the service method's name, whichever transport
# calls it (HTTP routes: gateway.server.http.access.requires; gRPC: gateway.server.grpc.servicer.OPERATIONS).
SCOPE_OF: dict[str, ScopeName] = {
    "embed_image": "search", "embeddings": "search", "index_images": "write", "search_image": "search",
    "search_text": "search", "similar": "search", "get": "search", "thumbnail": "search", "list_images": "search",
    "delete": "admin", "tenants": "search", "count": "search", "delete_tenant": "admin",
}
OPERATOR_ONLY = frozenset({"tenants", "count", "delete_tenant"})  # operations across tenants: operator keys alone
TENANT_HEADER = "x-tenant"  # the tenant an operator key acts for (HTTP header, gRPC metadata)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "isk_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    name: str  # the key's name, or "anonymous"
    scopes: frozenset[str]
    rate_per_s: float  # 0: unlimited
    burst: int
    bucket: str  # what the rate limit counts against
    tenant: str | None = DEFAULT_TENANT  # the tenant it is bound to (None: an operator's, the one each request names)
    operator: bool = False  # may list, count and delete tenants

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def acting_for(self, named: str | None) -> str:
        """The tenant an operation acts for, given the tenant a request names (X-Tenant; None: none)."""
        if self.tenant is None:  # an operator key
            if named is None:
                raise ServiceError(ErrorKind.INVALID_REQUEST, f"the operator key {self.name!r} acts for the tenant each"
                                   f" request names: send the X-Tenant header (gRPC: {TENANT_HEADER} metadata)",
                                   "invalid_tenant")
            return named
        if named is None or named == self.tenant or (self.operator and self.name == "anonymous"):
            return named or self.tenant
        if self.name == "anonymous":
            raise ServiceError(ErrorKind.UNAUTHENTICATED, "acting for another tenant than the default needs a key bound"
                               " to it, or an operator key")
        raise ServiceError(ErrorKind.PERMISSION_DENIED, f"the key {self.name!r} acts for its own tenant only")


@dataclass(frozen=True)
class Caller:
    """Who makes the request being served, and the tenant it names: what the transports set (``calling``)
    and operations read (``acting_tenant``)."""

    principal: Principal
    named_tenant: str | None


CALLER: ContextVar[Caller] = ContextVar("caller")


@contextmanager
def calling(principal: Principal, headers: Mapping[str, str]) -> Iterator[None]:
    """The caller of the request this context serves (set by each transport after ``authorize``)."""
    token = CALLER.set(Caller(principal, headers.get(TENANT_HEADER) or None))
    try:
        yield
    finally:
        CALLER.reset(token)


def acting_tenant() -> str:
    """The tenant the current request acts for (a ServiceError where the caller may not act for the one it
    names). Only inside ``calling``: a transport that forgot it fails the request rather than guess."""
    try:
        caller = CALLER.get()
    except LookupError:
        raise ServiceError(ErrorKind.INTERNAL, "no caller was identified for this request") from None
    return caller.principal.acting_for(caller.named_tenant)


class TokenBuckets:
    """One token bucket per name, refilled continuously; the least recently used are forgotten."""

    def __init__(self, max_buckets: int = 100_000):
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # name -> (tokens, last refill)
        self.max_buckets = max_buckets

    def take(self, name: str, rate: float, burst: int, now: float) -> float:
        """Take one token: 0 when allowed, else the seconds until one is available."""
        tokens, last = self.buckets.pop(name, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / rate
        self.buckets[name] = (tokens, now)
        if len(self.buckets) > self.max_buckets:
            self.buckets.popitem(last=False)
        return wait


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in `authorization: Bearer ...` or `x-api-key` (header names in lower case)."""
    authorization = headers.get("authorization", "").strip()
    if authorization[:7].lower() == "bearer " and authorization[7:].strip():
        return authorization[7:].strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


class AccessControl:
    """The configured keys by hash, who an anonymous caller is, and one token bucket per caller."""

    def __init__(self, settings: Settings):
        self.keys: dict[str, ApiKey] = {k.sha256: k for k in settings.all_api_keys()}
        scopes = settings.anonymous_scopes if settings.anonymous_scopes is not None else (() if self.keys else SCOPES)
        self.anonymous = Principal("anonymous", frozenset(scopes), settings.anonymous_rate_limit_per_s,
                                   settings.rate_limit_burst, "anonymous")
        self.default_rate, self.default_burst = settings.rate_limit_per_s, settings.rate_limit_burst
        self.buckets = TokenBuckets()

    def identify(self, presented: str | None, client: str) -> Principal:
        if presented is None or not self.keys:
            # without keys configured, anonymous callers are the one user: any tenant they name
            return replace(self.anonymous, bucket=f"anonymous:{client}", operator=not self.keys)
        key = self.keys.get(hash_key(presented))
        if key is None:
            raise ServiceError(ErrorKind.UNAUTHENTICATED, "the API key is not valid", "invalid_api_key")
        return Principal(key.name, frozenset(key.scopes), key.rate_per_s if key.rate_per_s is not None
                         else self.default_rate, key.burst or self.default_burst, f"key:{key.name}",
                         None if key.operator else key.tenant or DEFAULT_TENANT, key.operator)

    def authorize(self, headers: Mapping[str, str], client: str, scope: ScopeName, operator_only: bool = False
                  ) -> Principal:
        """The caller, when it may use an operation that needs ``scope`` (and an operator key, with
        ``operator_only``) now; else a ServiceError (UNAUTHENTICATED, PERMISSION_DENIED, RATE_LIMITED with
        retry_after)."""
        principal = self.identify(presented_key(headers), client)
        if not principal.allows(scope) or (operator_only and not principal.operator):
            what = f"an operator key with the {scope!r} scope" if operator_only else f"an API key with the {scope!r} scope"
            if principal.name == "anonymous":
                raise ServiceError(ErrorKind.UNAUTHENTICATED, f"this route needs {what}")
            lacks = f"lacks the {scope!r} scope" if not principal.allows(scope) else "is not an operator key"
            raise ServiceError(ErrorKind.PERMISSION_DENIED, f"the key {principal.name!r} {lacks}")
        if principal.rate_per_s > 0:
            wait = self.buckets.take(principal.bucket, principal.rate_per_s, principal.burst, time.monotonic())
            if wait:
                raise ServiceError(ErrorKind.RATE_LIMITED, f"rate limit of {principal.rate_per_s:g} requests/s exceeded",
                                   retry_after=max(1, math.ceil(wait)))
        return principal


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.server.access", description="Make API keys for the gateway.")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("new-key", help="print a new key (once: keep it) and the entry to configure")
    make.add_argument("--name", required=True)
    make.add_argument("--scopes", default="search", help="comma-separated: search, write, admin")
    make.add_argument("--rate-per-s", type=float, default=None, help="this key's rate limit (default: the gateway's)")
    bound = make.add_mutually_exclusive_group()
    bound.add_argument("--tenant", help="the tenant the key acts for (default: the default tenant)")
    bound.add_argument("--operator", action="store_true", help="an operator key: acts for the tenant each request names"
                       " (X-Tenant) and may list, count and delete tenants")
    args = parser.parse_args(argv)
    key = new_key()
    entry = ApiKey(name=args.name, sha256=hash_key(key), scopes=args.scopes.split(","), rate_per_s=args.rate_per_s,
                   tenant=args.tenant, operator=args.operator)
    print(f"key (give it to the client; it is not stored anywhere): {key}", file=sys.stderr)
    print(json.dumps(entry.model_dump(exclude_defaults=True)))


if __name__ == "__main__":
    main()
