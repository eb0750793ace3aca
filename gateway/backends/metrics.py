"""Prometheus metrics the backends record (served by the server's /metrics with the rest)."""

from prometheus_client import Histogram

INFERENCE_BATCH = Histogram("gateway_inference_batch_size", "rows per inference call (after micro-batching)",
                            ["model"], buckets=(1, 2, 4, 8, 16, 32, 64))
INFERENCE_SECONDS = Histogram("gateway_inference_seconds", "inference call latency", ["model"],
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
STORE_SECONDS = Histogram("gateway_store_seconds", "vector store call latency", ["operation"],
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
