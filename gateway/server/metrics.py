"""Prometheus metrics of the transports and the caption queue (the backends' own are in
gateway.backends.metrics)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ..core.caption_queue import CaptionWorker, WorkerCounts
from ..core.protocols import CaptionQueueStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
REQUEST_SECONDS = Histogram("gateway_request_seconds", "HTTP request latency by route", ["method", "route", "status"],
                            buckets=LATENCY_BUCKETS)
GRPC_SECONDS = Histogram("gateway_grpc_seconds", "gRPC call latency by method and status code", ["method", "code"],
                         buckets=LATENCY_BUCKETS)
ERRORS = Counter("gateway_errors_total", "error responses by kind", ["code"])
CAPTION_RECORDS = Gauge("gateway_caption_queue_records", "records by caption state, counted on the store at each scrape",
                        ["state"])
CAPTION_OLDEST = Gauge("gateway_caption_oldest_pending_seconds", "age of the oldest pending caption (0: none pending)")


def observe_caption_queue(stats: CaptionQueueStats) -> None:
    CAPTION_RECORDS.labels("pending").set(stats.pending)
    CAPTION_RECORDS.labels("failed").set(stats.failed)
    CAPTION_OLDEST.set(0 if stats.oldest_pending_at is None else max(0, time.time() - stats.oldest_pending_at))


class CaptionOutcomes(Collector):
    """What this process's caption workers did: gateway_captions_total{outcome}, one outcome per field of
    gateway.core.caption_queue.WorkerCounts (captioned, failed, retried, dropped_claims, undone_deletes),
    summed over the workers running (one per serving gateway; several in a test process)."""

    def __init__(self) -> None:
        self.workers: set[CaptionWorker] = set()

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("gateway_captions", "caption outcomes of this process's workers", labels=["outcome"])
        for field in fields(WorkerCounts):
            family.add_metric([field.name], sum(getattr(w.counts, field.name) for w in list(self.workers)))
        yield family


CAPTIONS = CaptionOutcomes()
REGISTRY.register(CAPTIONS)


@contextmanager
def worker_metrics(worker: CaptionWorker | None) -> Iterator[None]:
    """The worker's counts exported while it runs."""
    if worker is not None:
        CAPTIONS.workers.add(worker)
    try:
        yield
    finally:
        if worker is not None:
            CAPTIONS.workers.discard(worker)
