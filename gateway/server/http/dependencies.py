"""Typed dependencies of the routes: what a route needs, resolved once per request, and the check every
API route runs first: fields it does not take are refused, never ignored."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi import params as fastapi_params
from pydantic import BaseModel

from ...core.errors import ErrorKind, ServiceError
from ...core.service import ImageSearchService
from .access import tenant


def get_service(request: Request) -> ImageSearchService:
    return request.app.state.service


Service = Annotated[ImageSearchService, Depends(get_service)]
Tenant = Annotated[str, Depends(tenant)]  # the tenant the request acts for (gateway.server.access)


def _accepted(route) -> tuple[set[str], set[str], set[str] | None]:
    """(query parameters, form fields, JSON body fields or None) that a route declares."""
    dependant = route.dependant
    query = {p.alias for p in dependant.query_params}
    form = {p.alias for p in dependant.body_params if isinstance(p.field_info, fastapi_params.Form)}
    body = None
    for param in dependant.body_params:
        model = param.field_info.annotation
        if isinstance(param.field_info, fastapi_params.Body) and isinstance(model, type) and issubclass(model, BaseModel):
            body = {field.alias or name for name, field in model.model_fields.items()}
    return query, form, body


def _refuse(kind: str, unknown: set[str], accepted: set[str], request: Request) -> ServiceError:
    takes = ", ".join(sorted(accepted)) or "none"
    return ServiceError(ErrorKind.INVALID_REQUEST, f"unknown {kind} {', '.join(repr(u) for u in sorted(unknown))}:"
                        f" {request.method} {request.scope['route'].path} takes {takes}")


async def known_fields_only(request: Request) -> None:
    """422 invalid_request naming the accepted fields when a request has a query parameter or form field
    its route does not declare (JSON body fields: unknown_body_fields) (a misspelt ``filters=`` must not give unfiltered
    results that look filtered)."""
    query, form, body = _accepted(request.scope["route"])
    if unknown := set(request.query_params) - query:
        raise _refuse("query parameter" + "s" * (len(unknown) > 1), unknown, query, request)
    is_form = request.headers.get("content-type", "").startswith(("multipart/form-data", "application/x-www-form-urlencoded"))
    if form and is_form and (unknown := set((await request.form()).keys()) - form):
        raise _refuse("form field" + "s" * (len(unknown) > 1), unknown, form, request)
    # JSON bodies: their models forbid extra fields, and the validation error becomes unknown_body_fields()


def unknown_body_fields(request: Request, unknown: set[str]) -> ServiceError:
    """The refusal of JSON body fields the route's body model does not declare (from its validation
    error, so the body is parsed once)."""
    _, _, body = _accepted(request.scope["route"])
    return _refuse("body field" + "s" * (len(unknown) > 1), unknown, body or set(), request)


KnownFieldsOnly = Depends(known_fields_only)
