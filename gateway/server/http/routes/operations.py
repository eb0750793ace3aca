"""Health, readiness and metrics: public routes for probes and Prometheus."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ....core.errors import ErrorKind, ServiceError
from ...metrics import observe_caption_queue
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
    features = {**service.features(), "captions": await service.captions_feature()}
    return ReadyResponse(status="ready", checks=checks, features=features)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(service: Service) -> PlainTextResponse:
    try:
        if (stats := await service.caption_queue()) is not None:
            observe_caption_queue(stats)
    except ServiceError:
        pass  # the store is down: the queue's gauges keep their last values, everything else is current
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)
