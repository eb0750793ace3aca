"""Who may call what, and how often: API keys, scopes, rate limits, for every transport.

- Keys are presented as `Authorization: Bearer <key>` or `X-API-Key: <key>` (HTTP headers, gRPC
  metadata) and stored hashed (SHA-256 hex; keys are 256-bit random tokens, so a fast hash is
  enough). `python -m gateway.server.access new-key --name NAME --scopes search,write` prints a
  fresh key and the entry to configure.
- Scopes: `search` (searches, reads, /embed-image/), `write` (index images), `admin` (delete;
  admin implies every scope). ``SCOPE_OF`` gives each operation's, for every transport.
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
from collections.abc import Mapping
from dataclasses import dataclass, replace

from ..core.errors import ErrorKind, ServiceError
from ..settings import SCOPES, ApiKey, ScopeName, Settings

# The scope each operation of the service needs, by the service method's name, whichever transport
# calls it (HTTP routes: gateway.server.http.access.requires; gRPC: gateway.server.grpc.servicer.OPERATIONS).
SCOPE_OF: dict[str, ScopeName] = {
    "embed_image": "search", "embeddings": "search", "index_images": "write", "search_image": "search",
    "search_text": "search", "similar": "search", "get": "search", "thumbnail": "search", "list_images": "search",
    "delete": "admin",
}


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

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


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
            return replace(self.anonymous, bucket=f"anonymous:{client}")
        key = self.keys.get(hash_key(presented))
        if key is None:
            raise ServiceError(ErrorKind.UNAUTHENTICATED, "the API key is not valid", "invalid_api_key")
        return Principal(key.name, frozenset(key.scopes), key.rate_per_s if key.rate_per_s is not None
                         else self.default_rate, key.burst or self.default_burst, f"key:{key.name}")

    def authorize(self, headers: Mapping[str, str], client: str, scope: ScopeName) -> Principal:
        """The caller, when it may use an operation that needs ``scope`` now; else a ServiceError
        (UNAUTHENTICATED, PERMISSION_DENIED, RATE_LIMITED with retry_after)."""
        principal = self.identify(presented_key(headers), client)
        if not principal.allows(scope):
            if principal.name == "anonymous":
                raise ServiceError(ErrorKind.UNAUTHENTICATED, f"this route needs an API key with the {scope!r} scope")
            raise ServiceError(ErrorKind.PERMISSION_DENIED, f"the key {principal.name!r} lacks the {scope!r} scope")
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
    args = parser.parse_args(argv)
    key = new_key()
    entry = ApiKey(name=args.name, sha256=hash_key(key), scopes=args.scopes.split(","), rate_per_s=args.rate_per_s)
    print(f"key (give it to the client; it is not stored anywhere): {key}", file=sys.stderr)
    print(json.dumps(entry.model_dump(exclude_none=True)))


if __name__ == "__main__":
    main()
