"""Prometheus metrics of one server process (own registry, so several apps can coexist in tests).

Each uvicorn worker keeps its own counters: scrape each worker (or each replica) and sum.
``/metrics`` needs an admin key for every adapter (the labels name every adapter).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Request counts / latency by route and status, batch sizes, adapters and memory."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds ...
        self.requests = Counter("petrec_requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("petrec_request_seconds", "HTTP request latency by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("petrec_batch_rows", "examples per forward micro-batch, by adapter",
                                    ["adapter"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("petrec_batch_requests", "requests merged into one micro-batch",
                                        ["adapter"], buckets=BATCH_BUCKETS, registry=r)
        self.adapters_loaded = Gauge("petrec_adapters_loaded", "adapters currently served", registry=r)
        self.adapter_bytes = Gauge("petrec_adapter_own_bytes",
                                   "bytes of tensors an adapter holds beyond the shared base",
                                   ["adapter", "method", "task"], registry=r)
        self.base_bytes = Gauge("petrec_base_model_bytes", "bytes of the shared frozen base", registry=r)
        self.load_failures = Counter("petrec_adapter_load_failures_total",
                                     "failed adapter loads (at start or via POST /v1/adapters/{name}), by adapter",
                                     ["adapter"], registry=r)
        self.adapters_unavailable = Gauge("petrec_adapters_unavailable",
                                          "adapters whose last load failed and that are not served", registry=r)
        self.deadline_exceeded = Counter("petrec_request_deadline_exceeded_total",
                                         "inference requests answered 504 (request_timeout_s), by adapter",
                                         ["adapter"], registry=r)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, adapter: str, rows: int, jobs: int) -> None:
        """Record one micro-batch."""
        self.batch_rows.labels(adapter).observe(rows)
        self.batch_requests.labels(adapter).observe(jobs)

    def load_failed(self, adapter: str, reason: str) -> None:
        """Count one failed adapter load (``reason`` is logged elsewhere, not a label)."""
        del reason
        self.load_failures.labels(adapter).inc()

    def set_models(self, base_bytes: int, adapters: dict[str, Any], unavailable: int = 0) -> None:
        """Refresh the model gauges from the registry's current adapters."""
        self.base_bytes.set(base_bytes)
        self.adapters_loaded.set(len(adapters))
        self.adapters_unavailable.set(unavailable)
        self.adapter_bytes.clear()
        for name, a in adapters.items():
            self.adapter_bytes.labels(name, a.manifest.method, a.task).set(a.own_bytes)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
