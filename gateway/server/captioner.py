"""A caption worker alone: the models (BLIP in-process, or Triton's), the store and the spool the
gateways use (GATEWAY_* settings, as theirs), its counts and /metrics on GATEWAY_PORT. Stops on
SIGTERM/SIGINT; a batch cut short is captioned again once its lease expires (gateway.core.caption_queue)."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import start_http_server

from ..core.caption_queue import CaptionWorker
from ..settings import Settings
from ..wiring import build_inference, build_store, caption_inputs, queue_options
from .logging import configure_logging
from .metrics import worker_metrics

log = logging.getLogger("gateway")


async def run(settings: Settings) -> None:
    inference = build_inference(settings.model_copy(update={"captions": True}))
    store = build_store(settings, inference.info.embedding_dim, inference.info.embedding_model)
    await store.start()
    if settings.port:
        start_http_server(settings.port, settings.host)  # /metrics, once the store is connected
    worker = CaptionWorker(inference, store, caption_inputs(settings), queue_options(settings))
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    with worker_metrics(worker):
        task = asyncio.create_task(worker.run())
        log.info("captioner ready", extra={"fields": {"worker": worker.owner, "milvus": settings.milvus_uri,
                                                      "collection": settings.collection, "metrics_port": settings.port}})
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await inference.close()
    await store.close()
    log.info("captioner stopped", extra={"fields": {"counts": vars(worker.counts)}})


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    asyncio.run(run(settings))
