"""Health, readiness and metrics: public routes for probes and Prometheus."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ....core.errors import ErrorKind, ServiceError
from ..dependencies import Service
from ..errors import ErrorBody
from ..schemas import ReadyResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process serves HTTP")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: models can serve and Milvus answers", response_model=ReadyResponse,
            responses={503: {"model": ErrorBody}})
async def readyz(service: Service) -> ReadyResponse:
    checks = await service.readiness()
    failed = "; ".join(f"{name}: {state}" for name, state in checks.items() if state != "ok")
    if failed:
        raise ServiceError(ErrorKind.UNAVAILABLE, failed)
    return ReadyResponse(status="ready", checks=checks, features=service.features())


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics() -> PlainTextResponse:
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)
