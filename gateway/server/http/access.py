"""Access control as HTTP sees it: each route declares its scope (``requires``), a pure ASGI
middleware checks key, scope and rate limit from the headers, before the body is read (an anonymous
20 MB upload to a write route costs a header check, not a multipart parse), and the OpenAPI document
lists the key schemes per route.

Body sizes are limited by FastAPI's own ``max_body_size`` (413 from Content-Length, or while a
chunked body streams in), set from ``max_request_bytes`` in the app factory."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from ...core.errors import ServiceError
from ...settings import ScopeName
from ..access import OPERATOR_ONLY, SCOPE_OF, AccessControl, acting_tenant, calling

REQUIRED_SCOPE = "x-required-scope"
OPERATOR = "x-operator-only"
SECURITY_SCHEMES = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerKey": {"type": "http", "scheme": "bearer", "description": "the API key as a bearer token"},
}


def requires(operation: str) -> dict:
    """`openapi_extra` of a route that calls a service operation: the scope it needs (SCOPE_OF), whether
    only operator keys may call it (OPERATOR_ONLY), and the key schemes in the OpenAPI document."""
    return {REQUIRED_SCOPE: SCOPE_OF[operation], OPERATOR: operation in OPERATOR_ONLY,
            "security": [{"ApiKeyHeader": []}, {"BearerKey": []}]}


def route_scope(routes, scope: Scope) -> tuple[ScopeName, bool] | None:
    """The scope the matching route requires and whether it is for operators (None: public or no such route)."""
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            extra = getattr(route, "openapi_extra", None) or {}
            return (extra[REQUIRED_SCOPE], extra[OPERATOR]) if REQUIRED_SCOPE in extra else None
    return None


async def tenant() -> str:
    """The tenant a route's operation acts for (gateway.server.access: the key's, or the one an operator
    names in X-Tenant)."""
    return acting_tenant()


class AccessMiddleware:
    """ASGI middleware: key, scope and rate limit for the routes that declare a scope."""

    def __init__(self, app: ASGIApp, access: AccessControl, routes: list,
                 on_refusal: Callable[[ServiceError], Response]):
        self.app, self.access, self.routes, self.on_refusal = app, access, routes, on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] != "OPTIONS":
            required = route_scope(self.routes, scope)
            if required is not None:
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                try:
                    principal = self.access.authorize(headers, (scope.get("client") or ("unknown",))[0], *required)
                except ServiceError as exc:
                    scope.setdefault("state", {})["principal"] = "refused"
                    return await self.on_refusal(exc)(scope, receive, send)
                scope.setdefault("state", {})["principal"] = principal.name
                with calling(principal, headers):
                    return await self.app(scope, receive, send)
        await self.app(scope, receive, send)


def with_security_schemes(app: FastAPI, access: AccessControl) -> dict:
    """The OpenAPI document with the API key schemes; a key is optional where anonymous callers may go."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            anonymous_may = access.anonymous.allows(operation.get(REQUIRED_SCOPE, "")) and (
                not operation.get(OPERATOR) or not access.keys)
            if REQUIRED_SCOPE in operation and anonymous_may:
                operation["security"].append({})
        app.openapi_schema = schema
    return app.openapi_schema
