"""Prometheus metrics of the transports (the backends' own are in gateway.backends.metrics)."""

from prometheus_client import Counter, Histogram

REQUEST_SECONDS = Histogram("gateway_request_seconds", "HTTP request latency by route", ["method", "route", "status"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
ERRORS = Counter("gateway_errors_total", "error responses by kind", ["code"])
