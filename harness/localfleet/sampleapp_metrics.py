"""The sample app's metrics, served at GET /metrics in Prometheus' text format (prometheus_client):

  http_requests_total{method, status}            requests answered, by method and status code
  http_request_duration_seconds{method}          a histogram of the time to answer them
  orders_replication_lag_seconds{peer}           how long the oldest write not yet shipped to the peer has
                                                 waited (0 when nothing waits, and on a replica)

Scrapes of /metrics are not counted. A write read from the log at start has no commit time: its wait
counts from the app's start.
"""

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
Lags = Callable[[], dict[str, float | None]]
"""Per peer, the monotonic commit time of the oldest write it still waits for (0: unknown), or None."""


class _Lag(Collector):
    def __init__(self, oldest: Lags, started: float) -> None:
        self.oldest, self.started = oldest, started

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "orders_replication_lag_seconds",
            "Seconds the oldest write not yet shipped to the peer has waited (0 when none waits)",
            labels=["peer"],
        )
        now = time.monotonic()
        for peer, committed in sorted(self.oldest().items()):
            family.add_metric(
                [peer], 0.0 if committed is None else max(0.0, now - (committed or self.started))
            )
        return [family]


class AppMetrics:
    """The registry of one app instance (its own, so instances in one process do not mix)."""

    def __init__(self, oldest_unshipped: Lags) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests_total", "HTTP requests answered", ["method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Lag(oldest_unshipped, time.monotonic()))

    def observe(self, method: str, status: int, seconds: float) -> None:
        self.requests.labels(method, str(status)).inc()
        self.latency.labels(method).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
