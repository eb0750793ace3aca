"""Typed dependencies of the routes: what a route needs, resolved once per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ...core.service import ImageSearchService


def get_service(request: Request) -> ImageSearchService:
    return request.app.state.service


Service = Annotated[ImageSearchService, Depends(get_service)]
