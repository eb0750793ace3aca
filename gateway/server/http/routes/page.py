"""The search page at /: a small dependency-free page over the same API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()
PAGE = Path(__file__).parents[1] / "static" / "index.html"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def search_page() -> HTMLResponse:
    """Text or image queries, results with thumbnails, captions and scores; uploads."""
    return HTMLResponse(PAGE.read_text())
