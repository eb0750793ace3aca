"""Prometheus metrics of the transports (the backends' own are in gateway.backends.metrics)."""

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
REQUEST_SECONDS = Histogram("gateway_request_seconds", "HTTP request latency by route", ["method", "route", "status"],
                            buckets=LATENCY_BUCKETS)
GRPC_SECONDS = Histogram("gateway_grpc_seconds", "gRPC call latency by method and status code", ["method", "code"],
                         buckets=LATENCY_BUCKETS)
ERRORS = Counter("gateway_errors_total", "error responses by kind", ["code"])
