"""Who may call what, and how often: API keys, scopes, rate limits.

A pure ASGI middleware, so that every refusal happens before the request body is read: an
anonymous 20 MB upload to a write route costs a header check, not a multipart parse.

- Keys are presented as `Authorization: Bearer <key>` or `X-API-Key: <key>` and stored hashed
  (SHA-256 hex; keys are 256-bit random tokens, so a fast hash is enough). `python -m gateway.access
  new-key --name NAME --scopes search,write` prints a fresh key and the entry to configure.
- Scopes: `search` (searches, reads, /embed-image/), `write` (index images), `admin` (delete;
  admin implies every scope). Each route declares its scope with `requires()`.
- 401 when no usable key was presented (none, or an unknown one); 403 when the key is valid but
  lacks the scope. Anonymous callers get `anonymous_scopes` (every scope when no key is
  configured, none otherwise, unless set).
- Token buckets per key (anonymous callers: per client address): 429 with Retry-After.

Body sizes are limited by FastAPI's own `max_body_size` (413 from Content-Length, or while a
chunked body streams in), set from `max_request_bytes` in gateway.app.

The key itself is never logged or echoed; logs name the key (`principal`).
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
from dataclasses import dataclass, replace

from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from .settings import SCOPES, ApiKey, ScopeName, Settings

REQUIRED_SCOPE = "x-required-scope"
SECURITY_SCHEMES = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerKey": {"type": "http", "scheme": "bearer", "description": "the API key as a bearer token"},
}


def requires(scope: ScopeName) -> dict:
    """`openapi_extra` of a route: the scope it needs, and the key schemes in the OpenAPI document."""
    return {REQUIRED_SCOPE: scope, "security": [{"ApiKeyHeader": []}, {"BearerKey": []}]}


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


class AccessError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class KeyRing:
    """The configured keys by hash, and who an anonymous caller is."""

    def __init__(self, settings: Settings):
        self.keys: dict[str, ApiKey] = {k.sha256: k for k in settings.all_api_keys()}
        scopes = settings.anonymous_scopes if settings.anonymous_scopes is not None else (() if self.keys else SCOPES)
        self.anonymous = Principal("anonymous", frozenset(scopes), settings.anonymous_rate_limit_per_s,
                                   settings.rate_limit_burst, "anonymous")
        self.settings = settings

    def identify(self, headers: dict[bytes, bytes], client: str) -> Principal:
        presented = presented_key(headers)
        settings = self.settings
        if presented is None:
            return replace(self.anonymous, bucket=f"anonymous:{client}")
        key = self.keys.get(hash_key(presented))
        if key is None:
            raise AccessError(401, "invalid_api_key", "the API key is not valid", {"WWW-Authenticate": "Bearer"})
        return Principal(key.name, frozenset(key.scopes), key.rate_per_s if key.rate_per_s is not None
                         else settings.rate_limit_per_s, key.burst or settings.rate_limit_burst, f"key:{key.name}")


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    if authorization[:7].lower() == "bearer " and authorization[7:].strip():
        return authorization[7:].strip()
    key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return key or None


def route_scope(routes, scope: Scope) -> str | None:
    """The scope the matching route requires (None: public or no such route)."""
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return (getattr(route, "openapi_extra", None) or {}).get(REQUIRED_SCOPE)
    return None


class AccessControl:
    """ASGI middleware: key, scope and rate limit for the routes that declare a scope."""

    def __init__(self, app: ASGIApp, keyring: KeyRing, routes: list, on_refusal):
        self.app, self.keyring, self.routes, self.on_refusal = app, keyring, routes, on_refusal
        self.buckets = TokenBuckets()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            self.check(scope)
        except AccessError as exc:
            return await self.on_refusal(exc)(scope, receive, send)
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> None:
        headers = dict(scope["headers"])
        required = route_scope(self.routes, scope)
        if required is None or scope["method"] == "OPTIONS":
            return
        principal = self.keyring.identify(headers, (scope.get("client") or ("unknown",))[0])
        scope.setdefault("state", {})["principal"] = principal.name
        if not principal.allows(required):
            if principal.name == "anonymous":
                raise AccessError(401, "missing_api_key", f"this route needs an API key with the {required!r} scope",
                                  {"WWW-Authenticate": "Bearer"})
            raise AccessError(403, "forbidden", f"the key {principal.name!r} lacks the {required!r} scope")
        if principal.rate_per_s > 0:
            wait = self.buckets.take(principal.bucket, principal.rate_per_s, principal.burst, time.monotonic())
            if wait:
                raise AccessError(429, "rate_limited", f"rate limit of {principal.rate_per_s:g} requests/s exceeded",
                                  {"Retry-After": str(max(1, math.ceil(wait)))})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.access", description="Make API keys for the gateway.")
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
