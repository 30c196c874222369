"""Prometheus metrics of the service (text exposition at ``GET /metrics``).

``unlearnrec_queue_depth`` (queued requests), ``unlearnrec_requests{status=...}`` (requests by
status), ``unlearnrec_model_version`` (the version being served), the histograms
``unlearnrec_apply_latency_seconds`` (accepted -> applied, per request) and
``unlearnrec_forget_seconds`` (the forgetting step of a version), ``unlearnrec_version_seconds``
(taking a batch to serving its version), and
``unlearnrec_recommendation_seconds`` (time to answer a recommendation request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from unlearnrec.serve.service import Service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class _ByStatus:
    """Requests per status, read from the database at scrape time."""

    def __init__(self, service: Service):
        self.service = service

    def collect(self):
        g = GaugeMetricFamily("unlearnrec_requests", "Deletion requests by status", labels=["status"])
        for status, n in self.service.store.counts().items():
            g.add_metric([status], n)
        yield g


class ServiceMetrics:
    """One registry per service (several services in one process do not collide)."""

    def __init__(self, service: Service):
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge("unlearnrec_queue_depth", "Queued deletion requests", registry=self.registry)
        self.queue_depth.set_function(lambda: service.store.counts()["queued"])
        self.version = Gauge("unlearnrec_model_version", "Model version being served", registry=self.registry)
        self.version.set_function(
            lambda: service.worker._served.version if service.worker._served is not None else -1
        )
        self.apply_latency = Histogram(
            "unlearnrec_apply_latency_seconds",
            "Seconds from a request's acceptance to the commit of the version that applies it",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.forget_seconds = Histogram(
            "unlearnrec_forget_seconds",
            "Seconds of the forgetting step of one version",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=self.registry,
        )
        self.version_seconds = Histogram(
            "unlearnrec_version_seconds",
            "Seconds from taking a batch to serving its version (forget, write, commit, swap)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.rec_seconds = Histogram(
            "unlearnrec_recommendation_seconds",
            "Seconds to answer a recommendation request",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.registry.register(_ByStatus(service))

    def observe_applied(self, latencies: list[float], forget_seconds: float, step_seconds: float) -> None:
        for s in latencies:
            self.apply_latency.observe(max(s, 0.0))
        self.forget_seconds.observe(forget_seconds)
        self.version_seconds.observe(step_seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
